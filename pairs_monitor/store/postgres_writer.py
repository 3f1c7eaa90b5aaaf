"""The writer's batch on PostgreSQL: ``COPY`` into a staging table, then one statement
that inserts what is not stored and folds it into ``bars_1s``.

The thread, queue, batching and retries are ``writer.TradeWriter``'s; this is the
:class:`~pairs_monitor.store.writer.Storage` it drives for a ``postgresql://`` URL. The
promises are SQLite's: one transaction per batch; every trade exactly once (ids already
stored are dropped from the staging table before the insert, and a trade id staged twice
is inserted once); a malformed row set aside and counted, its batch committed; transient
errors (a lost connection, a server restart, serialization failures, deadlocks) retried
without losing or doubling a row: a COMMIT whose answer was lost is looked up by its
transaction id (``pg_xact_status``) before the batch is run again.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from psycopg import pq

from pairs_monitor.store import postgres, sql
from pairs_monitor.store.target import redact
from pairs_monitor.store.writer import Rejects, TradeRow

log = logging.getLogger("writer")

# The staging table, one per connection (temporary). Its constraints are SQLite's staging
# checks (sql.STAGING_DDL): a row failing one is set aside and its constraint named. Ids
# and times are NUMERIC here so that an integral float (1.7e15 from a JSON parser) is
# taken as on SQLite and a fractional one refused by a CHECK, not by the COPY's parser;
# the insert casts them to BIGINT. NaN is above every number in PostgreSQL, so the upper
# bounds refuse it along with the infinities. buyer_is_maker is BOOLEAN: COPY's text form
# reads 0/1 and Python's True/False alike and refuses 2.
STAGING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS incoming (
    venue TEXT NOT NULL CONSTRAINT venue_not_empty CHECK (venue <> ''),
    symbol TEXT NOT NULL CONSTRAINT symbol_not_empty CHECK (symbol <> ''),
    trade_id NUMERIC NOT NULL CONSTRAINT trade_id_whole_and_not_negative
        CHECK (trade_id >= 0 AND trade_id <= 9223372036854775807
               AND trade_id = trunc(trade_id)),
    trade_time_us NUMERIC NOT NULL CONSTRAINT trade_time_us_in_1970_to_2262
        CHECK (trade_time_us BETWEEN 0 AND {sql.MAX_TIME_US:d}
               AND trade_time_us = trunc(trade_time_us)),
    price DOUBLE PRECISION NOT NULL CONSTRAINT price_finite_and_positive
        CHECK (price > 0 AND price <= 1.7976931348623157e308),
    qty DOUBLE PRECISION NOT NULL CONSTRAINT qty_finite_and_not_negative
        CHECK (qty >= 0 AND qty <= 1.7976931348623157e308),
    buyer_is_maker BOOLEAN NOT NULL,
    CONSTRAINT quote_volume_finite CHECK (price * qty <= 1.7976931348623157e308)
)
"""
COPY_STAGING = (
    "COPY incoming (venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker) FROM STDIN"
)
# One pass over the batch: its days (for partitions) and whether any symbol's lowest id is
# not above the highest stored (a reconnect overlap, a backfill): only then are stored
# ids looked up.
SURVEY_STAGED = """
WITH b AS (SELECT venue, symbol, min(trade_id)::bigint AS lowest,
                  min(trade_time_us) AS first_us, max(trade_time_us) AS last_us
           FROM incoming GROUP BY venue, symbol)
SELECT floor(min(first_us) / 86400000000)::bigint, floor(max(last_us) / 86400000000)::bigint,
       coalesce(bool_or(b.lowest <= (SELECT max(t.trade_id) FROM trades AS t
                                     WHERE t.venue = b.venue AND t.symbol = b.symbol)), false)
FROM b
"""
STAGED_DAYS = "SELECT DISTINCT floor(trade_time_us / 86400000000)::bigint FROM incoming"
# By id alone, as SQLite's primary key: a stored trade is never stored again, whatever time
# a later copy carries.
DROP_ALREADY_STORED = """
DELETE FROM incoming AS i USING trades AS t
WHERE t.venue = i.venue AND t.symbol = i.symbol AND t.trade_id = i.trade_id::bigint
"""
# The rows to insert: the staged ones as they are, or, when an id may be staged twice
# (ids_surely_once), each id once, the earlier-timed copy. DISTINCT ON sorts the batch, a
# third of the statement's time (50,000 rows: 220 ms of 650 on a loaded machine), so
# only then.
STAGED_ROWS = """
    SELECT venue, symbol, trade_id::bigint, trade_time_us::bigint, price, qty,
           buyer_is_maker::int
    FROM incoming
"""
STAGED_ROWS_ONCE = """
    SELECT DISTINCT ON (venue, symbol, trade_id::bigint)
           venue, symbol, trade_id::bigint, trade_time_us::bigint, price, qty,
           buyer_is_maker::int
    FROM incoming
    ORDER BY venue, symbol, trade_id::bigint, trade_time_us
"""
# No ON CONFLICT: the ids stored are gone from the staging table by now, and a plain
# INSERT is a fifth cheaper than a speculative one; should another writer store one of
# them meanwhile (two daemons on one symbol), the unique key refuses the batch and its
# retry drops that id like any stored one. The bars are folded from exactly the rows
# inserted (RETURNING), so a repeat is never counted in a bar. A bar from klines
# (from_klines = 1, no trades folded in yet) is replaced by the trades' own values: what
# SQLite's v7 trigger does.
_STORE_AND_FOLD = """
WITH stored AS (
    INSERT INTO trades (venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker)
    {rows}
    RETURNING venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker
), bars AS (
    INSERT INTO bars_1s AS b (venue, symbol, bar_time_s, open, high, low, close, volume,
                              quote_volume, taker_buy_volume, trade_count,
                              first_trade_id, last_trade_id)
    SELECT venue, symbol, bar_time_s, prices[1], high, low, prices[cardinality(prices)],
           volume, quote_volume, taker_buy_volume, trade_count, first_trade_id, last_trade_id
    FROM (SELECT venue, symbol, trade_time_us / 1000000 AS bar_time_s,
                 array_agg(price ORDER BY trade_id) AS prices,  -- one sort: open and close
                 max(price) AS high, min(price) AS low, sum(qty) AS volume,
                 sum(price * qty) AS quote_volume,
                 sum(CASE WHEN buyer_is_maker = 1 THEN 0 ELSE qty END) AS taker_buy_volume,
                 count(*) AS trade_count, min(trade_id) AS first_trade_id,
                 max(trade_id) AS last_trade_id
          FROM stored
          GROUP BY venue, symbol, trade_time_us / 1000000) AS g
    ON CONFLICT (venue, symbol, bar_time_s) DO UPDATE SET
        open = CASE WHEN b.from_klines = 1 OR excluded.first_trade_id < b.first_trade_id
                    THEN excluded.open ELSE b.open END,
        close = CASE WHEN b.from_klines = 1 OR excluded.last_trade_id > b.last_trade_id
                     THEN excluded.close ELSE b.close END,
        high = CASE WHEN b.from_klines = 1 THEN excluded.high
                    ELSE greatest(b.high, excluded.high) END,
        low = CASE WHEN b.from_klines = 1 THEN excluded.low
                   ELSE least(b.low, excluded.low) END,
        volume = CASE WHEN b.from_klines = 1 THEN 0 ELSE b.volume END + excluded.volume,
        quote_volume = CASE WHEN b.from_klines = 1 THEN 0 ELSE b.quote_volume END
                       + excluded.quote_volume,
        taker_buy_volume = CASE WHEN b.from_klines = 1 THEN 0 ELSE b.taker_buy_volume END
                           + excluded.taker_buy_volume,
        trade_count = CASE WHEN b.from_klines = 1 THEN 0 ELSE b.trade_count END
                      + excluded.trade_count,
        first_trade_id = CASE WHEN b.from_klines = 1 THEN excluded.first_trade_id
                              ELSE least(b.first_trade_id, excluded.first_trade_id) END,
        last_trade_id = CASE WHEN b.from_klines = 1 THEN excluded.last_trade_id
                             ELSE greatest(b.last_trade_id, excluded.last_trade_id) END,
        from_klines = 0
)
SELECT count(*) FROM stored
"""
STORE_ALL_AND_FOLD = _STORE_AND_FOLD.format(rows=STAGED_ROWS)
STORE_ONCE_AND_FOLD = _STORE_AND_FOLD.format(rows=STAGED_ROWS_ONCE)
# The staged copies that lost to another copy of their id (different time, price or qty).
CONFLICTING_COPIES = """
SELECT DISTINCT venue, symbol, trade_id::bigint, trade_time_us, price, qty FROM incoming AS i
WHERE NOT EXISTS (
    SELECT 1 FROM trades AS t
    WHERE t.venue = i.venue AND t.symbol = i.symbol AND t.trade_id = i.trade_id::bigint
      AND t.trade_time_us = i.trade_time_us::bigint AND t.price = i.price AND t.qty = i.qty)
"""
CLEAR_STAGING = "TRUNCATE incoming"
WORK_MEM = "64MB"
COUNT_STAGED = "SELECT count(*) FROM incoming"

_IN_TRANSACTION = (
    pq.TransactionStatus.INTRANS,
    pq.TransactionStatus.INERROR,
    pq.TransactionStatus.ACTIVE,
)


def is_transient(exc: BaseException) -> bool:
    """Errors that pass: a lost or refused connection, a server shutting down or restarting,
    serialization failures, deadlocks, a full disk, a lock timeout (psycopg's
    OperationalError covers the SQLSTATE classes 08, 40, 53, 55, 57 and 58)."""
    return isinstance(exc, psycopg.OperationalError)


def is_row_error(exc: BaseException) -> bool:
    """True when a COPY failed for a value in it, not for the connection or the schema:
    a value psycopg cannot send, or one the server refuses (SQLSTATE class 22: data
    exception; 23: a constraint)."""
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return True
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state[:2] in ("22", "23")


class PostgresStorage:
    """A batch in a PostgreSQL database (see the module's docstring).

    :param url: ``postgresql://user:password@host:port/dbname``; migrated by ``open``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = redact(url)
        self._conn: postgres.PgConnection | None = None
        self._days: set[int] | None = None  # days with a partition; None: read again
        self._xid: int | None = None  # the open transaction's id
        self._lost_xid: int | None = None  # a transaction whose COMMIT got no answer

    @property
    def connection(self) -> postgres.PgConnection:
        """The write connection (what a submitted call receives)."""
        if self._conn is None:
            raise RuntimeError("the writer thread has not opened the database")
        return self._conn

    @property
    def _raw(self) -> psycopg.Connection:
        return self.connection.raw

    def open(self) -> None:
        """Create or migrate the schema, then connect."""
        postgres.setup(self.url)
        self._connect()

    def _connect(self) -> None:
        """(Re)connect and make the staging table, which lives as long as the session."""
        if self._conn is not None:
            self._conn.close()
        raw = postgres.connect(self.url, application_name="pairs-monitor writer")
        # A batch's sorts (ids, seconds) in memory: 4 MB, the default, spills 50,000 rows.
        raw.execute(f"SET work_mem = '{WORK_MEM}'")
        raw.execute(STAGING_DDL)
        self._conn = postgres.PgConnection(raw)
        self._days = None

    def _usable(self) -> bool:
        return self._conn is not None and not self._raw.closed and not self._raw.broken

    def begin(self) -> None:
        """Reconnect if the connection was lost, then BEGIN and note the transaction id."""
        if not self._usable():
            self._connect()
        raw = self._raw
        raw.execute("BEGIN")
        row = raw.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        self._xid = int(row[0]) if row else None

    def commit(self) -> None:
        """COMMIT; when the connection drops on the way, remember the transaction id so
        ``lost_commit_went_through`` can ask the server what became of it."""
        try:
            self._raw.execute("COMMIT")
        except psycopg.OperationalError:
            if not self._usable():
                self._lost_xid = self._xid
            raise

    def lost_commit_went_through(self) -> bool:
        """Ask a new connection whether the transaction whose COMMIT got no answer committed.

        :raises psycopg.OperationalError: while the server cannot be reached, or the
            transaction is still in progress (the writer waits and asks again).
        """
        xid = self._lost_xid
        if xid is None:
            return False
        if not self._usable():
            self._connect()
        row = self._raw.execute("SELECT pg_xact_status(%s::text::xid8)", (xid,)).fetchone()
        status = row[0] if row else None
        if status == "in progress":
            raise psycopg.OperationalError(f"transaction {xid} is still in progress")
        self._lost_xid = None
        log.warning(
            "the answer to a COMMIT was lost with the connection; the server says it %s",
            "committed" if status == "committed" else "did not commit: the batch is run again",
        )
        return status == "committed"

    def rollback(self) -> None:
        """Roll back the open transaction, if the connection still has one."""
        self._days = None  # partitions made in it are gone with it
        if not self._usable() or self._raw.info.transaction_status not in _IN_TRANSACTION:
            return
        # A lost connection takes its transaction with it; begin() reconnects.
        with contextlib.suppress(psycopg.OperationalError):
            self._raw.execute("ROLLBACK")

    def savepoint(self) -> None:
        """Open the call's savepoint."""
        self._raw.execute("SAVEPOINT call")

    def release(self) -> None:
        """Keep the call's writes."""
        self._raw.execute("RELEASE SAVEPOINT call")

    def rollback_to(self) -> None:
        """Undo the call's writes."""
        self._raw.execute("ROLLBACK TO SAVEPOINT call")
        self._raw.execute("RELEASE SAVEPOINT call")

    def is_transient(self, exc: BaseException) -> bool:
        """See :func:`is_transient`."""
        return is_transient(exc)

    def check_gone(self, force: bool = False) -> None:
        """A server database does not vanish under a path: the retries cover the rest."""
        del force

    def close(self, gone: bool) -> None:
        """Close the connection."""
        del gone
        if self._conn is not None:
            self._conn.close()

    def store_trades(self, rows: list[TradeRow], rejects: Rejects) -> tuple[int, int]:
        """COPY the rows into ``incoming``, make the days' partitions, drop ids stored
        before, insert the rest and fold them into ``bars_1s``."""
        raw = self._raw
        staged, rejected = self._stage(rows, rejects)
        if not staged:
            return 0, rejected
        survey = raw.execute(SURVEY_STAGED).fetchone()
        assert survey is not None
        first_day, last_day, may_overlap = survey
        self._ensure_partitions(first_day, last_day)
        if may_overlap:
            staged -= raw.execute(DROP_ALREADY_STORED).rowcount
        store = STORE_ALL_AND_FOLD if ids_surely_once(rows) else STORE_ONCE_AND_FOLD
        row = raw.execute(store).fetchone()
        stored = int(row[0]) if row else 0
        if stored != staged:
            for venue, symbol, trade_id, *_ in raw.execute(CONFLICTING_COPIES).fetchall():
                rejected += 1
                rejects.conflicting_copy(venue, symbol, trade_id)
        raw.execute(CLEAR_STAGING)
        return stored, rejected

    def _ensure_partitions(self, first_day: int, last_day: int) -> None:
        """Create the partitions of the batch's days that are missing."""
        raw = self._raw
        if self._days is None:
            self._days = postgres.partition_days(raw)
        if all(day in self._days for day in range(first_day, last_day + 1)):
            return
        days = {int(row[0]) for row in raw.execute(STAGED_DAYS).fetchall()}
        missing = days - self._days
        if missing:
            postgres.ensure_trade_partitions(raw, missing)
            self._days |= missing  # forgotten by rollback(), with the transaction

    def _stage(self, rows: list[TradeRow], rejects: Rejects) -> tuple[int, int]:
        """COPY ``rows`` into the staging table, each attempt under a savepoint.

        A COPY that fails on a bad value undoes only itself; its rows are copied again in
        halves, down to one row, which is then the bad one: set aside, reported. A few bad
        rows among 50,000 cost a few dozen COPYs.

        :returns: (rows staged, rows rejected).
        """
        if not rows:
            return 0, 0
        raw = self._raw
        raw.execute("SAVEPOINT stage")
        try:
            with raw.cursor() as cursor, cursor.copy(COPY_STAGING) as copy:
                for row in rows:
                    copy.write_row(row)
        except Exception as exc:
            if not is_row_error(exc):
                raise
            raw.execute("ROLLBACK TO SAVEPOINT stage")
            raw.execute("RELEASE SAVEPOINT stage")
            if len(rows) == 1:
                rejects.row(rows[0], _reason(exc))
                return 0, 1
            middle = len(rows) // 2
            staged_low, rejected_low = self._stage(rows[:middle], rejects)
            staged_high, rejected_high = self._stage(rows[middle:], rejects)
            return staged_low + staged_high, rejected_low + rejected_high
        raw.execute("RELEASE SAVEPOINT stage")
        return len(rows), 0


def ids_surely_once(rows: list[TradeRow]) -> bool:
    """True when no (venue, symbol, trade_id) is in ``rows`` twice, as the server will
    compare them: venue and symbol ``str`` and the id an ``int`` in every row, whose text
    the server reads back as the same value. Anything else (a float or text id, an
    unhashable value, a short row) is False: the batch is then sorted to keep each id once.

    In Python because the writer's thread spends 20 ms on 50,000 rows here, where the
    server's own check (a hash of the staged ids) costs 100 ms.
    """
    try:
        if not all(
            type(row[0]) is str and type(row[1]) is str and type(row[2]) is int for row in rows
        ):
            return False
        return len({row[:3] for row in rows}) == len(rows)
    except (TypeError, IndexError):
        return False


def _reason(exc: BaseException) -> str:
    """The error as the rejection log names it: its class, message, and the constraint."""
    diag: Any = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    message = str(exc).splitlines()[0] if str(exc) else ""
    suffix = f" ({constraint})" if constraint and constraint not in message else ""
    return f"{type(exc).__name__}: {message}{suffix}"
