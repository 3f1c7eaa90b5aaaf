"""From a view to the frames the tabs draw: queries, then ``analytics``. No Streamlit here.

Every number comes from ``analytics``; this module only fetches bars, hands them over in
the right order and says what a panel is still waiting for. The benchmark times these
functions, so what it measures is what the page pays.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import psycopg

from pairs_monitor import quant
from pairs_monitor.clock import now_ms
from pairs_monitor.page import queries
from pairs_monitor.page.settings import (
    LIVE_VENUES,
    LOOKBACKS,
    MAX_1S_ROWS,
    MAX_FUTURE_SKEW_S,
    MAX_SCAN_SYMBOLS,
    MAX_STALE_BARS,
    MIN_FUNDING_SETTLEMENTS,
    MIN_HURST_BARS,
    MIN_JOHANSEN_OBS,
    MIN_TEST_OBS,
    SCAN_MIN_BARS,
    UPLOAD_VENUE,
    Leg,
    View,
    default_fee_bps,
    duration_label,
    leg_names,
    shortest_timeframe,
    store_target,
    timeframe_seconds,
    too_small,
)
from pairs_monitor.page.text import utc
from pairs_monitor.quant import HedgeMethod, PairMethod
from pairs_monitor.store import connection, schema
from pairs_monitor.store.postgres import PgConnection

T = TypeVar("T")


class ReadOnlyDB:
    """The page's one read-only connection, shared by every session behind a lock.

    :param path: the store's name on the page (``settings.store_name``): a SQLite file, or
        a PostgreSQL URL without its password (the connection gets the real one).
    :raises FileNotFoundError: for a SQLite file that does not exist.
    :raises schema.SchemaError: for a PostgreSQL database without our schema.
    :raises psycopg.OperationalError: for a server that cannot be reached or refuses the
        login (its message without the password).
    """

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        self.path = Path(path)
        self.target = store_target(path)
        # A store.connection.Connection; typed Any as sqlite3's is (psycopg's typed rows
        # would make every caller's ``fetchone()[0]`` check for None).
        self.conn: Any = connection.connect_read_only(self.target)
        self._dropped = False  # the server dropped ``conn``: connect again on the next run
        self._lock = threading.Lock()

    @property
    def is_postgres(self) -> bool:
        """True for a PostgreSQL store."""
        return self.target.is_postgres

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(conn, *args)`` (a function of ``queries``) holding the lock.

        A PostgreSQL connection the server dropped (a restart, a network cut) is closed
        and this call's error raised; the next call connects again, so a page outlives
        its server's restart.
        """
        with self._lock:
            if self._dropped:
                self.conn = connection.connect_read_only(self.target)
                self._dropped = False
            try:
                return fn(self.conn, *args)
            except psycopg.Error:
                if isinstance(self.conn, PgConnection) and self.conn.raw.broken:
                    self.conn.close()
                    self._dropped = True
                raise

    def close(self) -> None:
        with self._lock:
            self.conn.close()


POSTGRES_INTEGRITY = (
    "not run on PostgreSQL: the server checks its pages itself (data checksums, when the "
    "cluster has them) and the page reads no file"
)


class IntegrityCheck:
    """``PRAGMA quick_check`` of a database file, run once on its own read-only connection
    in a background thread: it reads the whole file, so the page draws meanwhile.

    ``problems`` is None while it runs, ``[]`` for a sound file, else what SQLite found.
    On PostgreSQL nothing runs: ``problems`` is ``[]`` and ``skipped`` says why.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.problems: list[str] | None = None
        self.skipped: str | None = None
        self.seconds = math.nan
        self._done = threading.Event()
        target = store_target(path)
        if target.path is None:
            self.problems, self.skipped, self.seconds = [], POSTGRES_INTEGRITY, 0.0
            self._done.set()
            return
        threading.Thread(
            target=self._run, args=(target.path,), name="quick_check", daemon=True
        ).start()

    def _run(self, path: Path) -> None:
        started = time.perf_counter()
        try:
            conn = schema.connect_read_only(path)
            try:
                self.problems = queries.quick_check(conn)
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            self.problems = [f"the check itself failed: {exc}"]
        self.seconds = time.perf_counter() - started
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the check has finished (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)


class Recording(Protocol):
    """What the daemon recorded besides bars: its health, its runs, the raw trades, the
    funding of perpetuals.

    A capability of a database source only (``Source.recording``); an upload has none.
    """

    def feed_status(self, venue: str) -> pd.DataFrame:
        """The daemon's feed_status rows of ``venue`` (empty when none)."""
        ...

    def writer_status(self) -> queries.WriterStatus | None:
        """The writer's health row; None when no daemon has written one."""
        ...

    def latest_run(self, venue: str | None = None) -> queries.IngestRun | None:
        """The most recent daemon start feeding ``venue``; of any venue when None."""
        ...

    def ticks(self, leg: Leg, start_us: int, end_us: int, limit: int) -> pd.DataFrame:
        """Raw trades of ``leg`` in ``[start_us, end_us)``, at most ``limit``."""
        ...

    def future_bars(self, leg: Leg) -> tuple[int, int | None]:
        """Bars of ``leg`` stamped beyond :func:`latest_allowed_s` (ignored by the
        views): how many (counted up to a cap) and the latest start second."""
        ...

    def funding(self, leg: Leg, start_ms: int, end_ms: int) -> queries.FundingRecord:
        """The funding stored for a perpetual leg around ``[start_ms, end_ms)``."""
        ...

    def tape_start_us(self, leg: Leg) -> int | None:
        """When ``leg``'s first stored trade was (µs); before it, bars are from klines
        only. None when no trade of it is stored."""
        ...

    def kline_spans(self, leg: Leg) -> pd.DataFrame:
        """The periods whose klines were fetched or replayed for ``leg``."""
        ...

    def gaps(self, leg: Leg, limit: int) -> pd.DataFrame:
        """``leg``'s open, abandoned and kline-covered gaps, newest first."""
        ...

    def unusable_klines(
        self, leg: Leg, start_s: int, end_s: int, bar_seconds: int
    ) -> tuple[int, int] | None:
        """Klines of ``leg`` in ``[start_s, end_s)`` that bars of ``bar_seconds`` cannot
        be built from, when it has none they can: ``(kline length, first open time)`` of
        the shortest such length, else None."""
        ...


class Source(Protocol):
    """Where bars come from: the database (every venue) or an uploaded CSV (one).

    Tabs reach data only through this protocol, a leg at a time (``settings.Leg``: venue
    and symbol): bars and prices from every source, and the daemon's record through
    ``recording`` where there is one.
    """

    @property
    def cache_key(self) -> tuple[str, str]:
        """What identifies the data in a cache key: the database file or the upload's bytes."""
        ...

    @property
    def max_lookback_s(self) -> int | None:
        """The longest lookback a view may ask for; None when only bounded in bars."""
        ...

    @property
    def recording(self) -> Recording | None:
        """The daemon's record behind the bars; None for data that does not change."""
        ...

    def legs(self) -> list[Leg]:
        """Every (venue, symbol) with bars, sorted."""
        ...

    def latest_s(self, leg: Leg) -> int | None: ...

    def raw_bars(self, leg: Leg, start_s: int, end_s: int, bar_seconds: int = 1) -> pd.DataFrame:
        """Bars of ``leg`` starting in ``[start_s, end_s)``, oldest first, finer than or
        as long as ``bar_seconds`` (the view's timeframe), in ``analytics``' layout and
        a ``from_klines`` column where the source knows it."""
        ...

    def last_price(self, leg: Leg) -> tuple[float, int] | None: ...


@dataclass
class DbSource:
    """The database, every venue of it, read through the page's read-only connection;
    it is its own :class:`Recording`."""

    db: ReadOnlyDB

    @property
    def cache_key(self) -> tuple[str, str]:
        return ("db", self.db.name)

    @property
    def max_lookback_s(self) -> int | None:
        return MAX_1S_ROWS

    @property
    def recording(self) -> Recording:
        return self

    def legs(self) -> list[Leg]:
        return [Leg(v, s) for v, s in self.db.run(queries.series)]

    def latest_s(self, leg: Leg) -> int | None:
        """The newest bar second not implausibly in the future (``latest_allowed_s``)."""
        return self.db.run(queries.latest_bar_s, *leg, latest_allowed_s())

    def raw_bars(self, leg: Leg, start_s: int, end_s: int, bar_seconds: int = 1) -> pd.DataFrame:
        """One-second bars, and for a timeframe of a minute or more the klines whose
        length divides it (``kline_bars``) where no finer bar covers their span."""
        bars = self.db.run(queries.bars_1s, *leg, start_s, end_s, MAX_1S_ROWS)
        if bar_seconds == 1:
            return bars
        usable = [i for i in self.db.run(queries.kline_intervals, *leg) if bar_seconds % i == 0]
        klines = [
            (i, self.db.run(queries.kline_bars, *leg, i, start_s, end_s, MAX_1S_ROWS))
            for i in usable
        ]
        return merge_klines(bars, klines)

    def last_price(self, leg: Leg) -> tuple[float, int] | None:
        """Price and time (microseconds) of the newest stored trade."""
        max_us = latest_allowed_s() * 1_000_000 + 999_999
        trade = self.db.run(queries.last_trade, *leg, max_us)
        return None if trade is None else (trade.price, trade.time_us)

    def feed_status(self, venue: str) -> pd.DataFrame:
        return self.db.run(queries.feed_status, venue)

    def writer_status(self) -> queries.WriterStatus | None:
        return self.db.run(queries.writer_status)

    def latest_run(self, venue: str | None = None) -> queries.IngestRun | None:
        return self.db.run(queries.latest_run, venue)

    def ticks(self, leg: Leg, start_us: int, end_us: int, limit: int) -> pd.DataFrame:
        return self.db.run(queries.ticks, *leg, start_us, end_us, limit)

    def future_bars(self, leg: Leg) -> tuple[int, int | None]:
        return self.db.run(queries.future_bars, *leg, latest_allowed_s())

    def funding(self, leg: Leg, start_ms: int, end_ms: int) -> queries.FundingRecord:
        return self.db.run(queries.funding, *leg, start_ms, end_ms)

    def tape_start_us(self, leg: Leg) -> int | None:
        return self.db.run(queries.tape_start_us, *leg)

    def kline_spans(self, leg: Leg) -> pd.DataFrame:
        return self.db.run(queries.kline_spans, *leg)

    def gaps(self, leg: Leg, limit: int) -> pd.DataFrame:
        return self.db.run(queries.gaps, *leg, limit)

    def unusable_klines(
        self, leg: Leg, start_s: int, end_s: int, bar_seconds: int
    ) -> tuple[int, int] | None:
        intervals = self.db.run(queries.kline_intervals, *leg)
        found = [
            (interval_s, self.db.run(queries.first_kline_s, *leg, interval_s, start_s, end_s))
            for interval_s in intervals
        ]
        present = [(i, first) for i, first in found if first is not None]
        if any(bar_seconds % i == 0 for i, _ in present):
            return None
        return present[0] if present else None


NS_PER_S = 1_000_000_000


def merge_klines(bars: pd.DataFrame, klines: Sequence[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """Finer bars with the klines of longer lengths where nothing finer covers them.

    A kline is used only for a span ``[open, open + length)`` that holds no bar already
    taken: one-second bars first (those of trades and of 1-second klines), then klines
    from the shortest length up. So a minute the tape has any second of keeps the tape's
    bars, and a 1-minute kline stands for a minute only where there is nothing finer.

    :param bars: one-second bars (``queries.bars_1s``).
    :param klines: ``(length in seconds, its bars stamped at their open times)``.
    :return: every bar taken, oldest first, with ``from_klines``.
    """
    starts = pd.DatetimeIndex(bars.index).as_unit("ns").asi8 // NS_PER_S
    ends = starts + 1
    parts = [bars] if len(bars) else []
    for interval_s, frame in sorted(klines, key=lambda k: k[0]):
        if frame.empty:
            continue
        opens = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // NS_PER_S
        covered = np.zeros(len(opens), dtype=bool)
        if len(starts):
            order = np.argsort(starts, kind="stable")
            sorted_starts = starts[order]
            reach = np.maximum.accumulate(ends[order])  # furthest end of any bar so far
            before = np.searchsorted(sorted_starts, opens + interval_s, side="left")
            covered = (before > 0) & (reach[np.maximum(before - 1, 0)] > opens)
        taken = opens[~covered]
        parts.append(frame[~covered])
        starts = np.concatenate([starts, taken])
        ends = np.concatenate([ends, taken + interval_s])
    if not parts:
        return bars
    merged = pd.concat(parts) if len(parts) > 1 else parts[0]
    return merged.sort_index(kind="stable")


@dataclass
class UploadSource:
    """Bars parsed from an uploaded CSV, ``{symbol: bars frame}`` (see ``upload.py``),
    every symbol a leg on the venue ``upload``.

    :param digest: of the uploaded bytes, so cached results follow the content.
    """

    frames: dict[str, pd.DataFrame]
    bar_seconds: int = 1
    digest: str = ""
    venue: str = UPLOAD_VENUE

    @property
    def cache_key(self) -> tuple[str, str]:
        return ("upload", self.digest)

    @property
    def max_lookback_s(self) -> int | None:
        return None  # already in memory: bounded in bars only

    @property
    def recording(self) -> Recording | None:
        return None

    def legs(self) -> list[Leg]:
        return [Leg(self.venue, symbol) for symbol in sorted(self.frames)]

    def _frame(self, leg: Leg) -> pd.DataFrame | None:
        return self.frames.get(leg.symbol) if leg.venue == self.venue else None

    def latest_s(self, leg: Leg) -> int | None:
        frame = self._frame(leg)
        if frame is None or frame.empty:
            return None
        return int(frame.index[-1].timestamp())

    def raw_bars(self, leg: Leg, start_s: int, end_s: int, bar_seconds: int = 1) -> pd.DataFrame:
        """The upload's bars in the range (as long as the file's, whatever the view)."""
        frame = self._frame(leg)
        if frame is None:
            return quant.empty_bars()
        start = pd.Timestamp(start_s, unit="s", tz="UTC")
        end = pd.Timestamp(end_s, unit="s", tz="UTC")
        return frame[(frame.index >= start) & (frame.index < end)]

    def last_price(self, leg: Leg) -> tuple[float, int] | None:
        """Last close of the file and its bar time (microseconds)."""
        frame = self._frame(leg)
        if frame is None or frame.empty:
            return None
        return float(frame["close"].iloc[-1]), int(frame.index[-1].value // 1000)


def latest_allowed_s() -> int:
    """The latest bar start a database view may end on: now plus ``MAX_FUTURE_SKEW_S``."""
    return now_ms() // 1000 + MAX_FUTURE_SKEW_S


def end_of_view(source: Source, legs: Sequence[Leg]) -> int | None:
    """One past the newest bar second of any of ``legs``: the right edge of the view."""
    latest = [t for t in (source.latest_s(leg) for leg in legs) if t is not None]
    return max(latest) + 1 if latest else None


def view_start_s(view: View, end_s: int) -> int:
    """The first second of a view ending at ``end_s``: its lookback back, on the
    timeframe's grid."""
    return (end_s - view.lookback_s) // view.bar_seconds * view.bar_seconds


def leg_bars(source: Source, view: View, leg: Leg, end_s: int) -> pd.DataFrame:
    """Bars of one leg at the view's timeframe over its lookback, ending at ``end_s``;
    ``from_klines`` is True for a bar any part of which came from a kline (so not every
    trade of it is stored)."""
    raw = source.raw_bars(leg, view_start_s(view, end_s), end_s, view.bar_seconds)
    bars = quant.resample_bars(raw, view.freq)
    bars["from_klines"] = pd.Series(False, index=bars.index, dtype=bool)
    if "from_klines" in raw.columns and len(raw):
        index = pd.DatetimeIndex(raw.index)
        part = pd.Series(raw["from_klines"].to_numpy(dtype=bool), index=index)
        # quant bins fixed-length bars on the epoch's grid, as floor does.
        flags = part.groupby(index.floor(f"{view.bar_seconds}s")).any()
        flags.index = pd.DatetimeIndex(flags.index).as_unit("ns")
        bars["from_klines"] = flags.reindex(
            pd.DatetimeIndex(bars.index).as_unit("ns"), fill_value=False
        ).to_numpy(dtype=bool)
    return bars


@dataclass(frozen=True)
class HistoryHint:
    """A leg whose bars in a view are klines too long for its timeframe (USD-M's 1-minute
    history at 1 s): what the page says, and the shortest timeframe that shows them."""

    name: str  # the leg's name in the view
    text: str
    timeframe: str | None  # None: no sidebar timeframe is a multiple of the kline length


def history_hints(source: Source, view: View, end_s: int) -> list[HistoryHint]:
    """The :class:`HistoryHint` of each leg of the view that needs one; empty when every
    bar stored in the view can be shown at its timeframe."""
    recording = source.recording
    if recording is None:
        return []
    start_s = view_start_s(view, end_s)
    hints = []
    for leg, name in zip(view.legs, view.names, strict=True):
        found = recording.unusable_klines(leg, start_s, end_s, view.bar_seconds)
        if found is None:
            continue
        interval_s, first_s = found
        tape_us = recording.tape_start_us(leg)
        length = duration_label(interval_s)
        if tape_us is None:
            where = f"only {length} bars from klines (no trade stored)"
        elif first_s < tape_us // 1_000_000:
            where = f"before {utc(tape_us // 1000)} only {length} history"
        else:
            where = f"from {utc(first_s * 1000)} some bars only as {length} klines (no trades)"
        pick = shortest_timeframe(interval_s)
        text = f"{name}: {where}" + (f": pick {pick} or more" if pick else "")
        hints.append(HistoryHint(name, text, pick))
    return hints


def lookback_for(view: View, timeframe: str) -> str:
    """The sidebar lookback to go with ``timeframe``: the shortest that holds the bars the
    view's window needs at it, and at least the view's own."""
    needed = max(bars_needed(view) * timeframe_seconds(timeframe), view.lookback_s)
    fits = [label for label, seconds in LOOKBACKS.items() if seconds >= needed]
    return fits[0] if fits else list(LOOKBACKS)[-1]


def bars_needed(view: View) -> int:
    """Aligned bars needed before ``pair_frame``'s last z-score is defined.

    The z-score judges a bar against the ``window`` bars before it (``quant.zscore``), so
    it needs ``window + 1`` spreads. Static fits: that. Rolling OLS: its own window,
    shifted one bar, then those. Kalman: its noise-estimation window (auto) or two bars for
    the diffuse start (fixed noise), then those.
    """
    z_bars = view.window + 1
    if view.method == "rolling":
        return view.window + z_bars
    if view.method == "kalman":
        if view.kalman_obs_var is None:  # auto: no output before its noise estimate
            return view.kalman["init_window"] - 1 + z_bars
        return z_bars + 2
    return z_bars


def tradable_closes(bars: pd.DataFrame, view: View) -> pd.Series:
    """Closes of the bars that traded and pass the view's liquidity floor; the others
    (empty bars, whose close is only carried, and bars below the floor) are dropped."""
    keep = quant.liquidity_mask(bars, view.min_volume, view.min_trades) & ~bars["empty"]
    return bars["close"][keep.to_numpy()]


def max_staleness(view: View) -> pd.Timedelta:
    """``MAX_STALE_BARS`` bars of the view's timeframe."""
    return pd.Timedelta(seconds=MAX_STALE_BARS * view.bar_seconds)


@dataclass
class PairData:
    """What the Live, Pair, Statistics, Backtest and Data tabs draw for one pair."""

    view: View
    end_s: int | None
    bars: dict[str, pd.DataFrame] = field(default_factory=dict)  # by leg name (view.names)
    closes: pd.DataFrame | None = None  # aligned raw closes, columns the legs' names
    frame: pd.DataFrame | None = None  # quant.pair_frame output
    waiting: str | None = None  # what the panels are waiting for, when frame is None
    seconds: float = 0.0
    # legs whose last tradable bar is more than MAX_STALE_BARS older than the newest bar
    # of the view: leg name -> age in seconds (of that bar's start behind the newest one)
    stale: dict[str, float] = field(default_factory=dict)

    def bars_of(self, leg: Leg) -> pd.DataFrame | None:
        """The bars of one of the view's legs, when loaded."""
        for own, name in zip(self.view.legs, self.view.names, strict=True):
            if own == leg:
                return self.bars.get(name)
        return None

    @property
    def fit(self) -> quant.HedgeFit | None:
        return None if self.frame is None else self.frame.attrs.get("hedge_fit")

    def fitted(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The aligned closes and the pair frame.

        :raises ValueError: saying what the pair waits for, before the frame exists.
        """
        if self.closes is None or self.frame is None:
            raise ValueError(f"no pair frame yet: {self.waiting}")
        return self.closes, self.frame

    def latest(self, column: str) -> float:
        """Last non-NaN value of a pair-frame column (NaN when there is none)."""
        if self.frame is None or column not in self.frame:
            return math.nan
        col = self.frame[column].dropna()
        return float(col.iloc[-1]) if len(col) else math.nan

    def latest_bar_s(self) -> int | None:
        if self.frame is None or self.frame.empty:
            return None
        return int(self.frame.index[-1].timestamp())

    def now(self, column: str) -> tuple[float, int | None]:
        """A column's value at the newest row and that row's start second: what the Live
        panel and the alerts show. NaN (and None) when a leg is stale: the newest row
        then lies in the past, and its value is not the pair's value now."""
        if self.stale or self.frame is None or self.frame.empty or column not in self.frame:
            return math.nan, None
        return float(self.frame[column].iloc[-1]), self.latest_bar_s()


def compute_pair(
    source: Source,
    view: View,
    end_s: int | None = None,
    bars: Mapping[str, pd.DataFrame] | None = None,
    *,
    fit: bool = True,
) -> PairData:
    """Bars of both legs, aligned closes and ``quant.pair_frame`` for a view.

    :param end_s: right edge of the window; by default the newest bar of either leg.
    :param bars: the legs' bars by name (:func:`leg_bars` of this view and ``end_s``),
        when already loaded; read here otherwise.
    :param fit: False: stop at the aligned closes, which no window, hedge method or z
        level changes (what the Prices tab draws); ``frame`` stays None.
    """
    started = time.perf_counter()
    if view.leg_y == view.leg_x:
        return PairData(view, end_s, waiting="pick two different legs for Y and X")
    if end_s is None:
        end_s = end_of_view(source, view.legs)
    if end_s is None:
        return PairData(view, None, waiting=f"no bars yet for {view.name_y} or {view.name_x}")
    result = PairData(view, end_s)
    for leg, name in zip(view.legs, view.names, strict=True):
        loaded = None if bars is None else bars.get(name)
        result.bars[name] = leg_bars(source, view, leg, end_s) if loaded is None else loaded
    empty = [s for s, b in result.bars.items() if b.empty]
    if empty:
        hints = [h.text for h in history_hints(source, view, end_s) if h.name in empty]
        legs = [leg for leg, name in zip(view.legs, view.names, strict=True) if name in empty]
        why = "; ".join(hints) or no_bars_why(legs)
        result.waiting = (
            f"no {view.timeframe} bars for {', '.join(empty)} in the last "
            f"{_human(view.lookback_s)}: {why}"
        )
        return _done(result, started)
    closes = {name: tradable_closes(bars, view) for name, bars in result.bars.items()}
    newest = max(bars.index[-1] for bars in result.bars.values())
    for name, c in closes.items():
        age = (newest - c.index[-1]).total_seconds() if len(c) else float(view.lookback_s)
        if age > max_staleness(view).total_seconds():
            result.stale[name] = age
    result.closes = quant.align_closes(closes, max_staleness=max_staleness(view))
    if not fit:
        return _done(result, started)
    need = bars_needed(view)
    have = len(result.closes)
    if have < need:
        result.waiting = (
            f"need {need - have} more {view.timeframe} bars with both legs "
            f"({have} of {need}; window {view.window})"
        )
        return _done(result, started)
    try:
        result.frame = quant.pair_frame(
            result.closes[view.name_y],
            result.closes[view.name_x],
            view.window,
            view.method,
            view.log_prices,
            **(view.kalman if view.method == "kalman" else {}),
        )
    except ValueError as exc:  # data the method cannot fit (flat leg, ...): said, not raised
        result.waiting = f"the {view.method} hedge cannot be fitted on these bars: {exc}"
    return _done(result, started)


def no_bars_why(legs: Sequence[Leg]) -> str:
    """Why legs may have no bars in a view, by what feeds them: a live feed may not be
    recorded, the simulator may not run, a replay or an upload is finished data."""
    venues = {leg.venue for leg in legs}
    if venues <= set(LIVE_VENUES):
        return "is the daemon recording it?"
    if venues == {"sim"}:
        return (
            "is the simulator running (ingest.py --source sim, or --source auto while live "
            "is down)?"
        )
    if venues == {UPLOAD_VENUE}:
        return "the uploaded file holds none there"
    if not venues & {*LIVE_VENUES, "sim", UPLOAD_VENUE}:
        return (
            "a replay is recorded data, nothing newer arrives: pick a lookback over the span "
            "it holds"
        )
    return "is the daemon recording them? (a replayed or uploaded leg gets nothing newer)"


def volume_ratio_now(
    source: Source, view: View, leg: Leg, end_s: int, bars: pd.DataFrame | None = None
) -> tuple[float, int | None]:
    """``quant.volume_ratio`` of a leg's newest bar at the view's timeframe and window.

    The newest bar may still be filling; its volume only grows, so a spike is seen as soon
    as it crosses the threshold. :param bars: the leg's bars when already loaded.
    :return: ``(ratio, bar start in seconds)``; NaN and None without enough bars.
    """
    if bars is None:
        bars = leg_bars(source, view, leg, end_s)
    if len(bars) <= view.window:
        return math.nan, None
    ratio = quant.volume_ratio(bars, view.window)
    return float(ratio.iloc[-1]), int(bars.index[-1].timestamp())


@dataclass(frozen=True)
class TrueParams:
    """The simulator's true relation between the pair on screen, in its orientation.

    ``hedge_ratio`` and ``intercept`` are of ``log Y = intercept + hedge_ratio log X + s``
    (the simulator's model is in log prices); ``half_life_s`` is the spread's half-life in
    seconds (the same whichever way round the pair is written).
    """

    hedge_ratio: float
    intercept: float
    half_life_s: float
    how: str  # how it was derived from the simulator's parameters


def true_pair_params(params: dict, y: str, x: str) -> TrueParams | None:
    """The simulator's true hedge ratio and half-life for ``y`` on ``x``, or None.

    The simulator drives every leg ``i`` by one hedge leg ``H``:
    ``log P_i = a_i + b_i log P_H + s_i`` with OU spreads of one half-life. So ``Y`` on
    ``H`` is ``b_Y``; ``H`` on ``X`` inverts ``log P_X = a_X + b_X log P_H`` to slope
    ``1 / b_X``, intercept ``-a_X / b_X``; two legs ``Y`` on ``X`` give ``b_Y / b_X``, intercept
    ``a_Y - a_X b_Y / b_X`` (their spread ``s_Y - (b_Y / b_X) s_X`` is again OU with that
    half-life). None when a symbol is not part of the model or the params are not the
    simulator's (``legs`` and ``hedge_leg``); NaN ratio and intercept ("undefined" in
    ``how``) when X's own ratio is 0, as ``--sim-hedge-ratio 0`` makes it.
    """
    legs, hedge = params.get("legs"), params.get("hedge_leg")
    half_life = params.get("half_life_s")
    if not isinstance(legs, dict) or not hedge or half_life is None or y == x:
        return None
    try:
        coef = {s: (float(v["hedge_ratio"]), float(v["intercept"])) for s, v in legs.items()}
        half_life = float(half_life)
    except (KeyError, TypeError, ValueError):
        return None
    if x == hedge and y in coef:
        b, a = coef[y]
        return TrueParams(b, a, half_life, f"as simulated: {y} driven by {x}")
    if x in coef and (y == hedge or y in coef) and coef[x][0] == 0:
        # X does not move with the hedge leg: there is no ratio to invert.
        return TrueParams(
            math.nan,
            math.nan,
            half_life,
            f"undefined: {x} was simulated with hedge ratio 0 (it does not follow "
            f"{hedge}), so {y} on {x} has no true hedge ratio",
        )
    if y == hedge and x in coef:
        b, a = coef[x]
        return TrueParams(1 / b, -a / b, half_life, f"inverted: {x} = a + {b:g} {y} (1/{b:g})")
    if y in coef and x in coef:
        (by, ay), (bx, ax) = coef[y], coef[x]
        ratio = by / bx
        return TrueParams(
            ratio, ay - ax * ratio, half_life, f"both driven by {hedge}: {by:g} / {bx:g}"
        )
    return None


def hedge_paths(pair: PairData) -> pd.DataFrame:
    """Hedge ratio over time by three estimators: static (view's method), rolling, Kalman.

    The Kalman path is the predicted slope with its band of -+2 ``slope_pred_std``
    (``KALMAN_BAND`` columns), on the view's prices (``log_prices`` tells the filter).
    """
    view, (closes, _frame) = pair.view, pair.fitted()
    y, x = closes[view.name_y], closes[view.name_x]
    if view.log_prices:
        y, x = _log(y), _log(x)
    static_method = _static_method(view.method)
    fit = quant.hedge_ratio(y, x, static_method)
    rolling = quant.rolling_hedge_ratio(y, x, view.window)["slope"]
    kalman = quant.kalman_hedge_ratio(y, x, log_prices=view.log_prices, **view.kalman)
    pred, band = kalman["slope_pred"], 2 * kalman["slope_pred_std"]
    return pd.DataFrame(
        {
            f"static ({static_method})": pd.Series(fit.slope, index=y.index),
            f"rolling OLS ({view.window})": rolling,
            KALMAN_PATH: pred,
            KALMAN_BAND[0]: pred - band,
            KALMAN_BAND[1]: pred + band,
        }
    )


KALMAN_PATH = "Kalman (predicted)"
# Columns of hedge_paths: the predicted slope -+ 2 slope_pred_std (the model's own band).
KALMAN_BAND = ("Kalman −2σ", "Kalman +2σ")


def _static_method(method: PairMethod) -> HedgeMethod:
    """The view's method when it is one fit over the window, else OLS."""
    if method == "huber" or method == "theil-sen":
        return method
    return "ols"


def _log(s: pd.Series) -> pd.Series:
    # quant.align_closes(log=True) is the analytics' way to take log prices.
    return quant.align_closes({"s": s}, log=True)["s"]


def _done(result: PairData, started: float) -> PairData:
    result.seconds = time.perf_counter() - started
    return result


def _human(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day(s)"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


@dataclass
class Statistics:
    """The Statistics tab's tests for one pair (each None when it could not run, see
    ``errors``, or when its sample is too small to mean anything, see ``too_small``).

    ``adf_y``/``adf_x``: ADF on each leg (plain ADF values are right for an observed
    series). ``engle_granger``: the cointegration verdict, ADF on the OLS residual of Y on
    X judged with MacKinnon's cointegration critical values. ``half_life``
    (``quant.half_life_fit`` with ``legs=2``, the residual being fitted) and ``hurst_fit``
    are of that same OLS residual (``residual``), never of the sidebar's spread: a rolling
    or Kalman spread is a one-step forecast error, stationary by construction.
    ``half_life_bars`` and ``hurst`` are their numbers (NaN when not shown).
    ``too_small``: statistic name -> "n too small: ..." (``settings.too_small``) for those
    under ``MIN_TEST_OBS`` (tests, half-life) or ``MIN_HURST_BARS`` (Hurst).
    """

    adf_y: Any = None
    adf_x: Any = None
    engle_granger: Any = None
    johansen: Any = None
    half_life: quant.HalfLifeResult | None = None
    hurst_fit: quant.HurstResult | None = None
    half_life_bars: float = math.nan
    hurst: float = math.nan
    residual: pd.Series | None = None
    errors: dict[str, str] = field(default_factory=dict)
    too_small: dict[str, str] = field(default_factory=dict)


def statistics(pair: PairData) -> Statistics:
    """ADF on each leg, Engle-Granger and Johansen on the legs, half-life and Hurst of the
    Engle-Granger (OLS) residual, whatever the sidebar's hedge method; each only when its
    sample reaches the page's minimum (``MIN_TEST_OBS``, ``MIN_HURST_BARS``)."""
    view, out = pair.view, Statistics()
    closes, _frame = pair.fitted()
    legs = closes[[view.name_y, view.name_x]]
    if view.log_prices:
        legs = quant.align_closes(legs, log=True)
    legs = legs.dropna()
    y, x = legs[view.name_y], legs[view.name_x]
    tests = {
        "adf_y": lambda: quant.adf_test(y),
        "adf_x": lambda: quant.adf_test(x),
        "engle_granger": lambda: quant.engle_granger(y, x),
        "johansen": lambda: quant.johansen(legs),
    }
    small = too_small(len(legs), MIN_TEST_OBS)
    for name, run in tests.items():
        needs = too_small(len(legs), MIN_JOHANSEN_OBS) if name == "johansen" else small
        if needs:
            out.too_small[name] = needs
            continue
        try:
            setattr(out, name, run())
        except ValueError as exc:  # too few points, flat series: said, not raised
            out.errors[name] = str(exc)
    eg = out.engle_granger
    if eg is None:
        for name in ("half_life", "hurst"):
            if small:
                out.too_small[name] = small
            else:
                out.errors[name] = "no Engle-Granger fit: " + out.errors.get("engle_granger", "")
        return out
    out.residual = quant.spread(y, x, eg.hedge_ratio, eg.intercept)
    out.half_life = quant.half_life_fit(out.residual, legs=2)
    small_hl = too_small(out.half_life.nobs, MIN_TEST_OBS, "pairs of adjacent bars")
    if small_hl:
        out.too_small["half_life"] = small_hl
    else:
        out.half_life_bars = out.half_life.half_life
    out.hurst_fit = quant.hurst_fit(out.residual)
    small_h = too_small(out.hurst_fit.nobs, MIN_HURST_BARS, "bars")
    if small_h:
        out.too_small["hurst"] = small_h
    else:
        out.hurst = out.hurst_fit.hurst
    return out


def stats_table(pair: PairData) -> pd.DataFrame:
    """``quant.stats_table`` for both legs and the pair, on the view's bars."""
    view = pair.view
    return quant.stats_table(
        {name: pair.bars[name] for name in view.names},
        freq=None,
        window=view.window,
        pair=view.names,
        method=view.method,
        log_prices=view.log_prices,
        kalman=view.kalman,
    )


CAUSAL_METHODS = ("rolling", "kalman")


def backtest_frame(pair: PairData) -> pd.DataFrame:
    """The z-score and hedge ratio the backtest trades on: never fitted on later bars.

    Rolling OLS and Kalman are causal and are used as the sidebar set them. A static fit
    (OLS, Huber, Theil-Sen) has seen the whole window, bars after each trade included,
    so the backtest uses its causal counterpart instead: trailing OLS over the same
    window, applied from the next bar.
    """
    view, (closes, frame) = pair.view, pair.fitted()
    if view.method in CAUSAL_METHODS:
        return frame
    y, x = closes[view.name_y], closes[view.name_x]
    return quant.pair_frame(y, x, view.window, "rolling", view.log_prices)


def leg_fees(view: View) -> tuple[tuple[float, str], tuple[float, str]]:
    """Each leg's default fee and where it is from (``settings.default_fee_bps`` of its
    venue): Y's, X's. A spot leg against a perpetual pays 10 bps on one, 5 on the other."""
    fee_y, fee_x = (default_fee_bps(leg.venue) for leg in view.legs)
    return fee_y, fee_x


@dataclass(frozen=True)
class LegFunding:
    """The funding a backtest books for one leg: ``rates`` (indexed by funding time) or
    None when funding is not included, and ``note``, what the page says about it."""

    rates: pd.Series | None
    note: str
    settlements: int = 0
    gaps: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = ()


def backtest_funding(source: Source, pair: PairData) -> dict[str, LegFunding]:
    """The stored funding of each perpetual leg over the backtest's bars, by leg name.

    A leg on ``binance-usdm`` books the settled rates of ``funding_rates`` from its first
    bar's start to its last bar's close. When none is stored for that leg at all (the
    daemon did not record it, or the database predates schema version 5) funding is
    not included and the note says so: it is never taken as zero. Where settlements are
    missing inside the range (``quant.funding_gaps``) the note names the stretches. Legs
    of other venues get no entry (a spot leg pays no funding; a replay or simulated leg
    has no funding record).
    """
    view = pair.view
    frame = backtest_frame(pair)
    recording = source.recording
    out: dict[str, LegFunding] = {}
    if frame.empty:
        return out
    start = pd.Timestamp(frame.index[0])
    end = pd.Timestamp(frame.index[-1]) + pd.Timedelta(seconds=view.bar_seconds)
    for leg, name in zip(view.legs, view.names, strict=True):
        if not leg.perpetual:
            continue
        if recording is None:
            out[name] = LegFunding(None, f"funding not included: {name} has no funding record")
            continue
        record = recording.funding(leg, start.value // 1_000_000, end.value // 1_000_000)
        out[name] = _leg_funding(name, record, start, end)
    return out


def _leg_funding(
    name: str, record: queries.FundingRecord, start: pd.Timestamp, end: pd.Timestamp
) -> LegFunding:
    """What a backtest from ``start`` to ``end`` can book from ``record``."""
    if not record.stored:
        return LegFunding(
            None,
            f"funding not included for {name}: this database predates funding records "
            "(schema version 5); run `python db_setup.py --db <file>` and let the daemon "
            "record the USD-M symbol",
        )
    known, next_time = _known_times(record), _next(record)
    if not len(known) and next_time is None:
        return LegFunding(
            None,
            f"funding not included for {name}: no funding rate is stored for it (the "
            "daemon records them for the USD-M symbols it follows)",
        )
    gaps = tuple(quant.funding_gaps(known, start, end, next_time=next_time))
    n = len(record.rates)
    note = f"{n:,} settlement(s) of {name} booked"
    if gaps:
        spans = "; ".join(f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC" for a, b in gaps)
        note += f"; settlements missing ({spans}): funding there is not included"
    return LegFunding(record.rates, note, n, gaps)


def _known_times(record: queries.FundingRecord) -> pd.DatetimeIndex:
    """The stored settlement times in and next to the record's range."""
    outside = [_ms(t) for t in (record.before_ms, record.after_ms) if t is not None]
    return pd.DatetimeIndex([*record.rates.index, *outside]).sort_values()


def _next(record: queries.FundingRecord) -> pd.Timestamp | None:
    """The next funding time the live feed announced, when there is a live row."""
    return _ms(record.live.next_funding_ms) if record.live is not None else None


def _market(leg: Leg) -> str:
    """The market ``quant.backtest`` knows a leg by: only a perpetual may fund."""
    return "usdm" if leg.perpetual else "spot"


def _ms(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def run_backtest(
    pair: PairData,
    entry: float,
    exit_: float,
    fee_bps: float | tuple[float, float] | None = None,
    funding: dict[str, LegFunding] | None = None,
) -> quant.BacktestResult:
    """``quant.backtest`` on the raw closes with :func:`backtest_frame`'s z and hedge.

    With log prices the hedge is a ratio of returns, so the legs are sized in value.
    :param fee_bps: one rate for both legs or ``(y, x)``; None for each leg's venue's
        standard taker rate (:func:`leg_fees`).
    :param funding: :func:`backtest_funding`'s result; a perpetual leg whose rates are
        there pays or receives them at funding times. None: no funding booked.
    """
    view = pair.view
    frame = backtest_frame(pair)
    closes = pair.fitted()[0].loc[frame.index]
    if fee_bps is None:
        (fee_y, _), (fee_x, _) = leg_fees(view)
        fee_bps = (fee_y, fee_x)
    rates = {name: f.rates for name, f in (funding or {}).items() if f.rates is not None}
    return quant.backtest(
        closes[view.name_y],
        closes[view.name_x],
        frame["zscore"],
        frame["hedge_ratio"],
        entry=entry,
        exit=exit_,
        fee_bps=fee_bps,
        log_prices=view.log_prices,
        venue=(_market(view.leg_y), _market(view.leg_x)),
        funding_y=rates.get(view.name_y),
        funding_x=rates.get(view.name_x),
    )


@dataclass(frozen=True)
class SpotPerp:
    """A coin's spot against its perpetual on the Pair tab: the basis per bar (bps) and
    the carry funding pays over the view (``quant.funding_carry``), with the record it
    rests on."""

    spot: str  # the legs' names
    perp: str
    basis: pd.Series
    rates: pd.Series  # the perpetual's settled rates in the view, by funding time
    carry: quant.FundingCarry
    live: queries.FundingLive | None
    gaps: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    start: pd.Timestamp
    end: pd.Timestamp
    stored: bool  # the database has funding tables (schema version 5)


def spot_perp(source: Source, pair: PairData) -> SpotPerp | None:
    """Basis and carry of a spot-perpetual pair over its view; None for any other pair
    or before both legs have aligned bars."""
    view = pair.view
    names = view.spot_perp()
    if names is None or pair.closes is None or pair.closes.empty:
        return None
    spot, perp = names
    closes = pair.closes
    basis = quant.basis_bps(closes[spot], closes[perp])
    start = pd.Timestamp(closes.index[0])
    end = pd.Timestamp(closes.index[-1]) + pd.Timedelta(seconds=view.bar_seconds)
    perp_leg = view.leg_y if perp == view.name_y else view.leg_x
    recording = source.recording
    record = (
        recording.funding(perp_leg, start.value // 1_000_000, end.value // 1_000_000)
        if recording is not None
        else None
    )
    if record is None:
        empty = pd.Series([], dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
        carry = quant.funding_carry(empty, min_settlements=MIN_FUNDING_SETTLEMENTS)
        return SpotPerp(spot, perp, basis, empty, carry, None, ((start, end),), start, end, False)
    live = record.live
    carry = quant.funding_carry(
        record.rates,
        previous_time=_ms(record.before_ms) if record.before_ms is not None else None,
        next_rate=live.rate if live is not None else None,
        next_time=_ms(live.next_funding_ms) if live is not None else None,
        min_settlements=MIN_FUNDING_SETTLEMENTS,
    )
    gaps = tuple(quant.funding_gaps(_known_times(record), start, end, next_time=_next(record)))
    return SpotPerp(spot, perp, basis, record.rates, carry, live, gaps, start, end, record.stored)


def scan_legs(source: Source, view: View) -> tuple[list[Leg], list[str]]:
    """The legs the correlation matrix and scanner cover: every leg of the venues on
    screen (at most ``MAX_SCAN_SYMBOLS``), and their names (:func:`settings.leg_names`)."""
    legs = [leg for leg in source.legs() if leg.venue in view.venues][:MAX_SCAN_SYMBOLS]
    return legs, leg_names(legs)


def all_closes(source: Source, view: View, end_s: int) -> pd.DataFrame:
    """Closes of every leg of :func:`scan_legs` on one clock, each carried at most
    ``MAX_STALE_BARS`` bars; NaN where a leg has no fresh close."""
    closes = {}
    for leg, name in zip(*scan_legs(source, view), strict=True):
        bars = leg_bars(source, view, leg, end_s)
        if not bars.empty:
            traded = tradable_closes(bars, view)
            if len(traded):
                closes[name] = traded
    if len(closes) < 2:
        return pd.DataFrame()
    # how="all": one stopped leg leaves NaN in its own column, not a hole in every pair.
    return quant.align_closes(closes, max_staleness=max_staleness(view), how="all")


def correlation_inputs(view: View) -> tuple:
    """What of a view :func:`correlation` depends on, as a cache key: the venues on screen
    (whose legs it covers), the bars (timeframe, lookback, liquidity floor) and log prices;
    not the pair on screen, its window, hedge method or z levels, so changing those does
    not run the scan again."""
    return (
        tuple(sorted(view.venues)),
        view.timeframe,
        view.lookback_s,
        view.log_prices,
        view.min_volume,
        view.min_trades,
    )


def correlation(source: Source, view: View, end_s: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return-correlation matrix and the cointegration scan over every leg of the venues
    on screen; the same for every view with the same :func:`correlation_inputs`."""
    closes = all_closes(source, view, end_s)
    if closes.shape[1] < 2 or len(closes) < 3:
        return pd.DataFrame(), pd.DataFrame()
    matrix = quant.correlation_matrix(closes)
    scan = quant.scan_pairs(closes, log_prices=view.log_prices, min_obs=SCAN_MIN_BARS)
    return matrix, scan
