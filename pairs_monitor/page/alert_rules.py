"""Alert rules and fired alerts, stored in the database's ``alert_rules``/``alert_events``.

The page must never alter market data, yet alerts have to be stored. So alerts get their
own small write connection whose SQLite authorizer refuses every write to anything but
those two tables (and any schema change, PRAGMA or ATTACH): a bug or a crafted value can
at worst touch alerts, never ``trades`` or ``bars_1s``.

Hysteresis: a rule is ``armed`` until its value crosses ``threshold``; it then fires once
and stays disarmed until the value comes back past ``rearm``. A value hovering around the
threshold therefore fires one alert, not one per refresh.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import ALERT_BUSY_TIMEOUT_S, ALERT_HISTORY_ROWS, Leg
from pairs_monitor.quant import PairMethod

# alert_deliveries (schema version 6) only through the cascade of a deleted rule's events.
ALERT_TABLES = frozenset({"alert_rules", "alert_events", "alert_deliveries"})
KINDS: dict[str, str] = {
    "zscore_above": "z-score above",
    "zscore_below": "z-score below",
    "price_above": "price above",
    "price_below": "price below",
    "volume_spike": "volume spike (bar volume / its rolling mean) above",
}
_RISING = {"zscore_above", "price_above", "volume_spike"}

_RULE_COLUMNS = (
    "rule_id, kind, venue, symbol, symbol_x, threshold, rearm, enabled, armed, created_ms"
)
# Schema version 2: the view a z-score or volume rule is judged in (NULL in older rules).
_VIEW_COLUMNS = ("timeframe", "window_bars", "hedge_method", "log_prices")
# Schema version 5: the X leg's venue of a z-score rule across venues (NULL: ``venue``).
_VENUE_X_COLUMN = "venue_x"
_ALLOWED_ALWAYS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_TRANSACTION,
    sqlite3.SQLITE_SAVEPOINT,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


class AlertError(Exception):
    """A rule that cannot be stored as given (the message says what to change)."""


def alerts_only_authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    """SQLite authorizer: reads anywhere, writes only to the alert tables, nothing else."""
    if action in _ALLOWED_ALWAYS:
        return sqlite3.SQLITE_OK
    if action in _WRITES and db_name == "main" and arg1 in ALERT_TABLES:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


@dataclass(frozen=True)
class Rule:
    rule_id: int
    kind: str
    venue: str
    symbol: str
    symbol_x: str | None
    threshold: float
    rearm: float
    enabled: bool
    armed: bool
    created_ms: int
    # The view it is judged in (z-score: all four; volume spike: timeframe and window);
    # None in a rule made before they were stored: judged in each page's own view.
    timeframe: str | None = None
    window: int | None = None
    method: PairMethod | None = None
    log_prices: bool | None = None
    # The X leg's venue when it is not ``venue`` (a pair across venues); None: the same.
    venue_x: str | None = None

    @property
    def legs(self) -> tuple[Leg, Leg] | None:
        """The pair a z-score rule watches, Y's leg and X's; None for other kinds."""
        if self.symbol_x is None:
            return None
        return Leg(self.venue, self.symbol), Leg(self.venue_x or self.venue, self.symbol_x)

    @property
    def venues(self) -> tuple[str, ...]:
        """The venues the rule reads, its own first."""
        return tuple(dict.fromkeys(v for v in (self.venue, self.venue_x) if v))

    @property
    def has_view(self) -> bool:
        """True when the rule carries its own view (the same value on every page)."""
        return self.timeframe is not None and self.window is not None

    def describe(self) -> str:
        """``BTCUSDT/ETHUSDT on sim: z-score above 2``; across venues the legs' labels,
        ``BTCUSDT · spot/BTCUSDT · perp: z-score above 2``."""
        kind = KINDS.get(self.kind, self.kind)  # a kind of a newer schema: its name
        if self.venue_x:
            y, x = (leg.label for leg in self.legs or ())
            return f"{y}/{x}: {kind} {self.threshold:g}"
        target = f"{self.symbol}/{self.symbol_x}" if self.symbol_x else self.symbol
        return f"{target} on {self.venue}: {kind} {self.threshold:g}"

    def judged_in(self) -> str:
        """The settings the rule's value is computed with, in words."""
        if self.kind.startswith("price"):
            return "last trade"
        if not self.has_view:
            return "each page's own view (rule made before settings were stored)"
        text = f"{self.timeframe} bars, window {self.window}"
        if self.kind.startswith("zscore"):
            text += f", {self.method}, {'log' if self.log_prices else 'raw'} prices"
        return text


@dataclass(frozen=True)
class Fired:
    rule: Rule
    value: float
    bar_time_s: int | None
    message: str


def step(kind: str, armed: bool, value: float, threshold: float, rearm: float):
    """One hysteresis step: return ``(fires, armed_after)`` for a new value.

    Rising kinds fire at ``value >= threshold`` and re-arm at ``value <= rearm``; falling
    kinds mirror that. A NaN value changes nothing.
    """
    if value != value:  # NaN: not enough data yet
        return False, armed
    rising = kind in _RISING
    crossed = value >= threshold if rising else value <= threshold
    back = value <= rearm if rising else value >= rearm
    if armed and crossed:
        return True, False
    if not armed and back:
        return False, True
    return False, armed


def validate_rule(kind: str, threshold: float, rearm: float, symbol_x: str | None) -> None:
    """Raise :class:`AlertError` unless the rule makes sense."""
    if kind not in KINDS:
        raise AlertError(f"unknown rule kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind.startswith("zscore") and not symbol_x:
        raise AlertError("a z-score rule needs both legs of the pair")
    if kind in _RISING and not rearm < threshold:
        raise AlertError(
            f"re-arm level {rearm:g} must be below the threshold {threshold:g} for a rule "
            "that fires on a rise, or it would fire again at once"
        )
    if kind not in _RISING and not rearm > threshold:
        raise AlertError(
            f"re-arm level {rearm:g} must be above the threshold {threshold:g} for a rule "
            "that fires on a fall, or it would fire again at once"
        )
    if kind.startswith("price") and threshold <= 0:
        raise AlertError("a price level must be positive")
    if kind == "volume_spike" and threshold <= 0:
        raise AlertError(
            "a volume-spike threshold is a ratio to the recent mean volume: use a number "
            "above 1 (e.g. 3 for three times the average bar)"
        )


class AlertStore:
    """The page's only write connection, limited to the alert tables by an authorizer.

    :param path: the database file (it must already have the schema).
    :param busy_timeout_s: how long a write waits for the daemon's writer before giving up;
        kept short so a live refresh never stalls behind a long ingest transaction.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = ALERT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA foreign_keys=ON")  # events go with their rule
        self._conn.set_authorizer(alerts_only_authorizer)
        # A file not yet migrated to version 2 has no view columns: rules then carry none;
        # before version 5 no venue_x: every rule's legs trade on one venue.
        names = {d[0] for d in self._conn.execute("SELECT * FROM alert_rules LIMIT 0").description}
        self.stores_views = set(_VIEW_COLUMNS) <= names
        self.stores_venue_x = self.stores_views and _VENUE_X_COLUMN in names
        self._columns = _RULE_COLUMNS + (
            ", " + ", ".join(_VIEW_COLUMNS) if self.stores_views else ""
        )
        if self.stores_venue_x:
            self._columns += f", {_VENUE_X_COLUMN}"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def execute(self, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        """Run one statement through the guarded connection (tests use this to probe it)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    # -- rules ---------------------------------------------------------------------

    def rules(self, venues: Iterable[str] | None = None) -> list[Rule]:
        """All rules, or those reading any of ``venues`` (either leg's), oldest first."""
        sql = f"SELECT {self._columns} FROM alert_rules"  # noqa: S608 (constant columns)
        params: tuple = ()
        if venues is not None:
            params = tuple(venues)
            marks = ", ".join("?" * len(params))
            sql += f" WHERE venue IN ({marks})"
            if self.stores_venue_x:
                sql += f" OR venue_x IN ({marks})"
                params += params
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY rule_id", params).fetchall()
        return [_rule(row) for row in rows]

    def add_rule(
        self,
        kind: str,
        venue: str,
        symbol: str,
        threshold: float,
        rearm: float,
        symbol_x: str | None = None,
        *,
        timeframe: str | None = None,
        window: int | None = None,
        method: PairMethod | None = None,
        log_prices: bool | None = None,
        venue_x: str | None = None,
    ) -> int:
        """Store a new armed rule; return its id. :raises AlertError: for a bad rule.

        :param timeframe: with ``window`` (and for z-score rules ``method`` and
            ``log_prices``): the view the rule is judged in, stored with it so every page
            computes the same value. Price rules store none.
        :param venue_x: the X leg's venue of a z-score rule whose legs trade on two venues
            (a coin's spot against its perpetual); None or ``venue``: stored as NULL.
        """
        if not kind.startswith("zscore"):
            symbol_x = venue_x = None
            method = log_prices = None
        if kind.startswith("price"):
            timeframe = window = None
        if venue_x == venue:
            venue_x = None
        validate_rule(kind, threshold, rearm, symbol_x)
        if venue_x is not None and not self.stores_venue_x:
            raise AlertError(
                "this database predates rules across venues (schema version 5): run "
                "`python db_setup.py --db <file>` to migrate it, then add the rule"
            )
        row = [kind, venue, symbol, symbol_x, float(threshold), float(rearm), now_ms()]
        columns = "kind, venue, symbol, symbol_x, threshold, rearm, created_ms"
        if self.stores_views:
            columns += ", " + ", ".join(_VIEW_COLUMNS)
            row += [timeframe, window, method, None if log_prices is None else int(log_prices)]
        if self.stores_venue_x:
            columns += f", {_VENUE_X_COLUMN}"
            row.append(venue_x)
        marks = ", ".join("?" * len(row))
        with self._lock:
            cur = self._conn.execute(
                f"INSERT INTO alert_rules ({columns}, enabled, armed)"  # noqa: S608 (constants)
                f" VALUES ({marks}, 1, 1)",
                row,
            )
            rule_id = cur.lastrowid
        if rule_id is None:  # sqlite3 sets it after every INSERT that stored a row
            raise AlertError(f"the rule was not stored: {kind} {symbol}")
        return rule_id

    def delete_rule(self, rule_id: int) -> None:
        """Delete a rule and (by cascade) its history."""
        with self._lock:
            self._conn.execute("DELETE FROM alert_rules WHERE rule_id = ?", (rule_id,))

    def set_enabled(self, rule_id: int, enabled: bool) -> None:
        """Enable or pause a rule; enabling re-arms it."""
        with self._lock:
            self._conn.execute(
                "UPDATE alert_rules SET enabled = ?, armed = CASE WHEN ? THEN 1 ELSE armed END"
                " WHERE rule_id = ?",
                (int(enabled), int(enabled), rule_id),
            )

    # -- events --------------------------------------------------------------------

    def events(self, limit: int = ALERT_HISTORY_ROWS) -> pd.DataFrame:
        """The most recent fired alerts, newest first, with their rule's description."""
        sql = (
            "SELECT e.event_id, e.fired_ms, e.bar_time_s, e.value, e.message, e.rule_id,"
            " r.kind, r.venue, r.symbol, r.symbol_x FROM alert_events AS e"
            " JOIN alert_rules AS r USING (rule_id)"
            " ORDER BY e.fired_ms DESC, e.event_id DESC LIMIT ?"
        )
        with self._lock:
            cur = self._conn.execute(sql, (limit,))
            names = [d[0] for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=names)
        # coerce: an out-of-range stamp shows as NaT instead of failing the whole list
        frame["fired_at"] = pd.to_datetime(frame["fired_ms"], unit="ms", utc=True, errors="coerce")
        return frame

    def evaluate(self, readings: dict[int, tuple[float, int | None]]) -> list[Fired]:
        """Apply one hysteresis step to each rule given a reading ``{rule_id: (value, bar)}``.

        Rules are read without a lock first; only when a rule fires or re-arms is a write
        transaction taken, and the rule re-read inside it, so two sessions watching the
        same rule cannot both fire it and a quiet refresh never blocks the daemon.
        """
        if not readings:
            return []
        by_id = {r.rule_id: r for r in self.rules() if r.enabled}
        changes = {
            rid: step(rule.kind, rule.armed, readings[rid][0], rule.threshold, rule.rearm)
            for rid, rule in by_id.items()
            if rid in readings
        }
        if not any(fire or armed != by_id[rid].armed for rid, (fire, armed) in changes.items()):
            return []
        fired: list[Fired] = []
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for rid in changes:
                    row = conn.execute(
                        f"SELECT {self._columns} FROM alert_rules WHERE rule_id = ?",  # noqa: S608
                        (rid,),
                    ).fetchone()
                    if row is None or not row[7]:
                        continue
                    rule = _rule(row)
                    value, bar = readings[rid]
                    fire, armed = step(rule.kind, rule.armed, value, rule.threshold, rule.rearm)
                    if armed != rule.armed:
                        conn.execute(
                            "UPDATE alert_rules SET armed = ? WHERE rule_id = ?", (int(armed), rid)
                        )
                    if fire:
                        message = f"{rule.describe()}: value {value:.4g}"
                        conn.execute(
                            "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value,"
                            " message) VALUES (?, ?, ?, ?, ?)",
                            (rid, now_ms(), bar, float(value), message),
                        )
                        fired.append(Fired(rule, float(value), bar, message))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return fired


def _rule(row: tuple) -> Rule:
    return Rule(
        rule_id=row[0],
        kind=row[1],
        venue=row[2],
        symbol=row[3],
        symbol_x=row[4],
        threshold=row[5],
        rearm=row[6],
        enabled=bool(row[7]),
        armed=bool(row[8]),
        created_ms=row[9],
        timeframe=row[10] if len(row) > 10 else None,
        window=row[11] if len(row) > 11 else None,
        method=row[12] if len(row) > 12 else None,
        log_prices=None if len(row) <= 13 or row[13] is None else bool(row[13]),
        venue_x=row[14] if len(row) > 14 else None,
    )
