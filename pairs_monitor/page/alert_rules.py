"""Alert rules and their firings as the page shows and edits them.

The daemon judges the rules (``pairs_monitor.alerts``, docs/alerts.md); the page only
reads ``alert_rules``, ``alert_events`` and ``alert_deliveries``, adds, pauses and deletes
rules, and acknowledges firings. Rule kinds and their check are the alerts package's
(``rules.KINDS``, ``rules.validate``), so the page, the command line and the daemon agree
on what a rule may be.

The page must never alter market data, yet it writes rules. So these writes go through a
small connection of their own whose SQLite authorizer refuses every write to anything but
the alert tables (and any schema change, PRAGMA or ATTACH): a bug or a crafted value can
at worst touch alerts, never ``trades`` or ``bars_1s``. On PostgreSQL the connection logs
in with the URL's login and takes the page's role (``SET ROLE pairs_page``), which the
server lets SELECT everything and write only what the authorizer allows on SQLite
(``store.postgres.PAGE_GRANTS``). The page never inserts into ``alert_events``: only the
daemon fires rules.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from pairs_monitor.alerts import rules
from pairs_monitor.alerts.rules import Rule, RuleError
from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import (
    ALERT_BUSY_TIMEOUT_S,
    ALERT_HISTORY_ROWS,
    Leg,
    store_target,
)
from pairs_monitor.store import postgres
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.postgres import PAGE_ROLE, PgConnection
from pairs_monitor.store.target import StoreTarget

_STATE_COLUMNS = "last_value, last_bar_time_s, checked_ms, note"
_ALLOWED_ALWAYS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_TRANSACTION,
    sqlite3.SQLITE_SAVEPOINT,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
# What the page may write: rules (add, pause, resume, delete), a firing's acknowledgement,
# and the firings and deliveries a deleted rule takes with it (its cascade). Never a new
# firing: only the daemon fires rules.
PAGE_WRITES: dict[int, frozenset[str]] = {
    sqlite3.SQLITE_INSERT: frozenset({"alert_rules"}),
    sqlite3.SQLITE_UPDATE: frozenset({"alert_rules", "alert_events"}),
    sqlite3.SQLITE_DELETE: frozenset({"alert_rules", "alert_events", "alert_deliveries"}),
}
_EVENT_COLUMNS_UPDATED = frozenset({"acked_ms"})


class AlertError(Exception):
    """A rule that cannot be stored as given (the message says what to change)."""


def alerts_only_authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    """SQLite authorizer: reads anywhere; writes only what :data:`PAGE_WRITES` allows
    (an update of a firing only to its ``acked_ms``); nothing else."""
    if action in _ALLOWED_ALWAYS:
        return sqlite3.SQLITE_OK
    if db_name != "main" or arg1 not in PAGE_WRITES.get(action, ()):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_UPDATE and arg1 == "alert_events":
        return sqlite3.SQLITE_OK if arg2 in _EVENT_COLUMNS_UPDATED else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def new_rule(
    kind: str,
    leg: Leg | None,
    threshold: float,
    rearm: float,
    *,
    leg_x: Leg | None = None,
    cooldown_s: int = 0,
    timeframe: str | None = None,
    window: int | None = None,
    method: str | None = None,
    log_prices: bool | None = None,
) -> Rule:
    """A rule as the daemon reads it, each kind keeping only the fields it is judged on
    (as ``ingest.py alerts add`` stores it).

    :param leg: the symbol watched, Y's leg of a pair; ``Leg(venue, "*")`` for every
        symbol of a venue (``gap_abandoned``); ignored by ``writer_failing``.
    :param leg_x: X's leg of a pair kind; its venue is stored as ``venue_x`` only when it
        is not Y's.
    """
    pair = kind in rules.PAIR_KINDS
    if kind == "writer_failing" or leg is None:
        venue, symbol = rules.ANY, rules.ANY
    else:
        venue, symbol = leg
    x = leg_x if pair else None
    return Rule(
        rule_id=0,
        kind=kind,
        venue=venue,
        symbol=symbol,
        threshold=float(threshold),
        rearm=float(rearm),
        symbol_x=x.symbol if x else None,
        venue_x=x.venue if x and x.venue != venue else None,
        timeframe=timeframe if kind in rules.VIEW_KINDS else None,
        window=window if kind in rules.VIEW_KINDS else None,
        method=method if kind.startswith("zscore") else None,
        log_prices=log_prices if pair else None,
        cooldown_s=int(cooldown_s),
    )


def describe(rule: Rule) -> str:
    """What the rule watches and when it fires, e.g. ``ETHUSDT/BTCUSDT on sim: z-score
    above 2``; a pair across venues names its legs as the page does (``BTCUSDT · spot``)."""
    what = f"{rules.KINDS.get(rule.kind, rule.kind)} {rule.threshold:g}"
    if rule.kind in rules.PAIR_KINDS and rule.venue_x:
        y, x = Leg(*rule.leg_y), Leg(*rule.leg_x)
        return f"{y.label}/{x.label}: {what}"
    if rule.kind not in rules.KINDS:  # a kind of a newer schema: said, never raised
        return f"{rule.symbol} on {rule.venue}: {what}"
    return f"{rule.target()}: {what}"


@dataclass(frozen=True)
class RuleState:
    """A rule and what the daemon's evaluator last wrote about it."""

    rule: Rule
    last_value: float | None
    last_bar_time_s: int | None
    checked_ms: int | None  # when the daemon last judged it; None: never
    note: str | None  # why there is no value (waiting for bars, a stale leg, ...)

    def judged_age_s(self, now: int) -> float | None:
        """Seconds since the daemon last judged the rule; None when it never has."""
        return None if self.checked_ms is None else max(0.0, (now - self.checked_ms) / 1000)

    def unjudged(self, now: int, stale_ms: int) -> bool:
        """True when no daemon has judged the rule for ``stale_ms`` (a rule younger than
        that has not been missed yet)."""
        if self.checked_ms is None:
            return now - self.rule.created_ms > stale_ms
        return now - self.checked_ms > stale_ms


@dataclass(frozen=True)
class Delivery:
    """One channel's delivery of a firing (``alert_deliveries``)."""

    target: str  # the URL with its secrets masked
    status: str  # pending | sent | failed
    attempts: int
    next_attempt_ms: int | None
    last_error: str | None
    sent_ms: int | None

    def describe(self, now: int) -> str:
        """``json://host/hook: sent (2 attempts)``, ``... pending, attempt 1 failed (HTTP
        500), next in 4 s``, ``... failed after 12 attempts (error)``."""
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.status == "sent":
            return f"{self.target}: sent ({tries})"
        error = f" ({self.last_error})" if self.last_error else ""
        if self.status == "failed":
            return f"{self.target}: failed after {tries}{error}"
        if not self.attempts:
            return f"{self.target}: pending, not tried yet"
        wait = ""
        if self.next_attempt_ms is not None:
            wait = f", next in {max(0, self.next_attempt_ms - now) / 1000:,.0f} s"
        return f"{self.target}: pending, {tries} failed{error}{wait}"


@dataclass(frozen=True)
class Firing:
    """One row of ``alert_events`` with its deliveries."""

    event_id: int
    rule_id: int
    fired_ms: int
    bar_time_s: int | None
    value: float
    threshold: float | None
    message: str
    acked_ms: int | None
    deliveries: list[Delivery] = field(default_factory=list)

    def delivery_text(self, now: int) -> str:
        """Each channel's state, or that no channel was configured when it fired."""
        if not self.deliveries:
            return "not sent anywhere: the daemon had no --notify URL"
        return "; ".join(d.describe(now) for d in self.deliveries)


def connect_as_page(target: StoreTarget, busy_timeout_s: float) -> PgConnection:
    """A PostgreSQL connection in the page's role: the URL's login, then ``SET ROLE
    pairs_page``, so the server refuses any write but the alert tables'.

    :raises psycopg.errors.InsufficientPrivilege: when the login may not take the role,
        saying what to GRANT (and who may).
    """
    assert target.url is not None
    raw = postgres.connect(target.url, application_name="pairs-monitor page")
    try:
        raw.execute(
            pgsql.SQL("SET ROLE {role}").format(role=pgsql.Identifier(PAGE_ROLE)).as_string(raw)
        )
        # A lock the daemon's writer holds is waited for this long at most, as SQLite's
        # busy timeout does; then the write fails and the page says so.
        raw.execute(f"SET lock_timeout = {int(busy_timeout_s * 1000)}")
    except psycopg.errors.InsufficientPrivilege:
        login = raw.info.user
        raw.close()
        raise psycopg.errors.InsufficientPrivilege(
            f"the login {login} of {target.redacted} may not take the page's role "
            f"{PAGE_ROLE}, through which the page adds rules and acknowledges firings "
            f"(it can write nothing else): the database's owner runs "
            f'GRANT {PAGE_ROLE} TO "{login}"; (created by db_setup.py)'
        ) from None
    except BaseException:
        raw.close()
        raise
    return PgConnection(raw)


class AlertStore:
    """The page's only write connection, limited to the alert tables: by an authorizer
    on SQLite, by the page's role (``pairs_page``) on PostgreSQL.

    :param path: the store's name on the page (``settings.store_name``): the database file,
        or a PostgreSQL URL without its password (it must already have the schema).
    :param busy_timeout_s: how long a write waits for the daemon's writer before giving up;
        kept short so a refresh never stalls behind a long ingest transaction.
    :raises psycopg.Error: on PostgreSQL, for a server that cannot be reached or a login
        that may not take the page's role (what to GRANT is said).
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = ALERT_BUSY_TIMEOUT_S) -> None:
        self.target = store_target(path)
        # The file, or for a URL its text without the password (as TradeWriter.db_path).
        self.path = self.target.path or Path(self.target.redacted)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._dropped = False  # the server dropped the connection: connect on next use
        self._conn: Connection = self._connect()

    def _connect(self) -> Connection:
        if self.target.path is None:
            return connect_as_page(self.target, self._busy_timeout_s)
        conn = sqlite3.connect(
            self.target.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA foreign_keys=ON")  # firings go with their rule
        conn.set_authorizer(alerts_only_authorizer)
        return conn

    def _live(self) -> Any:
        """The connection, opened again when the server dropped the last one (a restart):
        one failed refresh, then the page writes and reads again. Call holding the lock.

        A store.connection.Connection, typed Any as sqlite3's rows are (psycopg's typed
        rows would make each ``fetchone()`` check for None)."""
        if self._dropped:
            self._conn = self._connect()
            self._dropped = False
        return self._conn

    def _failed(self) -> None:
        """After an error: note a PostgreSQL connection the server dropped."""
        if isinstance(self._conn, PgConnection) and self._conn.raw.broken:
            self._conn.close()
            self._dropped = True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def execute(self, sql: str, params: Iterable = ()) -> Any:
        """Run one statement through the guarded connection (tests use this to probe it);
        its cursor."""
        with self._guarded() as conn:
            return conn.execute(sql, tuple(params))

    @contextmanager
    def _guarded(self) -> Iterator[Any]:
        """The connection, holding the lock; a connection the server dropped is noted."""
        with self._lock:
            try:
                yield self._live()
            except psycopg.Error:
                self._failed()
                raise

    def judged_by_daemon(self) -> bool:
        """True once the database is at schema version 6, where the daemon judges the rules
        and records deliveries; checked on each call, since a daemon started later
        migrates the file under a running page. A PostgreSQL store starts at version 8."""
        if self.target.is_postgres:
            return True
        with self._guarded() as conn:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_deliveries'"
            ).fetchone()
        return row is not None

    # -- rules ---------------------------------------------------------------------

    def rules(self) -> list[RuleState]:
        """Every rule with the daemon's last judgement of it, oldest first."""
        sql = (
            f"SELECT {rules.RULE_COLUMNS}, {_STATE_COLUMNS}"  # noqa: S608 (constant columns)
            " FROM alert_rules ORDER BY rule_id"
        )
        with self._guarded() as conn:
            rows = conn.execute(sql).fetchall()
        width = len(rules.RULE_COLUMNS.split(","))
        return [RuleState(rules.rule_from_row(row[:width]), *row[width:]) for row in rows]

    def unjudged_for_ms(self, now: int) -> tuple[int, int | None]:
        """How many rules are enabled, and how long since the daemon last judged any of
        them (since the oldest was made, when none ever was); ``(0, None)`` without
        enabled rules. Cheap enough for the banner's refresh."""
        with self._guarded() as conn:
            count, checked, created = conn.execute(
                "SELECT count(*), max(checked_ms), min(created_ms) FROM alert_rules"
                " WHERE enabled = 1"
            ).fetchone()
        if not count:
            return 0, None
        return int(count), now - (checked if checked is not None else created)

    def add_rule(self, rule: Rule) -> int:
        """Store a new enabled, armed rule; return its id.

        :raises AlertError: for a rule the daemon could not judge (``rules.validate``'s
            message), or one that repeats a stored rule (the same kind, legs, threshold
            and view, as ``ingest.py alerts add`` compares them): its id is named.
        """
        try:
            with self._guarded() as conn:
                return rules.store_rule(conn, rule, now_ms())
        except rules.DuplicateRule as exc:
            raise AlertError(
                f"{exc} ({describe(rule)}); nothing added: change the threshold or the view, "
                "or resume that one"
            ) from exc
        except RuleError as exc:
            raise AlertError(str(exc)) from exc

    def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule with (by cascade) its firings and their deliveries; False when
        there was no such rule (deleted meanwhile by another client)."""
        with self._guarded() as conn:
            return (
                conn.execute("DELETE FROM alert_rules WHERE rule_id = ?", (rule_id,)).rowcount > 0
            )

    def set_enabled(self, rule_id: int, enabled: bool) -> bool:
        """Resume (re-armed) or pause a rule; False when there is no such rule."""
        with self._guarded() as conn:
            return (
                conn.execute(
                    "UPDATE alert_rules SET enabled = ?,"
                    " armed = CASE WHEN ? = 1 THEN 1 ELSE armed END WHERE rule_id = ?",
                    (int(enabled), int(enabled), rule_id),
                ).rowcount
                > 0
            )

    # -- firings -------------------------------------------------------------------

    def firings(self, limit: int = ALERT_HISTORY_ROWS, *, unacked: bool = False) -> list[Firing]:
        """The most recent firings, newest first, each with its deliveries.

        :param unacked: only those not yet acknowledged (``acked_ms IS NULL``).
        """
        with self._guarded() as conn:
            events = conn.execute(
                "SELECT event_id, rule_id, fired_ms, bar_time_s, value, threshold, message,"
                " acked_ms FROM alert_events WHERE ? = 0 OR acked_ms IS NULL"
                " ORDER BY event_id DESC LIMIT ?",
                (int(unacked), limit),
            ).fetchall()
            deliveries = self._deliveries(conn, [row[0] for row in events])
        return [
            Firing(
                event_id=row[0],
                rule_id=row[1],
                fired_ms=row[2],
                bar_time_s=row[3],
                value=row[4],
                threshold=row[5],
                message=row[6],
                acked_ms=row[7],
                deliveries=deliveries.get(row[0], []),
            )
            for row in events
        ]

    def count_unacked(self) -> tuple[int, int | None]:
        """How many firings wait for acknowledgement, and the newest one's id."""
        with self._guarded() as conn:
            count, newest = conn.execute(
                "SELECT count(*), max(event_id) FROM alert_events WHERE acked_ms IS NULL"
            ).fetchone()
        return int(count), newest

    def _deliveries(self, conn: Any, event_ids: Sequence[int]) -> dict[int, list[Delivery]]:
        if not event_ids:
            return {}
        marks = ", ".join("?" * len(event_ids))
        columns = "event_id, target, status, attempts, next_attempt_ms, last_error, sent_ms"
        rows = conn.execute(
            f"SELECT {columns} FROM alert_deliveries WHERE event_id IN ({marks})"  # noqa: S608
            " ORDER BY event_id, target",
            tuple(event_ids),
        ).fetchall()
        found: dict[int, list[Delivery]] = {}
        for event_id, *rest in rows:
            found.setdefault(event_id, []).append(Delivery(*rest))
        return found

    def acknowledge(self, event_ids: Iterable[int]) -> int:
        """Acknowledge these firings (those not already); return how many were."""
        stamp = now_ms()
        with self._guarded() as conn:
            return conn.executemany(
                "UPDATE alert_events SET acked_ms = ? WHERE event_id = ? AND acked_ms IS NULL",
                [(stamp, event_id) for event_id in event_ids],
            ).rowcount

    def acknowledge_through(self, newest_id: int) -> int:
        """Acknowledge every firing up to ``newest_id`` (the newest one the user saw: a
        firing stored after the page drew its list is not acknowledged unseen)."""
        with self._guarded() as conn:
            return conn.execute(
                "UPDATE alert_events SET acked_ms = ? WHERE acked_ms IS NULL AND event_id <= ?",
                (now_ms(), newest_id),
            ).rowcount
