"""Alert rule kinds, their validation, hysteresis and cooldown, and the value each is judged on.

Every value here is a pure function of bars (numpy arrays of one leg at the rule's bar
size, see :class:`LegBars`) or of the daemon's health rows; nothing reads the database.
The pair values are the page's: the same view (``rule_view``: the rule's own timeframe,
window, method and log prices over ``max(3 x window, 300)`` bars), the same alignment
(each leg carried at most ``MAX_STALE_BARS`` bars, a stale leg gives no value), the same
``bars_needed`` and ``pairs_monitor.quant`` functions. The OLS z-score, the correlation
and the volume ratio are computed on the newest bar only, in numpy, because the daemon
judges every rule on every new bar (the page's full ``pair_frame`` costs about 3 ms a
pair, too much for 100 rules at 1-second bars); tests/test_alerts_rules.py checks them
against the page's own pipeline to 1e-9. The other hedge methods call
``quant.pair_frame`` itself.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pairs_monitor import quant
from pairs_monitor.page.pipeline import bars_needed
from pairs_monitor.page.settings import (
    LIVE_MIN_TAIL_BARS,
    LIVE_TAIL_WINDOWS,
    MAX_STALE_BARS,
    MIN_TEST_OBS,
    TIMEFRAME_SECONDS,
    View,
)
from pairs_monitor.quant import PairMethod
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.postgres import PgConnection

KINDS: dict[str, str] = {
    "zscore_above": "z-score above",
    "zscore_below": "z-score below",
    "price_above": "price above",
    "price_below": "price below",
    "volume_spike": "volume spike (bar volume / its rolling mean) above",
    "feed_silent": "feed silent (seconds without a trade while its market trades) for",
    "gap_abandoned": "gaps abandoned (trade ids REST could not recover), at least",
    "writer_failing": "writer failing (seconds its commits keep failing) for",
    "coint_lost": "cointegration lost (Engle-Granger p-value) above",
    "corr_breakdown": "correlation of returns below",
}
# Fire when the value rises to the threshold (the others when it falls to it).
RISING = frozenset(
    {
        "zscore_above",
        "price_above",
        "volume_spike",
        "feed_silent",
        "gap_abandoned",
        "writer_failing",
        "coint_lost",
    }
)
# Each reading counts new occurrences (gaps abandoned since the last firing): no re-arm.
EVENT_KINDS = frozenset({"gap_abandoned"})
PAIR_KINDS = frozenset({"zscore_above", "zscore_below", "coint_lost", "corr_breakdown"})
VIEW_KINDS = PAIR_KINDS | {"volume_spike"}
HEALTH_KINDS = frozenset({"feed_silent", "gap_abandoned", "writer_failing"})
HEDGE_METHODS: tuple[PairMethod, ...] = ("ols", "huber", "theil-sen", "rolling", "kalman")
ANY = "*"  # every symbol of a venue (gap_abandoned), or no venue at all (writer_failing)

COINT_EVERY_S = 60  # cointegration is tested at most once a minute per rule
MIN_CORR_WINDOW = 3  # quant.rolling_corr's minimum


class RuleError(ValueError):
    """A rule that cannot be judged as given (the message says what to change)."""


class DuplicateRule(RuleError):
    """A new rule the same as a stored one: kind, legs, threshold and view."""

    def __init__(self, rule_id: int) -> None:
        super().__init__(f"rule {rule_id} is the same rule")
        self.rule_id = rule_id


@dataclass(frozen=True)
class Rule:
    """One row of ``alert_rules`` (its configuration; the evaluator keeps the state)."""

    rule_id: int
    kind: str
    venue: str
    symbol: str
    threshold: float
    rearm: float
    symbol_x: str | None = None
    venue_x: str | None = None
    enabled: bool = True
    armed: bool = True
    created_ms: int = 0
    timeframe: str | None = None
    window: int | None = None
    method: str | None = None
    log_prices: bool | None = None
    cooldown_s: int = 0
    last_fired_ms: int | None = None
    cursor_id: int | None = None

    @property
    def leg_y(self) -> tuple[str, str]:
        return self.venue, self.symbol

    @property
    def leg_x(self) -> tuple[str, str]:
        return self.venue_x or self.venue, self.symbol_x or ""

    def config(self) -> tuple[Any, ...]:
        """What decides the rule's value and firing: a change re-reads its state."""
        return (
            self.kind,
            self.venue,
            self.symbol,
            self.symbol_x,
            self.venue_x,
            self.threshold,
            self.rearm,
            self.timeframe,
            self.window,
            self.method,
            self.log_prices,
            self.cooldown_s,
        )

    def target(self) -> str:
        """The pair, symbol or feed watched, e.g. ``ETHUSDT/BTCUSDT on binance-spot``."""
        if self.kind == "writer_failing":
            return "the daemon's writer"
        if self.kind in PAIR_KINDS:
            x = self.symbol_x if not self.venue_x else f"{self.symbol_x} ({self.venue_x})"
            return f"{self.symbol}/{x} on {self.venue}"
        if self.symbol == ANY:
            return f"every symbol on {self.venue}"
        return f"{self.symbol} on {self.venue}"

    def describe(self) -> str:
        """The rule in words: ``rule 3, ETHUSDT/BTCUSDT on sim: z-score above 2``."""
        return f"rule {self.rule_id}, {self.target()}: {KINDS[self.kind]} {self.threshold:g}"

    def judged_in(self) -> str:
        """The settings the value is computed with, in words."""
        if self.kind.startswith("price"):
            return "last trade"
        if self.kind in HEALTH_KINDS:
            return "the daemon's feed_status, gaps and writer_status"
        text = f"{self.timeframe} bars, window {self.window}"
        if self.kind.startswith("zscore"):
            text += f", {self.method}, {'log' if self.log_prices else 'raw'} prices"
        elif self.kind == "coint_lost":
            text += f", {'log' if self.log_prices else 'raw'} prices, tested once a minute"
        return text


RULE_COLUMNS = (
    "rule_id, kind, venue, symbol, threshold, rearm, symbol_x, venue_x, enabled, armed, "
    "created_ms, timeframe, window_bars, hedge_method, log_prices, cooldown_s, "
    "last_fired_ms, cursor_id"
)


def rule_from_row(row: tuple | sqlite3.Row) -> Rule:
    """A :class:`Rule` from a row of ``SELECT {RULE_COLUMNS} FROM alert_rules``."""
    return Rule(
        rule_id=int(row[0]),
        kind=str(row[1]),
        venue=str(row[2]),
        symbol=str(row[3]),
        threshold=float(row[4]),
        rearm=float(row[5]),
        symbol_x=row[6],
        venue_x=row[7],
        enabled=bool(row[8]),
        armed=bool(row[9]),
        created_ms=int(row[10] or 0),
        timeframe=row[11],
        window=None if row[12] is None else int(row[12]),
        method=row[13],
        log_prices=None if row[14] is None else bool(row[14]),
        cooldown_s=int(row[15] or 0),
        last_fired_ms=row[16],
        cursor_id=row[17],
    )


# IS NOT DISTINCT FROM: equal, or both NULL (SQLite's ``IS``; PostgreSQL's ``IS`` takes
# no parameter).
_SAME_RULE = (
    "SELECT rule_id FROM alert_rules WHERE kind = ? AND venue = ? AND symbol = ?"
    " AND symbol_x IS NOT DISTINCT FROM ? AND venue_x IS NOT DISTINCT FROM ?"
    " AND threshold = ? AND timeframe IS NOT DISTINCT FROM ?"
    " AND window_bars IS NOT DISTINCT FROM ? AND hedge_method IS NOT DISTINCT FROM ?"
    " AND log_prices IS NOT DISTINCT FROM ?"
)
_INSERT_RULE = (
    "INSERT INTO alert_rules (kind, venue, symbol, symbol_x, venue_x, threshold, timeframe,"
    " window_bars, hedge_method, log_prices, rearm, cooldown_s, created_ms, enabled, armed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1) RETURNING rule_id"
)


@contextmanager
def rules_write_lock(conn: Connection) -> Iterator[None]:
    """One write transaction that no other writer of ``alert_rules`` runs beside: SQLite's
    ``BEGIN IMMEDIATE``, or on PostgreSQL a transaction holding ``alert_rules`` in SHARE
    ROW EXCLUSIVE mode (which the page's role may take: it may update the table).

    :param conn: in autocommit mode (``isolation_level=None``; PostgreSQL's always is).
    """
    if isinstance(conn, PgConnection):
        with conn.raw.transaction():
            conn.execute("LOCK TABLE alert_rules IN SHARE ROW EXCLUSIVE MODE")
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def store_rule(conn: Connection, rule: Rule, created_ms: int) -> int:
    """Store a new enabled, armed rule after :func:`validate`; return its id. Every client
    (the page, ``ingest.py alerts add``) adds rules through this.

    The check for a duplicate and the insert are one write transaction, so two clients
    (or a double click) adding the same rule at once store it once.

    :param conn: a SQLite connection in autocommit mode (``isolation_level=None``), or a
        PostgreSQL one (:class:`~pairs_monitor.store.postgres.PgConnection`).
    :raises RuleError: for a rule that cannot be judged.
    :raises DuplicateRule: for a rule the same as a stored one (it names that rule's id).
    """
    validate(rule)
    same = (
        rule.kind,
        rule.venue,
        rule.symbol,
        rule.symbol_x,
        rule.venue_x,
        rule.threshold,
        rule.timeframe,
        rule.window,
        rule.method,
        None if rule.log_prices is None else int(rule.log_prices),
    )
    with rules_write_lock(conn):
        duplicate = conn.execute(_SAME_RULE, same).fetchone()
        if duplicate:
            raise DuplicateRule(int(duplicate[0]))
        # fetchall: the statement is finished before the COMMIT
        stored = conn.execute(
            _INSERT_RULE, (*same, rule.rearm, rule.cooldown_s, created_ms)
        ).fetchall()
    if not stored:
        raise RuleError("the rule was not stored")
    return int(stored[0][0])


def validate(rule: Rule) -> None:
    """Raise :class:`RuleError` unless the rule can be judged; the message says what to fix.

    Rules are written by any client, plain SQL included, so the evaluator checks each one
    it reads and notes the problem instead of judging a rule that cannot mean anything.
    """
    kind = rule.kind
    if kind not in KINDS:
        raise RuleError(f"unknown rule kind {kind!r}; choose one of {', '.join(KINDS)}")
    for name, value in (("threshold", rule.threshold), ("re-arm level", rule.rearm)):
        if not math.isfinite(value):
            raise RuleError(f"the {name} must be a finite number, not {value!r}")
    if rule.cooldown_s < 0:
        raise RuleError(f"the cooldown must be 0 or more seconds, not {rule.cooldown_s}")
    if kind == "writer_failing" and rule.threshold <= 0:
        raise RuleError("a writer-failing threshold is a number of seconds above 0")
    if kind not in EVENT_KINDS:
        if kind in RISING and not rule.rearm < rule.threshold:
            raise RuleError(
                f"re-arm level {rule.rearm:g} must be below the threshold {rule.threshold:g} "
                "for a rule that fires on a rise, or it would fire again at once"
            )
        if kind not in RISING and not rule.rearm > rule.threshold:
            raise RuleError(
                f"re-arm level {rule.rearm:g} must be above the threshold {rule.threshold:g} "
                "for a rule that fires on a fall, or it would fire again at once"
            )
    if kind == "writer_failing":
        return
    if not rule.venue or rule.venue == ANY:
        raise RuleError(f"a {kind} rule needs a venue")
    if rule.symbol == ANY and kind != "gap_abandoned":
        raise RuleError(f"only gap_abandoned rules watch every symbol ('*'); {kind} needs one")
    if kind in PAIR_KINDS and (not rule.symbol_x or rule.leg_x == rule.leg_y):
        raise RuleError(f"a {kind} rule needs two different legs (symbol and symbol_x)")
    if kind.startswith("price") and rule.threshold <= 0:
        raise RuleError("a price level must be positive")
    if kind in ("volume_spike", "feed_silent", "gap_abandoned") and rule.threshold <= 0:
        raise RuleError(
            {
                "volume_spike": "a volume-spike threshold is a ratio to the recent mean "
                "volume: use a number above 1 (e.g. 3 for three times the average bar)",
                "feed_silent": "a silence threshold is a number of seconds above 0",
                "gap_abandoned": "a gap threshold is a number of gaps, 1 or more",
            }[kind]
        )
    if kind == "coint_lost" and not 0 < rule.threshold <= 1:
        raise RuleError("a cointegration threshold is a p-value between 0 and 1 (e.g. 0.05)")
    if kind == "corr_breakdown" and not -1 <= rule.threshold <= 1:
        raise RuleError("a correlation threshold lies between -1 and 1 (e.g. 0.5)")
    if kind in VIEW_KINDS:
        _validate_view(rule)


def _validate_view(rule: Rule) -> None:
    if rule.timeframe not in TIMEFRAME_SECONDS:
        raise RuleError(
            f"a {rule.kind} rule needs a timeframe, one of {', '.join(TIMEFRAME_SECONDS)} "
            f"(got {rule.timeframe!r})"
        )
    least = {"coint_lost": MIN_TEST_OBS, "corr_breakdown": MIN_CORR_WINDOW}.get(rule.kind, 2)
    if rule.window is None or rule.window < least:
        raise RuleError(f"a {rule.kind} rule needs a window of at least {least} bars")
    if rule.kind.startswith("zscore") and rule.method not in HEDGE_METHODS:
        raise RuleError(
            f"a z-score rule needs a hedge method, one of {', '.join(HEDGE_METHODS)} "
            f"(got {rule.method!r})"
        )


# -- hysteresis and cooldown ---------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one reading does to a rule: fire, and its armed state after."""

    fires: bool
    armed: bool
    held: bool = False  # crossed while armed, but within the cooldown: fires after it


def step(kind: str, armed: bool, value: float, threshold: float, rearm: float) -> Decision:
    """One hysteresis step, as the page has always judged rules.

    Rising kinds fire at ``value >= threshold`` and re-arm at ``value <= rearm``; falling
    kinds mirror that. A NaN value changes nothing. Event kinds fire on every reading at
    the threshold and never disarm (each reading counts only occurrences not yet fired).
    """
    if value != value:
        return Decision(False, armed)
    rising = kind in RISING
    crossed = value >= threshold if rising else value <= threshold
    if kind in EVENT_KINDS:
        return Decision(crossed, True)
    back = value <= rearm if rising else value >= rearm
    if armed and crossed:
        return Decision(True, False)
    if not armed and back:
        return Decision(False, True)
    return Decision(False, armed)


def decide(
    rule: Rule, armed: bool, value: float, now_ms: int, last_fired_ms: int | None
) -> Decision:
    """:func:`step`, then the rule's cooldown: no firing within ``cooldown_s`` of the last.

    A rule that crosses during its cooldown stays armed and fires on the first reading
    after the cooldown that is still past the threshold: at most one firing per cooldown,
    and a condition that lasts is not lost.
    """
    decision = step(rule.kind, armed, value, rule.threshold, rule.rearm)
    if not decision.fires or rule.cooldown_s <= 0 or last_fired_ms is None:
        return decision
    if now_ms - last_fired_ms >= rule.cooldown_s * 1000:
        return decision
    return Decision(False, armed, held=True)


# -- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A rule's value now, the bar (or second) it is of, and why there is none (NaN)."""

    value: float
    bar_time_s: int | None = None
    note: str | None = None
    detail: str = ""  # what the message adds (the gap ranges, the silent seconds' market)
    cursor_id: int | None = None  # gap_abandoned: the highest gap this reading counts

    @classmethod
    def none(cls, note: str) -> Reading:
        return cls(math.nan, None, note)


@dataclass
class LegBars:
    """One leg's bars at a rule's bar size, oldest first: only bars that traded.

    ``time_s`` is each bar's start (a multiple of the bar size, as ``quant.resample_bars``
    aligns them on the epoch); ``close`` the close of its last traded second; ``volume``
    the summed base volume.
    """

    time_s: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    close: np.ndarray = field(default_factory=lambda: np.empty(0))
    volume: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __len__(self) -> int:
        return len(self.time_s)

    def since(self, start_s: int) -> LegBars:
        """The bars starting at or after ``start_s``."""
        first = int(np.searchsorted(self.time_s, start_s, side="left"))
        return LegBars(self.time_s[first:], self.close[first:], self.volume[first:])


def rule_view(rule: Rule) -> View:
    """The page's view of a rule: its stored settings over the
    live tail, ``max(LIVE_TAIL_WINDOWS x window, LIVE_MIN_TAIL_BARS)`` bars, auto Kalman
    noise, no liquidity floor."""
    timeframe = rule.timeframe or "1s"
    window = int(rule.window or 2)
    bars = max(LIVE_TAIL_WINDOWS * window, LIVE_MIN_TAIL_BARS)
    method: PairMethod = rule.method if rule.method in HEDGE_METHODS else "ols"
    return View(
        venue=rule.venue,
        y=rule.symbol,
        x=rule.symbol_x or rule.symbol,
        venue_x=rule.venue_x,
        timeframe=timeframe,
        lookback_s=bars * TIMEFRAME_SECONDS[timeframe],
        window=window,
        method=method,
        log_prices=bool(rule.log_prices),
    )


def coint_lookback_s(rule: Rule) -> int:
    """How far back a cointegration rule reads: its window, plus the staleness allowance."""
    seconds = TIMEFRAME_SECONDS[rule.timeframe or "1s"]
    return (int(rule.window or 0) + MAX_STALE_BARS) * seconds


def start_of(end_s: int, lookback_s: int, bar_seconds: int) -> int:
    """The first second a view ending at ``end_s`` reads (``pipeline.leg_bars``)."""
    return (end_s - lookback_s) // bar_seconds * bar_seconds


def aligned(y: LegBars, x: LegBars, bar_seconds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``quant.align_closes`` of two legs with ``max_staleness`` of ``MAX_STALE_BARS`` bars:
    the union of their bar times, each leg carried while its last close is at most that
    old, rows where either has none dropped. :return: times, closes of y, closes of x."""
    union = np.union1d(y.time_s, x.time_s)
    limit = MAX_STALE_BARS * bar_seconds
    keep = np.ones(len(union), dtype=bool)
    carried = []
    for leg in (y, x):
        idx = np.searchsorted(leg.time_s, union, side="right") - 1
        have = idx >= 0
        idx = np.maximum(idx, 0)
        keep &= have & ((union - leg.time_s[idx]) <= limit)
        carried.append(leg.close[idx])
    return union[keep], carried[0][keep], carried[1][keep]


def _stale_note(y: LegBars, x: LegBars, names: tuple[str, str], bar_seconds: int) -> str | None:
    """The page's stale-leg test: a leg whose last traded bar is more than
    ``MAX_STALE_BARS`` bars behind the newest bar of the pair has no value now."""
    newest = max(int(y.time_s[-1]), int(x.time_s[-1]))
    for leg, name in zip((y, x), names, strict=True):
        age = newest - int(leg.time_s[-1])
        if age > MAX_STALE_BARS * bar_seconds:
            return f"stale leg: {name} has not traded for {age} s behind the newest bar"
    return None


def _pair_closes(
    rule: Rule, y: LegBars, x: LegBars, view: View
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | Reading:
    """The aligned closes a pair rule is judged on, or the reading that says why none."""
    names = (rule.symbol, rule.symbol_x or "")
    empty = [name for leg, name in zip((y, x), names, strict=True) if len(leg) == 0]
    if empty:
        return Reading.none(f"no bars for {', '.join(empty)} in the view's lookback")
    stale = _stale_note(y, x, names, view.bar_seconds)
    if stale:
        return Reading.none(stale)
    return aligned(y, x, view.bar_seconds)


def zscore_now(rule: Rule, y: LegBars, x: LegBars) -> Reading:
    """The z-score of the pair's newest aligned bar, as the page's Live panel computes it
    (``pipeline.compute_pair(rule_view).now("zscore")``).

    :param y: the Y leg's bars over the view's lookback (:func:`rule_view`).
    :param x: the X leg's bars over the same span.
    """
    view = rule_view(rule)
    closes = _pair_closes(rule, y, x, view)
    if isinstance(closes, Reading):
        return closes
    times, cy, cx = closes
    need = bars_needed(view)
    if len(times) < need:
        return Reading.none(f"waiting: {len(times)} of {need} {view.timeframe} bars with both legs")
    bar = int(times[-1])
    if view.method != "ols":
        return _zscore_by_pair_frame(view, times, cy, cx)
    if view.log_prices:
        if (cy <= 0).any() or (cx <= 0).any():
            return Reading.none("a price <= 0: no log prices")
        fy, fx = np.log(cy), np.log(cx)
    else:
        fy, fx = cy, cx
    # quant.hedge_ratio refuses a flat X (relative std below 1e-10): no hedge, no z-score.
    if float(np.std(fx - fx[0])) <= 1e-10 * max(abs(float(fx[0])), 1e-300):
        return Reading.none(f"{rule.symbol_x} is flat over the view: no hedge ratio")
    dx = fx - fx.mean()
    slope = float(dx @ (fy - fy.mean())) / float(dx @ dx)
    intercept = float(fy.mean()) - slope * float(fx.mean())
    spread = fy - slope * fx - intercept
    return Reading(_last_z(spread, view.window), bar)


def _last_z(spread: np.ndarray, window: int) -> float:
    """``quant.zscore`` of the last bar: against the ``window`` bars before it (ddof 1)."""
    base = spread[-window - 1 : -1]
    std = float(base.std(ddof=1))
    if not std > 0:
        return math.nan
    return (float(spread[-1]) - float(base.mean())) / std


def _series(times: np.ndarray, values: np.ndarray) -> pd.Series:
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="s", utc=True))
    return pd.Series(values, index=index)


def _zscore_by_pair_frame(view: View, times: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> Reading:
    """Huber, Theil-Sen, rolling OLS and Kalman: ``quant.pair_frame`` itself."""
    try:
        frame = quant.pair_frame(
            _series(times, cy),
            _series(times, cx),
            view.window,
            view.method,
            view.log_prices,
            **(view.kalman if view.method == "kalman" else {}),
        )
    except ValueError as exc:  # a flat leg, data the method cannot fit: said, not raised
        return Reading.none(f"the {view.method} hedge cannot be fitted: {exc}")
    return Reading(float(frame["zscore"].iloc[-1]), int(times[-1]))


def corr_now(rule: Rule, y: LegBars, x: LegBars) -> Reading:
    """The trailing correlation of one-bar log returns over ``window`` bars at the pair's
    newest aligned bar (``pair_frame``'s ``corr``, ``quant.rolling_corr``)."""
    view = rule_view(rule)
    closes = _pair_closes(rule, y, x, view)
    if isinstance(closes, Reading):
        return closes
    times, cy, cx = closes
    window = view.window
    if len(times) < window + 1:
        return Reading.none(f"waiting: {len(times)} of {window + 1} bars with both legs")
    if (cy[-window - 1 :] <= 0).any() or (cx[-window - 1 :] <= 0).any():
        return Reading.none("a price <= 0: no returns")
    ry = np.diff(np.log(cy[-window - 1 :]))
    rx = np.diff(np.log(cx[-window - 1 :]))
    dy, dx = ry - ry.mean(), rx - rx.mean()
    denominator = math.sqrt(float(dy @ dy) * float(dx @ dx))
    if not denominator > 0:
        return Reading(math.nan, int(times[-1]), "a leg did not move over the window")
    return Reading(float(dy @ dx) / denominator, int(times[-1]))


def coint_pvalue(rule: Rule, y: LegBars, x: LegBars) -> Reading:
    """The Engle-Granger p-value (``quant.engle_granger``, statsmodels ``coint``) of Y on
    X over the last ``window`` aligned bars (log prices when the rule says so)."""
    bar_seconds = TIMEFRAME_SECONDS[rule.timeframe or "1s"]
    names = (rule.symbol, rule.symbol_x or "")
    if len(y) == 0 or len(x) == 0:
        return Reading.none("no bars for a leg in the window")
    stale = _stale_note(y, x, names, bar_seconds)
    if stale:
        return Reading.none(stale)
    times, cy, cx = aligned(y, x, bar_seconds)
    window = int(rule.window or 0)
    times, cy, cx = times[-window:], cy[-window:], cx[-window:]
    if len(times) < MIN_TEST_OBS:
        return Reading.none(f"n too small: {len(times)} bars with both legs, needs {MIN_TEST_OBS}")
    if rule.log_prices:
        if (cy <= 0).any() or (cx <= 0).any():
            return Reading.none("a price <= 0: no log prices")
        cy, cx = np.log(cy), np.log(cx)
    try:
        result = quant.engle_granger(_series(times, cy), _series(times, cx))
    except ValueError as exc:  # a flat leg, an exact linear relation
        return Reading.none(str(exc))
    return Reading(result.pvalue, int(times[-1]), detail=f"on {len(times)} bars")


def volume_ratio_now(rule: Rule, bars: LegBars) -> Reading:
    """``quant.volume_ratio`` of the symbol's newest bar (``pipeline.volume_ratio_now``):
    its volume over the mean of the ``window`` bars before it, bars without trades
    counting 0; the newest bar may still be filling."""
    view = rule_view(rule)
    if len(bars) == 0:
        return Reading.none("no bars in the view's lookback")
    first, last = int(bars.time_s[0]), int(bars.time_s[-1])
    count = (last - first) // view.bar_seconds + 1
    if count <= view.window:
        return Reading.none(f"waiting: {count} of {view.window + 1} {view.timeframe} bars")
    volume = np.zeros(view.window + 1)
    positions = (bars.time_s - (last - view.window * view.bar_seconds)) // view.bar_seconds
    inside = positions >= 0
    volume[positions[inside]] = bars.volume[inside]
    baseline = float(volume[:-1].mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.float64(volume[-1]) / np.float64(baseline))
    return Reading(ratio, last)


# -- the daemon's health --------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRow:
    """The part of a ``feed_status`` row the feed rules read."""

    symbol: str
    last_trade_time_us: int | None
    source_since_ms: int
    updated_ms: int
    problem: str | None = None


def feed_silence(rule: Rule, rows: list[FeedRow], now_ms: int) -> Reading:
    """Seconds since the symbol's last trade, judged only while its market trades: another
    symbol of the venue traded within the threshold, or the daemon has found the socket
    silent while REST shows the symbol trading (``feed_status.problem``).

    :param rows: the venue's ``feed_status`` rows.
    """
    mine = next((row for row in rows if row.symbol == rule.symbol), None)
    if mine is None:
        return Reading.none(f"no feed_status row for {rule.symbol}: the daemon does not record it")
    now_s = now_ms / 1000
    if mine.last_trade_time_us is not None:
        silent = now_s - mine.last_trade_time_us / 1e6
    else:
        silent = now_s - mine.source_since_ms / 1000
    others = [
        row.symbol
        for row in rows
        if row.symbol != rule.symbol
        and row.last_trade_time_us is not None
        and now_s - row.last_trade_time_us / 1e6 < rule.threshold
    ]
    second = int(now_s)
    if mine.problem:
        return Reading(silent, second, detail=f"the daemon says: {mine.problem}")
    if others:
        return Reading(silent, second, detail=f"while {', '.join(sorted(others)[:3])} traded")
    if silent < rule.threshold:
        return Reading(silent, second)
    return Reading(
        math.nan, second, f"silent {silent:,.0f} s, but so is every other symbol of {rule.venue}"
    )


@dataclass(frozen=True)
class GapRow:
    """An abandoned row of ``gaps``."""

    gap_id: int
    symbol: str
    first_missing_id: int
    last_missing_id: int
    resolved_ms: int | None
    note: str | None = None


def gaps_abandoned(rule: Rule, gaps: list[GapRow], cursor_id: int | None) -> Reading:
    """How many gaps of the symbol (every symbol for ``*``) were abandoned after the rule
    was made and are not counted by an earlier firing (``gap_id > cursor_id``).

    ``bar_time_s`` is the second the newest of them was given up; ``detail`` names them.
    """
    new = [
        gap
        for gap in gaps
        if (rule.symbol == ANY or gap.symbol == rule.symbol)
        and gap.gap_id > (cursor_id or 0)
        and (gap.resolved_ms or 0) >= rule.created_ms
    ]
    if not new:
        return Reading(0.0)
    missing = sum(g.last_missing_id - g.first_missing_id + 1 for g in new)
    ranges = ", ".join(f"{g.symbol} {g.first_missing_id}-{g.last_missing_id}" for g in new[:5])
    more = f" and {len(new) - 5} more" if len(new) > 5 else ""
    last_note = new[-1].note
    detail = f"{missing:,} trade ids lost: {ranges}{more}" + (
        f" ({last_note})" if last_note else ""
    )
    newest = max(g.resolved_ms or 0 for g in new) // 1000
    return Reading(float(len(new)), newest, detail=detail, cursor_id=max(g.gap_id for g in new))


@dataclass(frozen=True)
class WriterRow:
    """The ``writer_status`` row."""

    state: str
    failing_since_ms: int | None
    last_error: str | None
    updated_ms: int


def writer_failing(row: WriterRow | None, now_ms: int) -> Reading:
    """Seconds the daemon's writer has been failing to commit (0 while it commits)."""
    if row is None:
        return Reading.none("no writer_status row yet")
    second = now_ms // 1000
    if row.state != "retrying":
        return Reading(0.0, second)
    since = row.failing_since_ms or row.updated_ms
    error = (row.last_error or "no error recorded")[:300]
    return Reading(max(0.0, (now_ms - since) / 1000), second, detail=f"last error: {error}")


# -- the message ---------------------------------------------------------------------------


def message(rule: Rule, reading: Reading) -> str:
    """What a firing says, stored in ``alert_events.message`` and delivered: what fired,
    the value, the threshold, the pair and view, and the bar time."""
    value = reading.value
    if rule.kind in HEALTH_KINDS:
        shown = f"{value:,.0f}"
    elif rule.kind.startswith("price"):
        shown = f"{value:,.8g}"
    else:
        shown = f"{value:.4g}"
    text = (
        f"{rule.target()}: {KINDS[rule.kind]} {rule.threshold:g} fired, value {shown}"
        f" (threshold {rule.threshold:g}"
    )
    text += ")" if rule.kind in EVENT_KINDS else f", re-arms at {rule.rearm:g})"
    text += f"; {rule.judged_in()}"
    if reading.bar_time_s is not None:
        text += f"; bar {utc(reading.bar_time_s)}"
    if reading.detail:
        text += f"; {reading.detail}"
    return f"Rule {rule.rule_id}, {text}"


def utc(seconds: int) -> str:
    """``2024-05-01 00:19:59 UTC``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
