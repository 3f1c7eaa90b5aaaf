"""The daemon's statements (store/sql.py after the writer's own, store/klines.py) give the
same answers on SQLite and on PostgreSQL, run through the writer's ``submit`` as the
modules run them: on PostgreSQL through ``postgres.PgConnection`` and its ``?``
translation. The modules moving to PostgreSQL next use them unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from pairs_monitor.store import klines, sql
from pairs_monitor.store.klines import KlineBar
from pairs_monitor.store.writer import TradeWriter

pytestmark = pytest.mark.postgres

V, S = "binance-spot", "AAAUSDT"
T0 = 1_700_000_000_000_000
FEED = {
    "venue": V,
    "symbol": S,
    "source": "live",
    "source_since_ms": 1,
    "connected": 1,
    "last_trade_id": 9,
    "last_trade_time_us": T0,
    "last_message_ms": 3,
    "reconnects": 0,
    "trades_per_s": 1.5,
    "queue_depth": 0,
    "gaps_open": 1,
    "gaps_filled": 0,
    "gaps_abandoned": 0,
    "rejected": 0,
    "nonmarket": 1,
    "problem": None,
    "updated_ms": 5,
}

# (what it does, statement or function, parameters): run in this order on each store.
STEPS: list[tuple[str, Any, Any]] = [
    ("feed status", sql.UPSERT_FEED_STATUS, FEED),
    # an update with NULLs keeps the last known trade and message (coalesce)
    (
        "feed status again",
        sql.UPSERT_FEED_STATUS,
        {**FEED, "last_trade_id": None, "last_message_ms": None, "updated_ms": 6},
    ),
    (
        "writer status",
        sql.UPSERT_WRITER_STATUS,
        {
            "state": "ok",
            "last_error": None,
            "failing_since_ms": None,
            "queue_depth": 0,
            "trades_stored": 7,
            "rows_rejected": 0,
            "updated_ms": 1,
        },
    ),
    ("run", sql.INSERT_RUN, (V, "replay", S, '{"x": 1}', 42, 100)),
    ("run finished", sql.FINISH_RUN, (200, 1)),
    ("replay runs", sql.REPLAY_RUNS, ()),
    ("gap", sql.OPEN_GAP, (V, S, 5, 6, "live-jump", "open", 1, None, 0, None, None)),
    ("gap noted", sql.NOTE_OPEN_GAP, (5, 7, "older than REST", 1)),
    ("open gaps", sql.OPEN_GAPS, (V, S)),
    ("gap abandoned", sql.RESOLVE_GAP, ("abandoned", 9, 0, 7, "gone", None, 1)),
    ("abandoned gaps", sql.ABANDONED_GAPS, (V, S)),
    ("non-market", sql.UPSERT_NONMARKET, (V, S, 12, None, "NOT_IN_REST")),
    ("non-market from the socket", sql.UPSERT_NONMARKET, (V, S, 12, T0, "INSURANCE_FUND")),
    ("non-market again from REST", sql.UPSERT_NONMARKET, (V, S, 12, None, "NOT_IN_REST")),
    ("non-market rows", "SELECT * FROM nonmarket_trades", ()),
    ("holes", sql.STORED_HOLES, (V, S, 100)),
    ("last stored id", sql.LAST_STORED_ID, (V, S)),
    ("time before", sql.TIME_BEFORE, (V, S, 9)),
    ("stored of an aggregate", sql.STORED_OF_AGGREGATE, (V, S, 1, 20, 3, 4)),
    ("stored of nothing", sql.STORED_OF_AGGREGATE, (V, "NONE", 1, 20, 3, 4)),
    ("last trade", sql.LAST_TRADE, (V, S)),
    ("tape start", klines.TAPE_START_US, (V, S)),
    ("time before id", klines.TIME_BEFORE_ID, (V, S, 9)),
    ("time after id", klines.TIME_AFTER_ID, (V, S, 9)),
    ("feed row", "SELECT * FROM feed_status", ()),
    ("writer row", "SELECT * FROM writer_status", ()),
    ("run rows", "SELECT * FROM ingest_runs", ()),
    ("gap rows", "SELECT * FROM gaps", ()),
]

# ids 1-4, 8-11, 13-20: holes 5-7 and 12 (12 is non-market, so no hole)
TRADES = [
    (V, S, i, T0 + i * 300_000, 100.0 + i, 0.5 * i, i % 2) for i in [*range(1, 5), *range(8, 12)]
] + [(V, S, i, T0 + i * 300_000, 100.0 + i, 0.5 * i, i % 2) for i in range(13, 21)]


def run_steps(db: str) -> dict[str, Any]:
    writer = TradeWriter(db)
    writer.start()
    writer.put_trades(TRADES)
    answers: dict[str, Any] = {}
    for name, statement, params in STEPS:

        def step(conn: Any, statement: str = statement, params: Any = params) -> Any:
            cursor = conn.execute(statement, params)
            rows = cursor.fetchall() if cursor.description else cursor.rowcount
            return [tuple(row) for row in rows] if isinstance(rows, list) else rows

        answers[name] = writer.submit(step).result(10)

    def kline_steps(conn: Any) -> Any:
        bars = [KlineBar(T0 // 10**6 + k, 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, 1.0, 2) for k in (50, 51)]
        inserted = klines.store_bars(conn, V, S, 1, bars)
        again = klines.store_bars(conn, V, S, 1, bars)
        longer = klines.store_bars(conn, V, S, 60, bars)
        klines.add_span(conn, V, S, 1, 100, 200, "rest")
        klines.add_span(conn, V, S, 1, 150, 300, "rest")  # merged with the first
        klines.add_span(conn, V, S, 1, 500, 600, "file.zip")
        return inserted, again, longer, klines.spans(conn, V, S, 1)

    answers["klines"] = writer.submit(kline_steps).result(10)
    assert writer.close()
    return answers


def test_every_statement_answers_the_same_on_both_stores(tmp_path, postgres_url):
    on_sqlite = run_steps(str(tmp_path / "ticks.db"))
    on_postgres = run_steps(postgres_url)
    assert on_postgres == on_sqlite
    # and the answers are the right ones, not merely the same
    assert on_sqlite["holes"] == [(5, 7)]
    assert on_sqlite["last stored id"] == [(20,)]
    assert on_sqlite["stored of an aggregate"] == [(14, sum(0.5 * i for i in TRADES_IDS) - 3.5)]
    assert on_sqlite["stored of nothing"] == [(0, 0.0)]
    assert on_sqlite["non-market rows"] == [(V, S, 12, T0, "INSURANCE_FUND")]
    assert on_sqlite["feed row"][0][5:8] == (9, T0, 3)
    assert on_sqlite["klines"] == (2, 0, 2, [(100, 300), (500, 600)])


TRADES_IDS = [row[2] for row in TRADES]


def test_one_way_to_open_either_store_read_only(tmp_path, postgres_url):
    from pairs_monitor.store import connection, schema
    from pairs_monitor.store.schema import LATEST_VERSION

    path = tmp_path / "ticks.db"
    schema.setup(path)
    schema.setup(postgres_url)
    for db in (str(path), postgres_url):
        conn = connection.connect_read_only(db)
        try:
            assert connection.schema_version(conn) == LATEST_VERSION
            assert connection.is_postgres(conn) is (db == postgres_url)
            counted = conn.execute("SELECT count(*) FROM trades WHERE symbol = ?", (S,))
            assert counted.fetchone() == (0,)
        finally:
            conn.close()


def test_sums_come_back_as_sqlite_gives_them(postgres_url):
    from pairs_monitor.store import postgres

    with postgres.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT sum(x), sum(x) / 2.0, sum(y) FROM (VALUES (1::bigint, 0.5::float8), "
            "(4, 0.25)) AS t(x, y)"
        ).fetchone()
    assert row == (5, 2.5, 0.75)
    assert [type(value) for value in row] == [int, float, float]


def test_many_rows_of_named_parameters_run_as_sqlite_runs_them(tmp_path, postgres_url):
    """executemany takes mappings for ``:name`` statements and sequences for ``?N`` ones, as
    sqlite3 does: the same feed rows stored both ways read back the same on each store."""
    import sqlite3

    from pairs_monitor.store import postgres, schema

    rows = [
        {**FEED, "symbol": symbol, "trades_per_s": rate}
        for symbol, rate in (("A", 1.0), ("B", 2.5))
    ]
    numbered = (
        "INSERT INTO writer_status (id, state, queue_depth, trades_stored, updated_ms)"
        " VALUES (?1, ?2, ?3, ?3, ?4)"
    )
    path = tmp_path / "ticks.db"
    schema.setup(path)
    schema.setup(postgres_url)
    lite = sqlite3.connect(path, isolation_level=None)
    with postgres.connect(postgres_url) as raw:
        pg = postgres.PgConnection(raw)
        for conn in (lite, pg):
            conn.executemany(sql.UPSERT_FEED_STATUS, rows)
            conn.executemany(numbered, [(1, "ok", 4, 9)])
        raw.commit()
        read = "SELECT symbol, trades_per_s FROM feed_status ORDER BY symbol"
        assert (
            pg.execute(read).fetchall() == lite.execute(read).fetchall() == [("A", 1.0), ("B", 2.5)]
        )
        status = "SELECT state, queue_depth, trades_stored, updated_ms FROM writer_status"
        assert pg.execute(status).fetchall() == lite.execute(status).fetchall() == [("ok", 4, 4, 9)]
    lite.close()
