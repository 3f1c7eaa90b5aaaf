"""Every SQL statement the page runs against market data: read-only, ``?`` parameters only.

Each function takes an open connection (``store.connection.connect_read_only``: a SQLite
file or a PostgreSQL database, the same ``?`` statements on either) and returns plain
Python values or DataFrames indexed by a UTC ``DatetimeIndex``. Column names follow
``db_setup.py``; bars come back in ``analytics``' bar layout (``trades``, ``vwap``,
``empty``) so they can go straight into ``analytics.resample_bars``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from pairs_monitor.quant import BAR_COLUMNS, empty_bars
from pairs_monitor.store import connection, schema
from pairs_monitor.store.connection import Connection

STORE_ERRORS = (sqlite3.DatabaseError, psycopg.Error)
"""What a read of either store raises when the store fails it: a damaged SQLite file, a
PostgreSQL server gone or refusing. The page catches these where it draws what it can."""

TICK_COLUMNS = ["time", "venue", "symbol", "trade_id", "price", "qty", "buyer_is_maker"]

# {from_klines} is the column (schema version 7) or 0 on an older database.
_BARS_SQL = """
SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume,
       trade_count, quote_volume / NULLIF(volume, 0), {from_klines}
FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?
ORDER BY bar_time_s DESC
LIMIT ?
"""
# The next (venue, symbol) after a given one: an index seek per step, so listing the
# symbols costs a few lookups rather than a scan of a table of millions of bars.
# {table} is bars_1s or kline_bars (a replayed 1h klines file has only the latter).
_NEXT_SERIES_SQL = """
SELECT venue, symbol FROM {table}
WHERE (venue, symbol) > (?, ?)
ORDER BY venue, symbol
LIMIT 1
"""
# Klines longer than a second (schema version 7): the lengths a series has, one seek
# each, then each length's bars by range on the primary key.
_NEXT_INTERVAL_SQL = """
SELECT interval_s FROM kline_bars
WHERE venue = ? AND symbol = ? AND interval_s > ?
ORDER BY interval_s
LIMIT 1
"""
_KLINE_BARS_SQL = """
SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume,
       trade_count, quote_volume / NULLIF(volume, 0), 1
FROM kline_bars
WHERE venue = ? AND symbol = ? AND interval_s = ? AND bar_time_s >= ? AND bar_time_s < ?
ORDER BY bar_time_s DESC
LIMIT ?
"""
_LATEST_KLINE_SQL = """
SELECT max(bar_time_s) FROM kline_bars
WHERE venue = ? AND symbol = ? AND interval_s = ? AND bar_time_s <= ?
"""
_FIRST_KLINE_SQL = """
SELECT min(bar_time_s) FROM kline_bars
WHERE venue = ? AND symbol = ? AND interval_s = ? AND bar_time_s >= ? AND bar_time_s < ?
"""
# Where the tape of trades begins: the trades_by_time index answers at once.
_TAPE_START_SQL = "SELECT min(trade_time_us) FROM trades WHERE venue = ? AND symbol = ?"
_KLINE_SPANS_SQL = """
SELECT interval_s, start_s, end_s, origin FROM kline_spans
WHERE venue = ? AND symbol = ?
ORDER BY interval_s, start_s
"""
# The gaps of a feed worth naming: open, abandoned, or covered by klines; newest first.
# {filled_from} and {covered_by} are the columns (versions 5 and 7) or NULL.
_GAPS_SQL = """
SELECT gap_id, venue, symbol, first_missing_id, last_missing_id, reason, status,
       detected_ms, resolved_ms, trades_recovered, note,
       {filled_from} AS filled_from, {covered_by} AS covered_by,
       (SELECT trade_time_us FROM trades t
         WHERE t.venue = g.venue AND t.symbol = g.symbol AND t.trade_id < g.first_missing_id
         ORDER BY t.trade_id DESC LIMIT 1) AS after_us,
       (SELECT trade_time_us FROM trades t
         WHERE t.venue = g.venue AND t.symbol = g.symbol AND t.trade_id > g.last_missing_id
         ORDER BY t.trade_id LIMIT 1) AS before_us
FROM gaps g
WHERE venue = ? AND symbol = ? AND (status != 'filled' OR {covered_by} IS NOT NULL)
ORDER BY gap_id DESC
LIMIT ?
"""
_LATEST_BAR_SQL = """
SELECT max(bar_time_s) FROM bars_1s WHERE venue = ? AND symbol = ? AND bar_time_s <= ?
"""
_LAST_TRADE_SQL = """
SELECT trade_time_us, price, qty FROM trades
WHERE venue = ? AND symbol = ? AND trade_time_us <= ?
ORDER BY trade_time_us DESC
LIMIT 1
"""
# Bars stamped after a time: counted up to a bound (an index range, never a scan).
_FUTURE_BARS_SQL = """
SELECT count(*), max(t) FROM (
    SELECT bar_time_s AS t FROM bars_1s
    WHERE venue = ? AND symbol = ? AND bar_time_s > ?
    LIMIT ?
) AS future
"""
FUTURE_COUNT_CAP = 10_000
_TICKS_SQL = """
SELECT trade_time_us, venue, symbol, trade_id, price, qty, buyer_is_maker
FROM trades
WHERE venue = ? AND symbol = ? AND trade_time_us >= ? AND trade_time_us < ?
ORDER BY trade_time_us, trade_id
LIMIT ?
"""
# {rejected} is the column (schema version 4) or 0 on an older database; {nonmarket} and
# {problem} the columns (version 5) or 0 and NULL.
_FEED_STATUS_SQL = """
SELECT venue, symbol, source, source_since_ms, connected, last_trade_id,
       last_trade_time_us, last_message_ms, reconnects, trades_per_s, queue_depth,
       gaps_open, gaps_filled, gaps_abandoned, {rejected} AS rejected,
       {nonmarket} AS nonmarket, {problem} AS problem, updated_ms
FROM feed_status
WHERE venue = ?
ORDER BY symbol
"""
# A run of several markets names its venues comma-separated ("binance-spot,binance-usdm");
# NULL matches every run. {position} is SQLite's instr or PostgreSQL's strpos (the same
# function, arguments in the same order); the CAST gives PostgreSQL the NULL's type.
_LATEST_RUN_SQL = """
SELECT run_id, venue, source, symbols, params_json, pid, started_ms, stopped_ms
FROM ingest_runs
WHERE CAST(?1 AS TEXT) IS NULL
   OR {position}(',' || venue || ',', ',' || CAST(?1 AS TEXT) || ',') > 0
ORDER BY started_ms DESC, run_id DESC
LIMIT 1
"""
# writer_status (schema version 3) is one row; older databases have no such table.
_HAS_TABLE_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
_TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table'"
_COLUMNS_SQL = "SELECT name FROM pragma_table_info(?)"
# PostgreSQL's catalogue, names looked up as the connection's statements find them (its
# search_path). pg_class and pg_attribute, not information_schema: a lookup by key costs
# 0.1 ms where the views' privilege checks cost 0.3-0.5 ms, and the page makes a few
# such lookups per refresh.
_PG_HAS_TABLE_SQL = "SELECT 1 WHERE to_regclass(?) IS NOT NULL"
_PG_TABLES_SQL = """
SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()
"""
_PG_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped
"""
_WRITER_STATUS_SQL = """
SELECT state, last_error, failing_since_ms, queue_depth, trades_stored,
       {rows_rejected} AS rows_rejected, updated_ms
FROM writer_status
WHERE id = 1
"""
_REQUIRED_TABLES = ("trades", "bars_1s", "feed_status", "ingest_runs")
# Funding of perpetuals (schema version 5): settled rates in a range, the settlements just
# outside it (to tell a quiet range from a missing record), and the live rate.
_FUNDING_RATES_SQL = """
SELECT funding_time_ms, rate FROM funding_rates
WHERE venue = ? AND symbol = ? AND funding_time_ms >= ? AND funding_time_ms < ?
ORDER BY funding_time_ms
"""
_FUNDING_BEFORE_SQL = """
SELECT max(funding_time_ms) FROM funding_rates
WHERE venue = ? AND symbol = ? AND funding_time_ms < ?
"""
_FUNDING_AFTER_SQL = """
SELECT min(funding_time_ms) FROM funding_rates
WHERE venue = ? AND symbol = ? AND funding_time_ms >= ?
"""
_FUNDING_LIVE_SQL = """
SELECT event_time_ms, mark_price, rate, next_funding_ms FROM funding_live
WHERE venue = ? AND symbol = ?
"""

# The daemon's pair scans (schema version 8): the newest run, then its rows by rank.
_NEWEST_SCAN_SQL = "SELECT * FROM scan_runs ORDER BY scan_id DESC LIMIT 1"
_SCAN_RESULTS_SQL = "SELECT * FROM scan_results WHERE scan_id = ? ORDER BY rank"
SCHEMA_WITH_SCANS = 8
# A leg's newest close and when its bar ended: its newest one-second bar, then its newest
# kline of each length (one seek each on the primary keys).
_NEWEST_CLOSE_SQL = """
SELECT bar_time_s + 1, close FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s <= ?
ORDER BY bar_time_s DESC
LIMIT 1
"""
_NEWEST_KLINE_CLOSE_SQL = """
SELECT bar_time_s + interval_s, close FROM kline_bars
WHERE venue = ? AND symbol = ? AND interval_s = ? AND bar_time_s <= ?
ORDER BY bar_time_s DESC
LIMIT 1
"""


class NotAPairsDatabase(Exception):
    """The file opened is not a database made by db_setup.py."""


def _aggregate_row(conn: Connection, sql: str, args: tuple) -> tuple:
    """The one row an aggregate without GROUP BY always returns."""
    row = conn.execute(sql, args).fetchone()
    assert row is not None, "an aggregate returns a row"
    return tuple(row)


def _aggregate(conn: Connection, sql: str, args: tuple) -> Any:
    """The value of a one-column aggregate (None over no rows)."""
    return _aggregate_row(conn, sql, args)[0]


def _column_names(cursor: Any) -> list[str]:
    """A cursor's column names, as either driver describes them."""
    return [column[0] for column in cursor.description or ()]


def check_schema(conn: Connection) -> None:
    """Raise :class:`NotAPairsDatabase` with what to do when the schema is missing."""
    if connection.is_postgres(conn):
        present = {row[0] for row in conn.execute(_PG_TABLES_SQL)}
    else:
        try:
            present = {row[0] for row in conn.execute(_TABLES_SQL)}
        except sqlite3.DatabaseError as exc:
            raise NotAPairsDatabase(f"not an SQLite database ({exc})") from exc
    missing = [t for t in _REQUIRED_TABLES if t not in present]
    if missing:
        raise NotAPairsDatabase(
            f"table(s) {', '.join(missing)} missing: run `python db_setup.py --db <this "
            "database>` or start `ingest.py`, which creates them"
        )


def schema_doubts(conn: Connection) -> list[str]:
    """What makes a database that has our tables doubtful, cheaply (no scan): a schema
    version newer than this code knows, or none at all (not made by db_setup.py)."""
    version = connection.schema_version(conn)
    if version > schema.LATEST_VERSION:
        return [
            f"its schema version {version} is newer than this code knows "
            f"({schema.LATEST_VERSION}): update the code; until then figures may be "
            "missing or wrong"
        ]
    if version == 0:
        return [
            "it has tables of our names but no schema version, so it was not made by "
            "db_setup.py or ingest.py: it may be another program's file, and what the "
            "page shows may not mean what it says"
        ]
    return []


def quick_check(conn: sqlite3.Connection, max_problems: int = 5) -> list[str]:
    """SQLite's ``PRAGMA quick_check``: ``[]`` when the file is sound, else its first
    problems. Reads the whole file (seconds per GB); writes nothing."""
    rows = [r[0] for r in conn.execute(f"PRAGMA quick_check({int(max_problems)})")]
    return [] if rows == ["ok"] else [str(r) for r in rows]


def has_table(conn: Connection, table: str) -> bool:
    """Whether the database has ``table`` (an older schema may not)."""
    sql = _PG_HAS_TABLE_SQL if connection.is_postgres(conn) else _HAS_TABLE_SQL
    return conn.execute(sql, (table,)).fetchone() is not None


def series(conn: Connection) -> list[tuple[str, str]]:
    """Every (venue, symbol) with at least one bar (of ``bars_1s`` or, from schema version
    7, ``kline_bars``), sorted."""
    tables = ["bars_1s"] + (["kline_bars"] if has_table(conn, "kline_bars") else [])
    found: set[tuple[str, str]] = set()
    for table in tables:
        sql = _NEXT_SERIES_SQL.format(table=table)
        key = ("", "")
        while (row := conn.execute(sql, key).fetchone()) is not None:
            key = (row[0], row[1])
            found.add(key)
    return sorted(found)


BAR_FRAME_COLUMNS = (*BAR_COLUMNS, "from_klines")
"""The columns of :func:`bars_1s` and :func:`kline_bars`: ``analytics``' bar layout, then
``from_klines`` (True for a bar read from a Binance kline: no trade of it is stored)."""


def bar_frame(rows: list) -> pd.DataFrame:
    """Rows of ``(time_s, open, ..., vwap, from_klines)``, oldest first, as a bars frame."""
    if not rows:
        frame = empty_bars()
        frame["from_klines"] = pd.Series(dtype=bool)
        return frame
    arr = np.array(rows, dtype=float)
    # NULL vwap (zero volume) arrives as None -> nan through the float conversion.
    frame = pd.DataFrame(arr[:, 1:10], columns=list(BAR_COLUMNS[:-1]))
    frame["trades"] = frame["trades"].astype("int64")
    frame["empty"] = False
    frame["from_klines"] = arr[:, 10] != 0
    frame.index = pd.DatetimeIndex(pd.to_datetime(arr[:, 0].astype("int64"), unit="s", utc=True))
    frame.index.name = "time"
    return frame


def bars_1s(
    conn: Connection, venue: str, symbol: str, start_s: int, end_s: int, limit: int
) -> pd.DataFrame:
    """One-second bars with ``start_s <= bar start < end_s``, oldest first; at most
    ``limit``, and then the newest ones (a view must end at the newest data).

    Seconds without trades have no row; analytics.resample_bars marks them ``empty``.
    ``from_klines`` marks a 1-second kline's bar (schema version 7; False before).
    """
    column = "from_klines" if _has_column(conn, "bars_1s", "from_klines") else "0"
    sql = _BARS_SQL.format(from_klines=column)
    rows = conn.execute(sql, (venue, symbol, start_s, end_s, limit)).fetchall()
    rows.reverse()  # read newest first so LIMIT keeps the newest
    return bar_frame(rows)


def kline_intervals(conn: Connection, venue: str, symbol: str) -> list[int]:
    """The kline lengths (seconds) ``kline_bars`` holds for a series, shortest first;
    ``[]`` before schema version 7."""
    if not has_table(conn, "kline_bars"):
        return []
    found: list[int] = []
    after = -1
    while (row := conn.execute(_NEXT_INTERVAL_SQL, (venue, symbol, after)).fetchone()) is not None:
        after = int(row[0])
        found.append(after)
    return found


def kline_bars(
    conn: Connection,
    venue: str,
    symbol: str,
    interval_s: int,
    start_s: int,
    end_s: int,
    limit: int,
) -> pd.DataFrame:
    """Klines of one length opening in ``[start_s, end_s)`` as a bars frame stamped at
    their open time (``from_klines`` True), oldest first; at most ``limit``, the newest."""
    args = (venue, symbol, interval_s, start_s, end_s, limit)
    rows = conn.execute(_KLINE_BARS_SQL, args).fetchall()
    rows.reverse()
    return bar_frame(rows)


def first_kline_s(
    conn: Connection, venue: str, symbol: str, interval_s: int, start_s: int, end_s: int
) -> int | None:
    """Open time of the first kline of one length in ``[start_s, end_s)``, or None."""
    args = (venue, symbol, interval_s, start_s, end_s)
    return _aggregate(conn, _FIRST_KLINE_SQL, args)


def latest_bar_s(conn: Connection, venue: str, symbol: str, max_s: int) -> int | None:
    """Start second of the newest bar of a series not after ``max_s`` (a one-second bar,
    or a kline's open time), or None."""
    latest = [_aggregate(conn, _LATEST_BAR_SQL, (venue, symbol, max_s))]
    for interval_s in kline_intervals(conn, venue, symbol):
        args = (venue, symbol, interval_s, max_s)
        latest.append(_aggregate(conn, _LATEST_KLINE_SQL, args))
    known = [t for t in latest if t is not None]
    return max(known) if known else None


def future_bars(conn: Connection, venue: str, symbol: str, after_s: int) -> tuple[int, int | None]:
    """How many bars of a series start after ``after_s`` (at most ``FUTURE_COUNT_CAP``
    are counted) and the latest of them; ``(0, None)`` when none."""
    count, latest = _aggregate_row(
        conn, _FUTURE_BARS_SQL, (venue, symbol, after_s, FUTURE_COUNT_CAP)
    )
    return int(count), latest


def tape_start_us(conn: Connection, venue: str, symbol: str) -> int | None:
    """Time of a series' first stored trade (microseconds): where its tape begins; before
    it, bars come from klines only. None when no trade is stored."""
    return _aggregate(conn, _TAPE_START_SQL, (venue, symbol))


def kline_spans(conn: Connection, venue: str, symbol: str) -> pd.DataFrame:
    """The periods whose klines were fetched (``origin`` 'rest') or replayed (the file's
    name) for a series: ``interval_s, start_s, end_s, origin``; empty before version 7."""
    columns = ["interval_s", "start_s", "end_s", "origin"]
    if not has_table(conn, "kline_spans"):
        return pd.DataFrame(columns=columns)
    rows = conn.execute(_KLINE_SPANS_SQL, (venue, symbol)).fetchall()
    return pd.DataFrame(rows, columns=columns)


def gaps(conn: Connection, venue: str, symbol: str, limit: int) -> pd.DataFrame:
    """A feed's gaps worth naming, newest first (at most ``limit``): open, abandoned, or
    covered by kline bars, with the times of the stored trades around each
    (``after_us``: the last trade before it, ``before_us``: the first after it; None when
    there is none). ``filled_from`` and ``covered_by`` are None on databases older than
    versions 5 and 7."""
    columns = {
        name: name if _has_column(conn, "gaps", name) else "NULL"
        for name in ("filled_from", "covered_by")
    }
    cur = conn.execute(_GAPS_SQL.format(**columns), (venue, symbol, limit))
    names = _column_names(cur)
    return pd.DataFrame(cur.fetchall(), columns=names)


@dataclass(frozen=True)
class LastTrade:
    time_us: int
    price: float
    qty: float


def last_trade(conn: Connection, venue: str, symbol: str, max_us: int) -> LastTrade | None:
    """The newest stored trade of a series (by trade time) not after ``max_us``, or None."""
    row = conn.execute(_LAST_TRADE_SQL, (venue, symbol, max_us)).fetchone()
    return LastTrade(*row) if row else None


def ticks(
    conn: Connection, venue: str, symbol: str, start_us: int, end_us: int, limit: int
) -> pd.DataFrame:
    """Raw trades in ``[start_us, end_us)``, oldest first, at most ``limit`` rows.

    ``time`` is an ISO-8601 UTC string with microseconds, ready for CSV.
    """
    rows = conn.execute(_TICKS_SQL, (venue, symbol, start_us, end_us, limit)).fetchall()
    frame = pd.DataFrame(rows, columns=TICK_COLUMNS)
    times = pd.to_datetime(frame["time"].astype("int64"), unit="us", utc=True)
    frame["time"] = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return frame


def feed_status(conn: Connection, venue: str) -> pd.DataFrame:
    """The daemon's feed_status rows for a venue (empty when no daemon ever ran); an
    older database reads 0 refused values, 0 non-market trades and no problem."""
    columns = {
        name: name if _has_column(conn, "feed_status", name) else default
        for name, default in (("rejected", "0"), ("nonmarket", "0"), ("problem", "NULL"))
    }
    cur = conn.execute(_FEED_STATUS_SQL.format(**columns), (venue,))
    names = _column_names(cur)
    return pd.DataFrame(cur.fetchall(), columns=names)


@dataclass(frozen=True)
class IngestRun:
    run_id: int
    venue: str
    source: str
    symbols: str
    params: dict
    pid: int | None
    started_ms: int
    stopped_ms: int | None


def latest_run(conn: Connection, venue: str | None = None) -> IngestRun | None:
    """The most recent daemon start feeding ``venue`` (alone or among several markets),
    or of any venue when None, with its parameters decoded."""
    position = "strpos" if connection.is_postgres(conn) else "instr"
    row = conn.execute(_LATEST_RUN_SQL.format(position=position), (venue,)).fetchone()
    if row is None:
        return None
    try:
        params = json.loads(row[4] or "{}")
    except ValueError:
        params = {"params_json": row[4]}  # shown as stored rather than hidden
    if not isinstance(params, dict):
        params = {"params": params}
    return IngestRun(row[0], row[1], row[2], row[3], params, row[5], row[6], row[7])


@dataclass(frozen=True)
class WriterStatus:
    """The daemon writer's health (table ``writer_status``): ``state`` is ``ok``,
    ``retrying`` (commits keep failing since ``failing_since_ms``) or ``stopped``."""

    state: str
    last_error: str | None
    failing_since_ms: int | None
    queue_depth: int
    trades_stored: int
    rows_rejected: int  # set aside as unstorable this run (0 before schema version 4)
    updated_ms: int


def _has_column(conn: Connection, table: str, column: str) -> bool:
    sql = _PG_COLUMNS_SQL if connection.is_postgres(conn) else _COLUMNS_SQL
    return any(row[0] == column for row in conn.execute(sql, (table,)))


def writer_status(conn: Connection) -> WriterStatus | None:
    """The writer's status row, or None when there is none (or no table, before v3)."""
    if not has_table(conn, "writer_status"):
        return None
    column = "rows_rejected" if _has_column(conn, "writer_status", "rows_rejected") else "0"
    row = conn.execute(_WRITER_STATUS_SQL.format(rows_rejected=column)).fetchone()
    return None if row is None else WriterStatus(*row)


@dataclass(frozen=True)
class FundingLive:
    """A perpetual's ``funding_live`` row: the rate due at ``next_funding_ms`` as it stood
    at ``event_time_ms``."""

    event_time_ms: int
    mark_price: float
    rate: float
    next_funding_ms: int


@dataclass(frozen=True)
class FundingRecord:
    """What is stored about one perpetual's funding around a range (schema version 5).

    ``rates``: settled rates with ``start_ms <= funding time < end_ms``, indexed by UTC
    funding time; ``before_ms``/``after_ms``: the nearest settlements outside the range
    (None when none is stored); ``live``: the latest ``@markPrice`` row, or None.
    ``stored``: whether the table exists (a database before version 5 has none).
    """

    rates: pd.Series
    before_ms: int | None
    after_ms: int | None
    live: FundingLive | None
    stored: bool = True


def funding(conn: Connection, venue: str, symbol: str, start_ms: int, end_ms: int) -> FundingRecord:
    """The funding stored for a perpetual around ``[start_ms, end_ms)``."""
    empty: pd.Series = pd.Series(
        [], dtype=float, index=pd.DatetimeIndex([], tz="UTC", name="funding_time")
    )
    if conn.execute(_HAS_TABLE_SQL, ("funding_rates",)).fetchone() is None:
        return FundingRecord(empty, None, None, None, stored=False)
    key = (venue, symbol)
    rows = conn.execute(_FUNDING_RATES_SQL, (*key, start_ms, end_ms)).fetchall()
    rates = empty
    if rows:
        times = pd.to_datetime([r[0] for r in rows], unit="ms", utc=True)
        rates = pd.Series([float(r[1]) for r in rows], index=times.rename("funding_time"))
    before = _aggregate(conn, _FUNDING_BEFORE_SQL, (*key, start_ms))
    after = _aggregate(conn, _FUNDING_AFTER_SQL, (*key, end_ms))
    live_row = conn.execute(_FUNDING_LIVE_SQL, key).fetchone()
    live = None if live_row is None else FundingLive(*live_row)
    return FundingRecord(rates, before, after, live)


class ScansNotStored(Exception):
    """The database predates the daemon's pair scans (schema version 8)."""


@dataclass(frozen=True)
class ScanRun:
    """One ``scan_runs`` row (docs/schema.md), ``params_json`` decoded into ``params``."""

    scan_id: int
    started_ms: int
    finished_ms: int
    bar_s: int
    window_start_s: int
    window_end_s: int
    log_prices: bool
    legs: int
    legs_skipped: int
    pairs_tested: int
    candidates: int
    tradable: int
    rows_stored: int
    cpu_s: float
    params: dict
    note: str | None


def newest_scan(conn: Connection) -> tuple[ScanRun, pd.DataFrame] | None:
    """The newest pair scan and its ``scan_results`` rows by rank (every column by its
    name); None when no scan is stored.

    :raises ScansNotStored: before schema version 8 (no scan tables).
    """
    version = connection.schema_version(conn)
    if version < SCHEMA_WITH_SCANS or not has_table(conn, "scan_runs"):
        raise ScansNotStored(
            f"the database is at schema version {version}; the daemon's pair scans are "
            f"stored from version {SCHEMA_WITH_SCANS} on: start `ingest.py` of this code on "
            "it (it brings the schema up to date) or run `python db_setup.py --db <this file>`"
        )
    cur = conn.execute(_NEWEST_SCAN_SQL)
    row = cur.fetchone()
    if row is None:
        return None
    run = dict(zip(_column_names(cur), row, strict=True))
    try:
        params = json.loads(run["params_json"] or "{}")
    except ValueError:
        params = {}
    scan = ScanRun(
        scan_id=int(run["scan_id"]),
        started_ms=int(run["started_ms"]),
        finished_ms=int(run["finished_ms"]),
        bar_s=int(run["bar_s"]),
        window_start_s=int(run["window_start_s"]),
        window_end_s=int(run["window_end_s"]),
        log_prices=bool(run["log_prices"]),
        legs=int(run["legs"]),
        legs_skipped=int(run["legs_skipped"]),
        pairs_tested=int(run["pairs_tested"]),
        candidates=int(run["candidates"]),
        tradable=int(run["tradable"]),
        rows_stored=int(run["rows_stored"]),
        cpu_s=float(run["cpu_s"]),
        params=params if isinstance(params, dict) else {},
        note=run["note"],
    )
    cur = conn.execute(_SCAN_RESULTS_SQL, (scan.scan_id,))
    rows = pd.DataFrame(cur.fetchall(), columns=_column_names(cur))
    return scan, rows


def newest_close(conn: Connection, venue: str, symbol: str, max_s: int) -> tuple[int, float] | None:
    """A leg's newest close among its one-second bars and klines starting at or before
    ``max_s``: ``(second its bar ended, close)``; None when it has no bar."""
    found = [conn.execute(_NEWEST_CLOSE_SQL, (venue, symbol, max_s)).fetchone()]
    for interval_s in kline_intervals(conn, venue, symbol):
        args = (venue, symbol, interval_s, max_s)
        found.append(conn.execute(_NEWEST_KLINE_CLOSE_SQL, args).fetchone())
    known = [(int(end), float(close)) for end, close in (r for r in found if r)]
    # On a tie the one-second bar (listed first) stands: the tape over a kline.
    return max(known, key=lambda close: close[0]) if known else None


# SQLite's rowid is the order rows were first inserted (an upsert keeps it). A PostgreSQL
# table keeps no such order (an updated row moves): there, venue and symbol.
_FEED_ORDER = {False: "rowid", True: "venue, symbol"}
_FEED_ORDER_SQL = "SELECT venue, symbol FROM feed_status ORDER BY {order}"


def feed_order(conn: Connection) -> list[tuple[str, str]]:
    """Every (venue, symbol) the daemon reports on, in the order it first reported them:
    the order of its ``--symbols``, venue by venue (a row keeps its place when updated);
    on PostgreSQL, sorted."""
    if not has_table(conn, "feed_status"):
        return []
    sql = _FEED_ORDER_SQL.format(order=_FEED_ORDER[connection.is_postgres(conn)])
    return [(str(v), str(s)) for v, s in conn.execute(sql)]


_STRIP_SQL = """
SELECT venue, symbol, source, source_since_ms, connected, last_trade_time_us,
       reconnects, {problem} AS problem, updated_ms
FROM feed_status
ORDER BY {order}
"""


def strip_rows(conn: Connection) -> list[tuple]:
    """What the status strip needs of every feed_status row: ``(venue, symbol, source,
    source_since_ms, connected, last_trade_time_us, reconnects, problem, updated_ms)``,
    in the daemon's order; empty when no daemon has reported."""
    if not has_table(conn, "feed_status"):
        return []
    problem = "problem" if _has_column(conn, "feed_status", "problem") else "NULL"
    order = _FEED_ORDER[connection.is_postgres(conn)]
    return conn.execute(_STRIP_SQL.format(problem=problem, order=order)).fetchall()


@dataclass(frozen=True)
class ZRule:
    """An enabled z-score rule on a pair and what the daemon last computed for it."""

    rule_id: int
    kind: str  # zscore_above or zscore_below
    threshold: float
    timeframe: str | None
    window: int | None
    method: str | None
    log_prices: bool | None
    last_value: float | None
    last_bar_time_s: int | None
    checked_ms: int | None
    note: str | None


_ZRULES_SQL = """
SELECT rule_id, kind, threshold, timeframe, window_bars, hedge_method, log_prices,
       last_value, last_bar_time_s, checked_ms, note
FROM alert_rules
WHERE enabled = 1 AND kind IN ('zscore_above', 'zscore_below')
  AND venue = ?1 AND symbol = ?2 AND symbol_x = ?4 AND coalesce(venue_x, venue) = ?3
ORDER BY rule_id
"""


def zscore_rules(
    conn: Connection, venue: str, symbol: str, venue_x: str, symbol_x: str
) -> list[ZRule]:
    """The enabled z-score rules of a pair (Y on ``venue``, X on ``venue_x``) with the
    daemon's last value of each (schema version 6); empty on an older database."""
    if not has_table(conn, "alert_rules") or not _has_column(conn, "alert_rules", "last_value"):
        return []
    rows = conn.execute(_ZRULES_SQL, (venue, symbol, venue_x, symbol_x)).fetchall()
    return [
        ZRule(
            int(r[0]),
            str(r[1]),
            float(r[2]),
            r[3],
            None if r[4] is None else int(r[4]),
            r[5],
            None if r[6] is None else bool(r[6]),
            r[7],
            r[8],
            r[9],
            r[10],
        )
        for r in rows
    ]
