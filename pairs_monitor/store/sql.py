"""Every SQL statement the ingest daemon runs (the schema's DDL stays in ``schema.py``).

The modules import these by name; a statement's comment says why it is written the way
it is. All take ``?`` parameters; none is built from data. Those after the writer's own
run on PostgreSQL too, through ``postgres.PgConnection``: written in the SQL both speak
(subqueries named, columns of the upsert's table qualified, no ``total()`` or scalar
``max(a, b)``); tests/test_pg_statements.py runs each on both stores.
"""

from __future__ import annotations

import functools

from pairs_monitor.store.schema import TRADES_COLUMNS

# -- the writer's transaction -----------------------------------------------------------

# IMMEDIATE: take the write lock at the start, so a busy database fails before any work.
BEGIN_WRITE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
# A submitted call runs inside a savepoint, so its failure undoes only itself.
SAVEPOINT_CALL = "SAVEPOINT call"
RELEASE_CALL = "RELEASE call"
ROLLBACK_TO_CALL = "ROLLBACK TO call"
TEMP_IN_MEMORY = "PRAGMA temp_store=MEMORY"  # the staging table never hits disk

# -- trades: staged, de-duplicated, stored, folded into bars ---------------------------

# The staging table is keyed by second before trade id: trade ids rise with time within a
# symbol, so the bars GROUP BY below walks the key in order instead of sorting the batch.
# Its constraints are the writer's last check of each row, run at C speed: STRICT refuses a
# value of the wrong type, NOT NULL a NaN (SQLite reads it as NULL), and the named CHECKs
# what no reader can use: an infinite or non-positive price (inf and -inf in one bar's sums
# would make a NaN that bars_1s refuses, wedging every later batch), a time a nanosecond
# timestamp cannot hold (the page converts with pandas: 1970 to 2262-04-11). A row that fails
# one is set aside and counted; the name of the failed constraint is the reason logged.
MAX_TIME_US = 9_223_372_036_854_775  # pandas.Timestamp.max, in microseconds
STAGING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS incoming (
    venue TEXT NOT NULL CONSTRAINT venue_not_empty CHECK (venue <> ''),
    symbol TEXT NOT NULL CONSTRAINT symbol_not_empty CHECK (symbol <> ''),
    trade_id INTEGER NOT NULL CONSTRAINT trade_id_not_negative CHECK (trade_id >= 0),
    trade_time_us INTEGER NOT NULL CONSTRAINT trade_time_us_in_1970_to_2262
        CHECK (trade_time_us BETWEEN 0 AND {MAX_TIME_US:d}),
    price REAL NOT NULL CONSTRAINT price_finite_and_positive
        CHECK (price > 0 AND price <= 1.7976931348623157e308),
    qty REAL NOT NULL CONSTRAINT qty_finite_and_not_negative
        CHECK (qty >= 0 AND qty <= 1.7976931348623157e308),
    buyer_is_maker INTEGER NOT NULL CONSTRAINT buyer_is_maker_0_or_1
        CHECK (buyer_is_maker IN (0, 1)),
    bar_time_s INTEGER NOT NULL,
    CONSTRAINT quote_volume_finite CHECK (price * qty <= 1.7976931348623157e308),
    PRIMARY KEY (venue, symbol, bar_time_s, trade_id)
) WITHOUT ROWID, STRICT
"""
# Staging runs many rows per statement. executemany steps once per row, and each step lets
# go of the GIL and waits to take it back: next to a busy receive thread that wait, not
# SQLite, was the writer's cost (35,000 trades/s instead of 250,000). A few fixed sizes
# (a remainder of 437 rows: 8 x 50 + 7 x 5 + 2 x 1) keep the prepared statements few.
STAGE_SIZES = (500, 50, 5, 1)
_FIELDS = len(TRADES_COLUMNS)


@functools.lru_cache(maxsize=len(STAGE_SIZES))
def stage_many(rows: int) -> str:
    """The staging INSERT for ``rows`` rows of numbered parameters.

    ON CONFLICT (not OR IGNORE): only a repeated key is skipped; a NULL price, a value of
    the wrong type (a fractional time, a text price) or a failed CHECK still fails.
    """
    values = ", ".join(
        f"(?{k + 1}, ?{k + 2}, ?{k + 3}, ?{k + 4}, ?{k + 5}, ?{k + 6}, ?{k + 7}, "
        f"CAST(?{k + 4} AS INTEGER) / 1000000)"
        for k in range(0, rows * _FIELDS, _FIELDS)
    )
    return f"INSERT INTO temp.incoming VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608 (placeholders only)


# Only a batch whose lowest id of some symbol is not above that symbol's highest stored id
# can repeat a stored trade (a reconnect overlap, a backfill); live batches skip the lookup.
MAY_OVERLAP_STORED = """
SELECT EXISTS (
    SELECT 1 FROM (SELECT venue, symbol, min(trade_id) AS lowest
                   FROM temp.incoming GROUP BY venue, symbol) AS b
    WHERE b.lowest <= (SELECT max(t.trade_id) FROM main.trades AS t
                       WHERE t.venue = b.venue AND t.symbol = b.symbol))
"""
DROP_ALREADY_STORED = """
DELETE FROM temp.incoming WHERE EXISTS (
    SELECT 1 FROM main.trades AS t
    WHERE t.venue = incoming.venue AND t.symbol = incoming.symbol
      AND t.trade_id = incoming.trade_id)
"""
STORE_NEW = """
INSERT INTO main.trades
SELECT venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker FROM temp.incoming
WHERE true ON CONFLICT DO NOTHING
"""
# A trade id staged twice with different times (corrupt input) stores once; drop the copy
# that lost, so the bars count only what is in trades.
DROP_CONFLICTING_COPIES = """
DELETE FROM temp.incoming WHERE NOT EXISTS (
    SELECT 1 FROM main.trades AS t
    WHERE t.venue = incoming.venue AND t.symbol = incoming.symbol
      AND t.trade_id = incoming.trade_id AND t.trade_time_us = incoming.trade_time_us
      AND t.price = incoming.price AND t.qty = incoming.qty)
RETURNING venue, symbol, trade_id
"""
# The open and close of a second are the prices of its lowest and highest trade ids, so a
# late trade (a backfilled gap) lands in the right place of an existing bar.
UPDATE_BARS = """
INSERT INTO main.bars_1s (venue, symbol, bar_time_s, open, high, low, close, volume,
                          quote_volume, taker_buy_volume, trade_count,
                          first_trade_id, last_trade_id)
SELECT g.venue, g.symbol, g.bar_time_s,
       (SELECT price FROM temp.incoming AS o
         WHERE o.venue = g.venue AND o.symbol = g.symbol AND o.bar_time_s = g.bar_time_s
           AND o.trade_id = g.first_trade_id),
       g.high, g.low,
       (SELECT price FROM temp.incoming AS c
         WHERE c.venue = g.venue AND c.symbol = g.symbol AND c.bar_time_s = g.bar_time_s
           AND c.trade_id = g.last_trade_id),
       g.volume, g.quote_volume, g.taker_buy_volume, g.trade_count,
       g.first_trade_id, g.last_trade_id
FROM (SELECT venue, symbol, bar_time_s,
             max(price) AS high, min(price) AS low, sum(qty) AS volume,
             sum(price * qty) AS quote_volume,
             sum(CASE WHEN buyer_is_maker THEN 0 ELSE qty END) AS taker_buy_volume,
             count(*) AS trade_count, min(trade_id) AS first_trade_id,
             max(trade_id) AS last_trade_id
      FROM temp.incoming GROUP BY venue, symbol, bar_time_s) AS g
WHERE true
ON CONFLICT (venue, symbol, bar_time_s) DO UPDATE SET
    open = CASE WHEN excluded.first_trade_id < first_trade_id THEN excluded.open ELSE open END,
    close = CASE WHEN excluded.last_trade_id > last_trade_id THEN excluded.close ELSE close END,
    high = max(high, excluded.high),
    low = min(low, excluded.low),
    volume = volume + excluded.volume,
    quote_volume = quote_volume + excluded.quote_volume,
    taker_buy_volume = taker_buy_volume + excluded.taker_buy_volume,
    trade_count = trade_count + excluded.trade_count,
    first_trade_id = min(first_trade_id, excluded.first_trade_id),
    last_trade_id = max(last_trade_id, excluded.last_trade_id)
"""
CLEAR_STAGING = "DELETE FROM temp.incoming"

COUNT_STAGED = "SELECT count(*) FROM temp.incoming"

# -- feed_status, ingest_runs ---------------------------------------------------------

UPSERT_FEED_STATUS = """
INSERT INTO feed_status (venue, symbol, source, source_since_ms, connected, last_trade_id,
    last_trade_time_us, last_message_ms, reconnects, trades_per_s, queue_depth, gaps_open,
    gaps_filled, gaps_abandoned, rejected, nonmarket, problem, updated_ms)
VALUES (:venue, :symbol, :source, :source_since_ms, :connected, :last_trade_id,
    :last_trade_time_us, :last_message_ms, :reconnects, :trades_per_s, :queue_depth,
    :gaps_open, :gaps_filled, :gaps_abandoned, :rejected, :nonmarket, :problem, :updated_ms)
ON CONFLICT (venue, symbol) DO UPDATE SET
    source = excluded.source, source_since_ms = excluded.source_since_ms,
    connected = excluded.connected,
    last_trade_id = coalesce(excluded.last_trade_id, feed_status.last_trade_id),
    last_trade_time_us = coalesce(excluded.last_trade_time_us, feed_status.last_trade_time_us),
    last_message_ms = coalesce(excluded.last_message_ms, feed_status.last_message_ms),
    reconnects = excluded.reconnects, trades_per_s = excluded.trades_per_s,
    queue_depth = excluded.queue_depth, gaps_open = excluded.gaps_open,
    gaps_filled = excluded.gaps_filled, gaps_abandoned = excluded.gaps_abandoned,
    rejected = excluded.rejected, nonmarket = excluded.nonmarket, problem = excluded.problem,
    updated_ms = excluded.updated_ms
"""
# The writer's health: one row (id 1), written by the status reporter's own connection.
UPSERT_WRITER_STATUS = """
INSERT INTO writer_status (id, state, last_error, failing_since_ms, queue_depth,
    trades_stored, rows_rejected, updated_ms)
VALUES (1, :state, :last_error, :failing_since_ms, :queue_depth, :trades_stored,
    :rows_rejected, :updated_ms)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, last_error = excluded.last_error,
    failing_since_ms = excluded.failing_since_ms, queue_depth = excluded.queue_depth,
    trades_stored = excluded.trades_stored, rows_rejected = excluded.rows_rejected,
    updated_ms = excluded.updated_ms
"""
INSERT_RUN = (
    "INSERT INTO ingest_runs (venue, source, symbols, params_json, pid, started_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
FINISH_RUN = "UPDATE ingest_runs SET stopped_ms = ? WHERE run_id = ?"
# Replay reads earlier replay runs' id numberings from their parameters.
REPLAY_RUNS = "SELECT run_id, params_json FROM ingest_runs WHERE source = 'replay' ORDER BY run_id"

# -- gaps and where each tape stands ---------------------------------------------------

OPEN_GAP = (
    "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, status, "
    "detected_ms, resolved_ms, trades_recovered, note, filled_from) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# filled_from: the endpoint a fill came from; kept when a resolve names none (abandoned).
RESOLVE_GAP = (
    "UPDATE gaps SET status = ?, resolved_ms = ?, trades_recovered = trades_recovered + ?, "
    "last_missing_id = ?, note = ?, filled_from = coalesce(?, filled_from) WHERE gap_id = ?"
)
# An open gap that stays open (older than REST serves, say): its range and why.
NOTE_OPEN_GAP = (
    "UPDATE gaps SET first_missing_id = ?, last_missing_id = ?, note = ? WHERE gap_id = ?"
)
# Holes inside the stored ids of a symbol up to a bound: one window-function pass over the
# ids of trades and of non-market trades together (an insurance-fund id is no hole). The two
# primary keys are merged in order (MERGE (UNION ALL)), so the window sorts nothing.
STORED_HOLES = """
SELECT trade_id + 1, next_id - 1 FROM (
    SELECT trade_id, lead(trade_id) OVER (ORDER BY trade_id) AS next_id FROM (
        SELECT trade_id FROM trades WHERE venue = ?1 AND symbol = ?2 AND trade_id <= ?3
        UNION ALL
        SELECT trade_id FROM nonmarket_trades
        WHERE venue = ?1 AND symbol = ?2 AND trade_id <= ?3) AS ids) AS pairs
WHERE next_id > trade_id + 1
ORDER BY trade_id
"""
# The highest id accounted for: a trade, or a non-market trade (two primary-key lookups;
# the aggregate max skips the NULL of a table holding none).
LAST_STORED_ID = """
SELECT max(trade_id) FROM (
    SELECT max(trade_id) AS trade_id FROM trades WHERE venue = ?1 AND symbol = ?2
    UNION ALL
    SELECT max(trade_id) FROM nonmarket_trades WHERE venue = ?1 AND symbol = ?2) AS highest
"""
# The time (µs) of the last stored trade below an id: where aggTrades starts looking for
# the aggregate of the ids after it (trade times do not decrease as ids rise).
TIME_BEFORE = (
    "SELECT trade_time_us FROM trades WHERE venue = ? AND symbol = ? AND trade_id < ? "
    "ORDER BY trade_id DESC LIMIT 1"
)
# What is stored of one aggregate's ids outside the range being filled: its other trades'
# count and quantity, so the ids filled get the rest of the aggregate's quantity.
STORED_OF_AGGREGATE = (
    "SELECT count(*), coalesce(sum(qty), 0.0) FROM trades WHERE venue = ?1 AND symbol = ?2 "
    "AND trade_id BETWEEN ?3 AND ?4 AND trade_id NOT BETWEEN ?5 AND ?6"
)
# Non-market trades: the socket's (with its time and type) wins over an id REST left out
# (NOT_IN_REST, no time); a repeat changes nothing.
UPSERT_NONMARKET = """
INSERT INTO nonmarket_trades (venue, symbol, trade_id, trade_time_us, trade_type)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol, trade_id) DO UPDATE SET
    trade_time_us = excluded.trade_time_us, trade_type = excluded.trade_type
WHERE nonmarket_trades.trade_type = 'NOT_IN_REST' AND excluded.trade_type <> 'NOT_IN_REST'
"""
# Ranges REST was asked for and did not have: a later hole scan does not ask again.
ABANDONED_GAPS = (
    "SELECT first_missing_id, last_missing_id FROM gaps "
    "WHERE venue = ? AND symbol = ? AND status = 'abandoned'"
)
OPEN_GAPS = (
    "SELECT gap_id, first_missing_id, last_missing_id FROM gaps "
    "WHERE venue = ? AND symbol = ? AND status = 'open' ORDER BY first_missing_id"
)
# The simulator resumes a symbol's tape from its last stored trade.
LAST_TRADE = (
    "SELECT trade_id, price FROM trades WHERE venue = ? AND symbol = ? "
    "ORDER BY trade_id DESC LIMIT 1"
)
