"""Create or migrate the SQLite schema shared by the ingest daemon and the page.

Usage: ``python db_setup.py [--db data/ticks.db]``. Safe to run any number of times.
``--db postgresql://user:password@host:port/dbname`` sets up a PostgreSQL database
instead (``store/postgres.py``: the same tables in its dialect, and the page's role).

The schema version lives in ``PRAGMA user_version``. Each entry of ``MIGRATIONS`` moves a
database from version ``i`` to ``i + 1`` inside one transaction, so a migration either
happens whole or not at all. The column names below are the contract between
``ingest.py`` (the only writer of market data) and ``app.py`` (a reader); docs/schema.md
documents them.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

from pairs_monitor.store.target import is_postgres_url, redact

DEFAULT_DB = Path("data/ticks.db")

log = logging.getLogger("db_setup")

SCHEMA_V1 = """
-- One row per exchange trade. Trades sharing a millisecond are distinct trades: the key is
-- the exchange's trade id, never the timestamp.
CREATE TABLE trades (
    venue          TEXT    NOT NULL,  -- binance-spot | binance-usdm | sim | replay | ...
    symbol         TEXT    NOT NULL,  -- upper case, e.g. BTCUSDT
    trade_id       INTEGER NOT NULL,  -- exchange trade id, consecutive per (venue, symbol)
    trade_time_us  INTEGER NOT NULL,  -- exchange trade time, microseconds since epoch, UTC
    price          REAL    NOT NULL,
    qty            REAL    NOT NULL,
    buyer_is_maker INTEGER NOT NULL,  -- 1 when the buyer was the maker (the taker sold)
    PRIMARY KEY (venue, symbol, trade_id)
) WITHOUT ROWID;
CREATE INDEX trades_by_time ON trades (venue, symbol, trade_time_us);

-- One-second OHLCV bars, maintained by the writer in the same transaction as the trades
-- they summarise, so the page never aggregates millions of ticks on a refresh.
CREATE TABLE bars_1s (
    venue            TEXT    NOT NULL,
    symbol           TEXT    NOT NULL,
    bar_time_s       INTEGER NOT NULL,  -- bar start, seconds since epoch, UTC
    open             REAL    NOT NULL,  -- price of the lowest trade id in the second
    high             REAL    NOT NULL,
    low              REAL    NOT NULL,
    close            REAL    NOT NULL,  -- price of the highest trade id in the second
    volume           REAL    NOT NULL,  -- base-asset quantity
    quote_volume     REAL    NOT NULL,  -- sum(price * qty); VWAP = quote_volume / volume
    taker_buy_volume REAL    NOT NULL,  -- quantity where the taker bought (buyer_is_maker = 0)
    trade_count      INTEGER NOT NULL,
    first_trade_id   INTEGER NOT NULL,
    last_trade_id    INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol, bar_time_s)
) WITHOUT ROWID;

-- Health of each feed, rewritten by the daemon about once a second.
CREATE TABLE feed_status (
    venue              TEXT    NOT NULL,
    symbol             TEXT    NOT NULL,
    source             TEXT    NOT NULL,  -- live | sim | replay: what feeds this row now
    source_since_ms    INTEGER NOT NULL,  -- wall clock when that source became active
    connected          INTEGER NOT NULL DEFAULT 0,
    last_trade_id      INTEGER,
    last_trade_time_us INTEGER,
    last_message_ms    INTEGER,           -- wall clock of the last message received
    reconnects         INTEGER NOT NULL DEFAULT 0,
    trades_per_s       REAL    NOT NULL DEFAULT 0,
    queue_depth        INTEGER NOT NULL DEFAULT 0,
    gaps_open          INTEGER NOT NULL DEFAULT 0,
    gaps_filled        INTEGER NOT NULL DEFAULT 0,
    gaps_abandoned     INTEGER NOT NULL DEFAULT 0,
    updated_ms         INTEGER NOT NULL,  -- wall clock of this row; stale = daemon gone
    PRIMARY KEY (venue, symbol)
);

-- Ranges of missing trade ids and what became of them.
CREATE TABLE gaps (
    gap_id           INTEGER PRIMARY KEY,
    venue            TEXT    NOT NULL,
    symbol           TEXT    NOT NULL,
    first_missing_id INTEGER NOT NULL,
    last_missing_id  INTEGER NOT NULL,
    reason           TEXT    NOT NULL,  -- live-jump | catch-up | stored-hole
    status           TEXT    NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'filled', 'abandoned')),
    detected_ms      INTEGER NOT NULL,
    resolved_ms      INTEGER,
    trades_recovered INTEGER NOT NULL DEFAULT 0,
    note             TEXT
);
CREATE INDEX gaps_by_feed ON gaps (venue, symbol, status);

-- Each start of the daemon: which source fed which venue, with what parameters (for the
-- simulator, its true hedge ratio and half-life, so a user can check the analytics).
CREATE TABLE ingest_runs (
    run_id      INTEGER PRIMARY KEY,
    venue       TEXT    NOT NULL,
    source      TEXT    NOT NULL,  -- live | sim | replay
    symbols     TEXT    NOT NULL,  -- comma-separated, upper case
    params_json TEXT    NOT NULL DEFAULT '{}',
    pid         INTEGER,
    started_ms  INTEGER NOT NULL,
    stopped_ms  INTEGER
);

-- Alert rules and the alerts they fired (version 6 rebuilds alert_rules: see SCHEMA_V6).
CREATE TABLE alert_rules (
    rule_id    INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN
               ('zscore_above', 'zscore_below', 'price_above', 'price_below', 'volume_spike')),
    venue      TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,  -- the Y leg for z-score rules
    symbol_x   TEXT,              -- the X leg for z-score rules, NULL otherwise
    threshold  REAL    NOT NULL,
    rearm      REAL    NOT NULL,  -- hysteresis: the value must come back past this to re-arm
    enabled    INTEGER NOT NULL DEFAULT 1,
    armed      INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL
);
CREATE TABLE alert_events (
    event_id INTEGER PRIMARY KEY,
    rule_id  INTEGER NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    fired_ms INTEGER NOT NULL,  -- wall clock
    bar_time_s INTEGER,         -- the bar whose value fired it
    value    REAL    NOT NULL,
    message  TEXT    NOT NULL
);
CREATE INDEX alert_events_by_time ON alert_events (fired_ms);
"""

# Version 2: an alert rule carries the view it is judged in, so every page that watches it
# computes the same value (NULL: a rule from version 1, judged in the viewer's settings).
SCHEMA_V2 = """
ALTER TABLE alert_rules ADD COLUMN timeframe TEXT;       -- bar size, e.g. 1s, 1m
ALTER TABLE alert_rules ADD COLUMN window_bars INTEGER;  -- rolling window, in bars
ALTER TABLE alert_rules ADD COLUMN hedge_method TEXT;    -- as pair_frame names it
ALTER TABLE alert_rules ADD COLUMN log_prices INTEGER;   -- 1: hedge fitted on log prices
"""

# Version 3: the writer's health, one row, written about once a second by the daemon's status
# reporter through a connection of its own (so it lands while the writer's commits fail).
SCHEMA_V3 = """
CREATE TABLE writer_status (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    state            TEXT    NOT NULL,  -- 'ok' | 'retrying' | 'stopped'
    last_error       TEXT,              -- the last error a commit raised; NULL when none yet
    failing_since_ms INTEGER,           -- wall clock of the first failure of the current
                                        -- streak; NULL when ok
    queue_depth      INTEGER NOT NULL,
    trades_stored    INTEGER NOT NULL,  -- this run
    updated_ms       INTEGER NOT NULL   -- stale = daemon gone or database locked by another program
);
"""

# What was refused, so the page can say so: values refused where they entered (socket,
# REST) per feed, and rows the writer set aside as unstorable.
SCHEMA_V4 = """
ALTER TABLE feed_status ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE writer_status ADD COLUMN rows_rejected INTEGER NOT NULL DEFAULT 0;
"""

# USD-M as Binance answers since 2026-04-23 (docs/sources.md), and funding.
# Insurance-fund and ADL trades use up trade ids but are not order-book trades: they are
# kept apart, so the id continuity holds and bars and prices never see their "0" prices.
SCHEMA_V5 = """
CREATE TABLE nonmarket_trades (
    venue         TEXT    NOT NULL,
    symbol        TEXT    NOT NULL,
    trade_id      INTEGER NOT NULL,
    trade_time_us INTEGER,           -- NULL when known only as an id REST left out
    trade_type    TEXT    NOT NULL,  -- the socket's X (INSURANCE_FUND, ADL, ...) or NOT_IN_REST
    PRIMARY KEY (venue, symbol, trade_id)
) WITHOUT ROWID;
ALTER TABLE gaps ADD COLUMN filled_from TEXT;  -- historicalTrades | aggTrades; NULL while open
ALTER TABLE feed_status ADD COLUMN nonmarket INTEGER NOT NULL DEFAULT 0;
ALTER TABLE feed_status ADD COLUMN problem TEXT;  -- what is wrong now, e.g. a wrong route
-- A z-score rule's X leg may trade on another venue (spot against perpetual).
ALTER TABLE alert_rules ADD COLUMN venue_x TEXT;  -- NULL: the X leg trades on venue

-- Funding of perpetuals: settled rates (fundingRate) and the live one (@markPrice).
CREATE TABLE funding_rates (
    venue           TEXT    NOT NULL,
    symbol          TEXT    NOT NULL,
    funding_time_ms INTEGER NOT NULL,
    rate            REAL    NOT NULL,  -- longs pay shorts rate x notional when positive
    mark_price      REAL,              -- at the funding time; NULL when REST gave none
    PRIMARY KEY (venue, symbol, funding_time_ms)
) WITHOUT ROWID;
CREATE TABLE funding_live (
    venue           TEXT    NOT NULL,
    symbol          TEXT    NOT NULL,
    event_time_ms   INTEGER NOT NULL,  -- the markPrice event's time
    mark_price      REAL    NOT NULL,
    index_price     REAL,
    rate            REAL    NOT NULL,  -- the rate due at next_funding_ms, as it stands now
    next_funding_ms INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol)
) WITHOUT ROWID;
"""

# Alerts evaluated by the daemon and delivered (issue 11, docs/alerts.md). New rule kinds
# need a new CHECK on alert_rules.kind, which SQLite cannot alter in place: the table is
# rebuilt by SQLite's documented procedure (create, copy, drop, rename). migrate() runs it
# with foreign keys off, as that procedure requires: with them on, dropping alert_rules
# would first delete every row and cascade to alert_events. alert_events keeps every row
# and its reference, which names alert_rules and so points at the rebuilt table.
SCHEMA_V6 = """
CREATE TABLE alert_rules_v6 (
    rule_id         INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN
                    ('zscore_above', 'zscore_below', 'price_above', 'price_below',
                     'volume_spike', 'feed_silent', 'gap_abandoned', 'writer_failing',
                     'coint_lost', 'corr_breakdown')),
    venue           TEXT    NOT NULL,  -- '*' for writer_failing
    symbol          TEXT    NOT NULL,  -- '*': every symbol of the venue (gap_abandoned)
    symbol_x        TEXT,
    threshold       REAL    NOT NULL,
    rearm           REAL    NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    armed           INTEGER NOT NULL DEFAULT 1,
    created_ms      INTEGER NOT NULL,
    timeframe       TEXT,
    window_bars     INTEGER,
    hedge_method    TEXT,
    log_prices      INTEGER,
    venue_x         TEXT,
    cooldown_s      INTEGER NOT NULL DEFAULT 0,  -- at most one firing per this many seconds
    -- Written by the daemon's evaluator: what it saw the last time it judged the rule.
    last_fired_ms   INTEGER,
    last_value      REAL,
    last_bar_time_s INTEGER,
    checked_ms      INTEGER,
    note            TEXT,     -- why there is no value (waiting for bars, a stale leg, ...)
    cursor_id       INTEGER   -- gap_abandoned: the highest gap_id already counted
);
INSERT INTO alert_rules_v6 (rule_id, kind, venue, symbol, symbol_x, threshold, rearm, enabled,
                            armed, created_ms, timeframe, window_bars, hedge_method,
                            log_prices, venue_x)
SELECT rule_id, kind, venue, symbol, symbol_x, threshold, rearm, enabled, armed, created_ms,
       timeframe, window_bars, hedge_method, log_prices, venue_x
FROM alert_rules;
DROP TABLE alert_rules;
ALTER TABLE alert_rules_v6 RENAME TO alert_rules;

ALTER TABLE alert_events ADD COLUMN threshold REAL;    -- the rule's threshold when it fired
ALTER TABLE alert_events ADD COLUMN acked_ms INTEGER;  -- wall clock of acknowledgement
CREATE INDEX alert_events_unacked ON alert_events (event_id) WHERE acked_ms IS NULL;

-- One row per firing and notification channel (a --notify URL): its delivery state.
CREATE TABLE alert_deliveries (
    event_id        INTEGER NOT NULL REFERENCES alert_events (event_id) ON DELETE CASCADE,
    channel         TEXT    NOT NULL,  -- a digest of the URL (the URL itself holds secrets)
    target          TEXT    NOT NULL,  -- the URL with its secrets masked, for people
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,           -- when a pending delivery is tried next
    last_error      TEXT,
    updated_ms      INTEGER NOT NULL,
    sent_ms         INTEGER,
    PRIMARY KEY (event_id, channel)
) WITHOUT ROWID;
CREATE INDEX alert_deliveries_by_status ON alert_deliveries (status, channel);
"""

# History from klines (issue 12, docs/sources.md): bars for the time before the tape begins
# and for outages trades cannot fill. A 1-second kline is a bars_1s row marked from_klines
# (it has no trade rows, so no trade ids: first_trade_id = last_trade_id = 0); longer
# klines (USD-M 1m, replayed kline files) go to kline_bars. kline_spans says which periods
# were asked for and stored, so a restart asks only what is missing.
#
# A kline bar gives way to trades: when the writer folds trades into a second that holds a
# kline bar (a gap filled by a later start, a trades dump replayed over klines), the
# trigger rebuilds the bar from the trades stored for that second, which the writer has
# inserted in the same transaction just before. Its WHEN reads only the old row, so a
# bar from trades pays nothing for it.
SCHEMA_V7 = """
ALTER TABLE bars_1s ADD COLUMN from_klines INTEGER NOT NULL DEFAULT 0;  -- 1: a 1s kline
CREATE TRIGGER bars_1s_trades_replace_klines AFTER UPDATE ON bars_1s
WHEN OLD.from_klines = 1
BEGIN
    UPDATE bars_1s SET
        (open, high, low, close, volume, quote_volume, taker_buy_volume, trade_count,
         first_trade_id, last_trade_id, from_klines) = (
        SELECT (SELECT price FROM trades
                 WHERE venue = NEW.venue AND symbol = NEW.symbol AND trade_id = g.first_id),
               g.high, g.low,
               (SELECT price FROM trades
                 WHERE venue = NEW.venue AND symbol = NEW.symbol AND trade_id = g.last_id),
               g.volume, g.quote_volume, g.taker_buy_volume, g.trade_count,
               g.first_id, g.last_id, 0
        FROM (SELECT min(trade_id) AS first_id, max(trade_id) AS last_id,
                     max(price) AS high, min(price) AS low, total(qty) AS volume,
                     total(price * qty) AS quote_volume,
                     total(CASE WHEN buyer_is_maker THEN 0 ELSE qty END) AS taker_buy_volume,
                     count(*) AS trade_count
              FROM trades
              WHERE venue = NEW.venue AND symbol = NEW.symbol
                AND trade_time_us >= NEW.bar_time_s * 1000000
                AND trade_time_us < (NEW.bar_time_s + 1) * 1000000) AS g
        WHERE g.trade_count > 0)
    WHERE venue = NEW.venue AND symbol = NEW.symbol AND bar_time_s = NEW.bar_time_s
      AND EXISTS (SELECT 1 FROM trades
                  WHERE venue = NEW.venue AND symbol = NEW.symbol
                    AND trade_time_us >= NEW.bar_time_s * 1000000
                    AND trade_time_us < (NEW.bar_time_s + 1) * 1000000);
END;

CREATE TABLE kline_bars (
    venue            TEXT    NOT NULL,
    symbol           TEXT    NOT NULL,
    interval_s       INTEGER NOT NULL,  -- the kline's length: 60 (1m), 300 (5m), 3600 (1h), ...
    bar_time_s       INTEGER NOT NULL,  -- the kline's open time, seconds since epoch, UTC
    open             REAL    NOT NULL,
    high             REAL    NOT NULL,
    low              REAL    NOT NULL,
    close            REAL    NOT NULL,
    volume           REAL    NOT NULL,  -- base-asset quantity
    quote_volume     REAL    NOT NULL,
    taker_buy_volume REAL    NOT NULL,  -- base-asset quantity where the taker bought
    trade_count      INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol, interval_s, bar_time_s)
) WITHOUT ROWID;

CREATE TABLE kline_spans (
    venue      TEXT    NOT NULL,
    symbol     TEXT    NOT NULL,
    interval_s INTEGER NOT NULL,  -- 1: bars_1s rows from_klines; longer: kline_bars rows
    start_s    INTEGER NOT NULL,  -- the first interval covered (its open time)
    end_s      INTEGER NOT NULL,  -- covered up to here, exclusive
    origin     TEXT    NOT NULL,  -- 'rest' (--history) or the replayed file's name
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (venue, symbol, interval_s, start_s)
) WITHOUT ROWID;

-- An open gap whose seconds kline bars stand in for (the part trades could not fill).
ALTER TABLE gaps ADD COLUMN covered_by TEXT;  -- e.g. '1s klines'; NULL: none
"""

# The daemon's pair scans (issue 14, pairs_monitor/scan/service.py): every few minutes it
# tests every pair of its legs for cointegration on 1-minute bars over a trailing window
# (analytics.scan_pairs) and stores the run and its best rows, ranked, so the page can
# open on a watchlist. A run's rows are deleted with it.
SCHEMA_V8 = """
CREATE TABLE scan_runs (
    scan_id        INTEGER PRIMARY KEY,
    started_ms     INTEGER NOT NULL,  -- wall clock when the scan began reading bars
    finished_ms    INTEGER NOT NULL,  -- wall clock when its result was ready
    bar_s          INTEGER NOT NULL,  -- the bar length scanned: 60
    window_start_s INTEGER NOT NULL,  -- the first bar of the window (its open time)
    window_end_s   INTEGER NOT NULL,  -- bars up to here, exclusive
    log_prices     INTEGER NOT NULL,  -- 1: tested on log prices (the spread is in logs)
    legs           INTEGER NOT NULL,  -- legs scanned
    legs_skipped   INTEGER NOT NULL,  -- legs left out: too few bars in the window
    pairs_tested   INTEGER NOT NULL,  -- pairs the q-values are over
    candidates     INTEGER NOT NULL,
    tradable       INTEGER NOT NULL,
    rows_stored    INTEGER NOT NULL,  -- rows of this run in scan_results
    cpu_s          REAL    NOT NULL,  -- CPU time the scan took
    params_json    TEXT    NOT NULL DEFAULT '{}',  -- fdr, holdout, lags, fees, ...
    note           TEXT               -- why nothing was tested; NULL otherwise
);
CREATE TABLE scan_results (
    scan_id             INTEGER NOT NULL REFERENCES scan_runs (scan_id) ON DELETE CASCADE,
    rank                INTEGER NOT NULL,  -- 1 = best: by eg_pvalue, then half_life
    venue_y             TEXT    NOT NULL,
    symbol_y            TEXT    NOT NULL,
    venue_x             TEXT    NOT NULL,
    symbol_x            TEXT    NOT NULL,
    hedge_ratio         REAL    NOT NULL,  -- spread = y - hedge_ratio x - intercept
    intercept           REAL    NOT NULL,
    eg_stat             REAL    NOT NULL,
    eg_pvalue           REAL    NOT NULL,
    eg_qvalue           REAL    NOT NULL,
    half_life           REAL,              -- bars; inf: no mean reversion; NULL: unknown
    corr                REAL,              -- correlation of 1-bar log returns
    nobs                INTEGER NOT NULL,  -- bars the pair was tested on
    oos_hedge_ratio     REAL,
    oos_pvalue          REAL,
    holds_out_of_sample INTEGER NOT NULL,
    candidate           INTEGER NOT NULL,
    spread_std          REAL    NOT NULL,  -- the spread's standard deviation, its units
    spread_std_bps      REAL,              -- the same per unit of gross notional, bps
    round_trip_bps      REAL,              -- taker fees of entering and leaving both legs
    tradable            INTEGER NOT NULL,
    last_bar_s          INTEGER NOT NULL,  -- the pair's last bar in the window
    zscore              REAL,              -- spread / spread_std on that bar
    signal_bar_s        INTEGER,           -- the last bar with |z| >= 2; NULL: none
    signal_z            REAL,              -- z on that bar (> 0: short the spread)
    PRIMARY KEY (scan_id, rank)
) WITHOUT ROWID;
"""

# MIGRATIONS[i] takes a database from user_version i to i + 1.
MIGRATIONS: list[str] = [
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V4,
    SCHEMA_V5,
    SCHEMA_V6,
    SCHEMA_V7,
    SCHEMA_V8,
]
LATEST_VERSION = len(MIGRATIONS)

TRADES_COLUMNS = (
    "venue",
    "symbol",
    "trade_id",
    "trade_time_us",
    "price",
    "qty",
    "buyer_is_maker",
)


class SchemaError(Exception):
    """The database cannot be brought to the current schema without losing data."""


class ReadOnlyDatabaseError(SchemaError):
    """The database file (or its folder, for the -wal and -shm files) cannot be written."""


def connect_for_writing(path: str | Path) -> sqlite3.Connection:
    """Open the database for the single writer: WAL, NORMAL sync, a generous busy timeout.

    :param path: database file; its folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of the process (kill -9) without losing a
    # committed transaction; only a power loss can take back the last few commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """Open the database read-only (``mode=ro``), as the page does.

    :param path: an existing database file.
    :raises FileNotFoundError: when the file does not exist.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}: run `python db_setup.py --db {path}`")
    conn = sqlite3.connect(
        f"{path.as_uri()}?mode=ro", uri=True, timeout=10, check_same_thread=False
    )
    conn.execute("PRAGMA query_only=ON")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in ``PRAGMA user_version``."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


_TABLE_CHANGES = re.compile(
    r"CREATE TABLE (\w+)|DROP TABLE (\w+)|ALTER TABLE (\w+) RENAME TO (\w+)"
)


def _tables_of(migrations: list[str]) -> set[str]:
    """The tables the migrations leave, their creations, drops and renames taken in order."""
    tables: set[str] = set()
    for created, dropped, old, new in _TABLE_CHANGES.findall("".join(migrations)):
        if created:
            tables.add(created)
        elif dropped:
            tables.discard(dropped)
        else:
            tables.discard(old)
            tables.add(new)
    return tables


def _check_ours(conn: sqlite3.Connection, version: int, path: str) -> None:
    """Refuse a file another program made: tables but no version, or a version without ours.

    :raises SchemaError: naming the file, what it holds and what to do.
    """
    if version > LATEST_VERSION:
        raise SchemaError(
            f"{path} has schema version {version}, newer than this code knows "
            f"({LATEST_VERSION}). Nothing was changed: update the code (git pull) rather than "
            "downgrade the data, or pass another --db if the file is not a pairs-monitor "
            "database."
        )
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    present = {name for name in present if not name.startswith("sqlite_")}
    if version == 0 and present:
        raise SchemaError(
            f"{path} has table(s) {', '.join(sorted(present))} but no schema version, so it "
            "was not made by db_setup.py (another program's database?). Nothing was changed: "
            "move the file aside or pass another --db."
        )
    missing = _tables_of(MIGRATIONS[:version]) - present
    if missing:
        raise SchemaError(
            f"{path} says schema version {version} but lacks the table(s) "
            f"{', '.join(sorted(missing))} that version has, so it was not made by "
            "db_setup.py (another program's database?). Nothing was changed: move the file "
            "aside or pass another --db."
        )


def _check_writable(conn: sqlite3.Connection, version: int, path: str) -> None:
    """Write the version it already has, inside the caller's transaction (rolled back after).

    BEGIN IMMEDIATE succeeds on a read-only file in WAL mode; only a write says it is not.
    """
    try:
        conn.execute(f"PRAGMA user_version = {version:d}")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
            raise _read_only(path, exc) from exc
        raise


def _journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _check_writable_files(path: str) -> None:
    """The file, and its -wal and -shm (or the folder that will hold them), are writable.

    For a database that needs no migration, without taking the write lock:
    ``os.access`` answers for this user, and EROFS for a read-only mount.
    """
    file = Path(path)
    sides = [file.with_name(file.name + suffix) for suffix in ("-wal", "-shm")]
    writable = os.access(file, os.W_OK) and all(
        os.access(side, os.W_OK) if side.exists() else os.access(file.parent, os.W_OK)
        for side in sides
    )
    if not writable:
        raise _read_only(path, sqlite3.OperationalError("attempt to write a readonly database"))


def _read_only(path: str, exc: sqlite3.Error) -> ReadOnlyDatabaseError:
    return ReadOnlyDatabaseError(
        f"{path} cannot be written by this user ({exc}): the daemon writes the file and, "
        "beside it, its -wal and -shm files. Make the file and its folder writable "
        f"(chmod u+w; the owner is uid {_owner(path)}), run as the file's owner, or pass "
        "another --db. The page only reads it."
    )


def _owner(path: str) -> str:
    try:
        return str(Path(path).stat().st_uid)
    except OSError:
        return "unknown"


def migrate(conn: sqlite3.Connection, path: str | Path | None = None) -> int:
    """Bring the database to ``LATEST_VERSION``; return the version it started at.

    Nothing is changed, the journal mode included, before the file has passed the checks.
    Safe when several processes migrate one file at once: each step takes the write lock
    (BEGIN IMMEDIATE) before it reads the version, so a step another process has made is
    seen and skipped.

    :param path: the file, named in messages (default: what the connection has open).
    :raises SchemaError: for a database newer than this code, or one another program made
        (tables but no version of ours).
    :raises ReadOnlyDatabaseError: when the file or its folder cannot be written.
    """
    name = str(path) if path is not None else _main_file(conn)
    try:
        # First a plain read, which a writer holding the lock does not block (WAL): a
        # database already at the latest version needs no lock, so another program's
        # long transaction is met by the writer's own start-up timeout, not here.
        conn.execute("BEGIN")
        start = schema_version(conn)
        _check_ours(conn, start, name)
        up_to_date = start >= LATEST_VERSION and _journal_mode(conn) == "wal"
        if up_to_date:
            _check_writable_files(name)
        else:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            start = schema_version(conn)
            _check_ours(conn, start, name)
            _check_writable(conn, start, name)
    except sqlite3.OperationalError as exc:
        # A WAL file in a folder this user cannot write fails at its first read.
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
            raise _read_only(name, exc) from exc
        raise
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # the checks change nothing
    if up_to_date:
        return start
    _switch_to_wal(conn)
    # A table rebuild (version 6) drops a parent table: with foreign keys on, that would
    # delete its rows first and cascade. The pragma cannot change inside a transaction.
    foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        _migrate_steps(conn, name)
    finally:
        conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    return start


def _migrate_steps(conn: sqlite3.Connection, name: str) -> None:
    """Apply the migrations one transaction each, until the latest version."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the lock: another process may have migrated meanwhile.
            version = schema_version(conn)
            if version >= LATEST_VERSION:
                conn.execute("ROLLBACK")
                break
            _check_ours(conn, version, name)
            # executescript would commit our transaction first; run statement by statement.
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("migrated schema from version %d to %d", version, version + 1)


def _switch_to_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection is busy with the file.

    The switch can answer "database is locked" at once, without waiting on the busy
    timeout, while another process opens or switches the same new file.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _main_file(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file)
    return "the database"


def _statements(script: str) -> list[str]:
    """Split a schema script into complete statements (comments stay with them)."""
    statements, current = [], []
    for line in script.splitlines(keepends=True):
        current.append(line)
        candidate = "".join(current)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            current = []
    if "".join(current).strip():
        raise SchemaError(f"incomplete statement in schema: {''.join(current)!r}")
    return statements


def setup(path: str | Path = DEFAULT_DB) -> int:
    """Create or migrate the database at ``path``; return the version it started at.

    :param path: a SQLite file, or a ``postgresql://`` URL (``store/postgres.py``).
    """
    if is_postgres_url(path):
        from pairs_monitor.store import postgres

        return postgres.setup(str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain connection: connect_for_writing would switch a file we may refuse to WAL.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        return migrate(conn, path)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        help="database file, or postgresql://user:password@host:port/dbname (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name = redact(args.db)  # a URL's password is never logged
    try:
        start = setup(args.db)
    except (SchemaError, sqlite3.DatabaseError) as exc:
        log.error("%s: %s", name, exc)
        return 1
    except Exception as exc:
        if not _is_driver_error(exc):
            raise
        log.error("%s: %s", name, str(exc).replace(args.db, name))
        return 1
    if start == LATEST_VERSION:
        log.info("%s is already at schema version %d; nothing to do", name, LATEST_VERSION)
    else:
        log.info("%s is at schema version %d", name, LATEST_VERSION)
    return 0


def _is_driver_error(exc: Exception) -> bool:
    """True for an error of the PostgreSQL driver (a refused connection, a SQL error)."""
    return type(exc).__module__.startswith("psycopg")


if __name__ == "__main__":
    sys.exit(main())
