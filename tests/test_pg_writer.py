"""The writer's promises on both stores: every test runs on a SQLite file and on a real
PostgreSQL 15 database (tests/helpers/postgres.py). Exactly-once storage, bars that match
the trades, a bad row set aside with its batch stored, a failing call undone alone, a kline
bar giving way to trades, backpressure; on PostgreSQL also a lock retried, a server
restart mid-run that loses and doubles nothing, and a COMMIT whose answer was lost."""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import psycopg
import pytest

from pairs_monitor.store import klines, postgres
from pairs_monitor.store.postgres_writer import PostgresStorage, ids_surely_once, is_transient
from pairs_monitor.store.target import is_postgres_url
from pairs_monitor.store.writer import Rejects, TradeWriter
from tests.helpers.postgres import PostgresCluster
from tests.test_writer import expected_bars, random_tape

VENUE = "binance-spot"
T0 = 1_700_000_000_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    """A SQLite file's path or a fresh PostgreSQL database's URL: what ``--db`` takes."""
    if request.param == "sqlite":
        return str(tmp_path / "ticks.db")
    return request.getfixturevalue("postgres_url")


def query(db: str, statement: str) -> list[tuple]:
    """Rows of ``statement`` (``?`` parameters none) from either store."""
    if is_postgres_url(db):
        with postgres.connect(db) as conn:
            return [tuple(row) for row in conn.execute(statement).fetchall()]
    with sqlite3.connect(db) as conn:
        return conn.execute(statement).fetchall()


def stored_trades(db: str) -> list[tuple]:
    return query(db, "SELECT * FROM trades ORDER BY venue, symbol, trade_id")


def stored_bars(db: str) -> pd.DataFrame:
    columns = [
        "venue",
        "symbol",
        "bar_time_s",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "taker_buy_volume",
        "trade_count",
        "first_trade_id",
        "last_trade_id",
    ]
    rows = query(db, f"SELECT {', '.join(columns)} FROM bars_1s")
    bars = pd.DataFrame(rows, columns=columns)
    return bars.set_index(["venue", "symbol", "bar_time_s"]).sort_index()


def assert_bars_match(db: str, rows: list[tuple]) -> None:
    expected = expected_bars(rows)
    actual = stored_bars(db)[expected.columns]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-12)


def start_writer(db: str, **kwargs: Any) -> TradeWriter:
    writer = TradeWriter(db, **kwargs)
    writer.start()
    return writer


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_bars_match_trades_whatever_the_batching_order_and_duplicates(db):
    rows = random_tape(3_000)
    rng = random.Random(1)
    chunks, start = [], 0
    while start < len(rows):
        size = rng.randint(1, 400)
        chunks.append(rows[start : start + size])
        start += size
    rng.shuffle(chunks)  # a backfill lands after later live trades
    chunks += [rng.sample(rows, 300), rows[:50]]  # and repeats, in one batch and across
    writer = start_writer(db, max_batch_rows=700)
    for chunk in chunks:
        writer.put_trades(chunk)
    assert writer.close()
    assert stored_trades(db) == sorted(set(rows))
    assert writer.stats.trades_stored == len(rows)
    assert_bars_match(db, rows)


GOOD = (VENUE, "AAAUSDT", 1, T0, 5.0, 1.0, 0)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ((VENUE, "AAAUSDT", 99, T0, None, 1.0, 0), "no price"),
        ((VENUE, "AAAUSDT", 99, T0, math.nan, 1.0, 0), "NaN price"),
        ((VENUE, "AAAUSDT", 99, T0, math.inf, 1.0, 0), "infinite price"),
        ((VENUE, "AAAUSDT", 99, T0, -5.0, 1.0, 0), "negative price"),
        ((VENUE, "AAAUSDT", 99, T0, 5.0, -1.0, 0), "negative quantity"),
        ((VENUE, "AAAUSDT", 99, T0, 1e300, 1e300, 0), "price x qty overflows"),
        ((VENUE, "AAAUSDT", 99, -1, 5.0, 1.0, 0), "time before 1970"),
        ((VENUE, "AAAUSDT", 99, 10**19, 5.0, 1.0, 0), "time past 2262"),
        ((VENUE, "AAAUSDT", 99, T0 + 0.5, 5.0, 1.0, 0), "fractional time"),
        ((VENUE, "AAAUSDT", 2**64, T0, 5.0, 1.0, 0), "id beyond 64 bits"),
        ((VENUE, "AAAUSDT", -3, T0, 5.0, 1.0, 0), "negative id"),
        ((VENUE, "AAAUSDT", 99, T0, "5.0x", 1.0, 0), "text price"),
        ((VENUE, "AAAUSDT", 99, T0, {"p": 5}, 1.0, 0), "a dict"),
        ((VENUE, "AAAUSDT", 99, T0, 5.0, 1.0, 2), "maker flag 2"),
        ((VENUE, "", 99, T0, 5.0, 1.0, 0), "empty symbol"),
        (("", "AAAUSDT", 99, T0, 5.0, 1.0, 0), "empty venue"),
        ((VENUE, "AAA\ud800", 99, T0, 5.0, 1.0, 0), "lone surrogate"),
        ((VENUE, "AAAUSDT", 99, T0), "four fields"),
    ],
)
def test_a_bad_row_is_set_aside_and_the_rest_of_its_batch_is_stored(db, bad, why, caplog):
    good = [(VENUE, "AAAUSDT", i, T0 + i * 400_000, 5.0 + i, 1.0, i % 2) for i in range(1, 6)]
    writer = start_writer(db)
    writer.put_trades([*good[:2], bad, *good[2:]])
    assert writer.close()
    assert stored_trades(db) == good, why
    assert writer.stats.rows_rejected == 1, why
    assert writer.stats.trades_stored == 5
    assert "rejected trade row" in caplog.text
    assert_bars_match(db, good)


def test_a_nul_in_a_symbol_is_text_to_sqlite_and_refused_by_postgresql(db):
    odd = (VENUE, "AAA\x00USDT", 99, T0, 5.0, 1.0, 0)
    writer = start_writer(db)
    writer.put_trades([GOOD, odd])
    assert writer.close()
    if is_postgres_url(db):  # PostgreSQL's text holds no NUL: set aside, counted
        assert (stored_trades(db), writer.stats.rows_rejected) == ([GOOD], 1)
    else:
        assert (stored_trades(db), writer.stats.rows_rejected) == (sorted([GOOD, odd]), 0)


def test_a_time_or_id_given_as_an_integral_float_is_stored_as_an_integer(db):
    writer = start_writer(db)
    as_floats: Any = (VENUE, "AAAUSDT", 1, float(T0), 5.0, 1.0, True)
    writer.put_trades([as_floats])
    assert writer.close()
    assert stored_trades(db) == [(VENUE, "AAAUSDT", 1, T0, 5.0, 1.0, 1)]
    assert query(db, "SELECT bar_time_s FROM bars_1s") == [(T0 // 1_000_000,)]


def test_one_id_given_as_an_int_and_as_an_integral_float_is_stored_once(db, caplog):
    first = (VENUE, "AAAUSDT", 7, T0, 5.0, 1.0, 0)
    again: Any = (VENUE, "AAAUSDT", 7.0, T0 + 2_000_000, 6.0, 1.0, 0)  # another second
    writer = start_writer(db)
    writer.put_trades([first, again])
    assert writer.close()
    assert stored_trades(db) == [first]
    assert_bars_match(db, [first])
    assert "trade 7 arrived twice with different contents" in caplog.text


@pytest.mark.parametrize(
    ("rows", "surely_once"),
    [
        ([(VENUE, "A", 1), (VENUE, "A", 2), (VENUE, "B", 1)], True),
        ([(VENUE, "A", 1), (VENUE, "A", 1)], False),
        ([(VENUE, "A", 1), (VENUE, "A", 1.0)], False),  # equal in Python and on the server
        ([(VENUE, "A", 1), (VENUE, "A", 2.0)], False),  # a float's text may not be its value
        ([(VENUE, "A", 1), (VENUE, "A", "1")], False),  # the server reads "1" as 1
        ([(VENUE, "A", 1), (5, "A", 1)], False),  # the server reads 5 as the text "5"
        ([(VENUE, "A", 1), (VENUE, "A", [1])], False),  # unhashable
        ([(VENUE, "A", 1), (VENUE, "A")], False),  # short
        ([], True),
    ],
)
def test_a_batch_is_sorted_unless_its_ids_are_surely_distinct(rows, surely_once):
    assert ids_surely_once(rows) is surely_once


def test_many_bad_rows_among_many_good_cost_little_and_lose_nothing(db):
    rows = random_tape(5_000, symbols=("AAAUSDT",))
    bad_at = set(range(17, len(rows), 997))
    mixed = [
        (VENUE, "AAAUSDT", row[2], row[3], None, row[5], row[6]) if i in bad_at else row
        for i, row in enumerate(rows)
    ]
    writer = start_writer(db)
    started = time.monotonic()
    writer.put_trades(mixed)
    assert writer.close()
    good = [row for i, row in enumerate(rows) if i not in bad_at]
    assert stored_trades(db) == good
    assert writer.stats.rows_rejected == len(bad_at)
    assert time.monotonic() - started < 10
    assert_bars_match(db, good)


def test_a_failing_call_is_undone_alone_and_a_call_sees_the_trades_before_it(db):
    writer = start_writer(db)
    rows = random_tape(3, symbols=("AAAUSDT",))
    writer.put_trades(rows)

    def half_done(conn):
        conn.execute(
            "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, "
            "detected_ms) VALUES (?, ?, 1, 2, 'live-jump', 0)",
            ("x", "Y"),
        )
        raise ValueError("boom")

    def bad_sql(conn):
        return conn.execute("SELECT no_such_column FROM trades").fetchall()

    failed = writer.submit(half_done)
    broken = writer.submit(bad_sql)
    counted = writer.submit(
        lambda conn: conn.execute(
            "SELECT count(*) FROM trades WHERE venue = ?", (VENUE,)
        ).fetchone()[0]
    )
    run_id = writer.submit(
        lambda conn: conn.execute(
            "INSERT INTO ingest_runs (venue, source, symbols, started_ms) VALUES (?1, ?2, ?2, 0)"
            " RETURNING run_id",
            (VENUE, "live"),
        ).fetchone()[0]
    )
    with pytest.raises(ValueError, match="boom"):
        failed.result(10)
    with pytest.raises(Exception, match="no_such_column"):
        broken.result(10)
    assert counted.result(10) == 3
    assert run_id.result(10) == 1
    assert writer.close()
    assert query(db, "SELECT count(*) FROM gaps") == [(0,)]
    assert query(db, "SELECT run_id, symbols FROM ingest_runs") == [(1, "live")]
    assert stored_trades(db) == rows


def test_one_id_with_two_contents_is_stored_once_and_reported(db, caplog):
    first = (VENUE, "AAAUSDT", 10, T0 + 100_000, 5.0, 1.0, 0)
    corrupt = (VENUE, "AAAUSDT", 10, T0 + 3_100_000, 7.0, 2.0, 0)  # another second
    after = (VENUE, "AAAUSDT", 11, T0 + 3_200_000, 6.0, 1.0, 1)
    writer = start_writer(db)
    writer.put_trades([first, corrupt, after])
    writer.flush()
    writer.put_trades([corrupt])  # later, alone: the stored copy stays
    assert writer.close()
    assert stored_trades(db) == [first, after]
    assert_bars_match(db, [first, after])
    assert writer.stats.rows_rejected == 1
    assert "trade 10 arrived twice with different contents; kept the earlier" in caplog.text


def test_a_kline_bar_gives_way_to_the_trades_of_its_second(db):
    second = T0 // 1_000_000
    writer = start_writer(db)
    kline = (VENUE, "AAAUSDT", second, 9.0, 9.5, 8.5, 9.2, 100.0, 920.0, 50.0, 40)
    other = (VENUE, "AAAUSDT", second + 5, 9.0, 9.5, 8.5, 9.2, 100.0, 920.0, 50.0, 40)
    for bar in (kline, other):

        def store_bar(conn: Any, bar: tuple = bar) -> None:
            conn.execute(klines.INSERT_BAR_1S, bar)

        writer.submit(store_bar).result(10)
    trades = [
        (VENUE, "AAAUSDT", 7, T0 + 100, 10.0, 1.0, 0),
        (VENUE, "AAAUSDT", 8, T0 + 200, 12.0, 2.0, 1),
    ]
    writer.put_trades(trades)
    assert writer.close()
    expected = expected_bars(trades).reset_index()
    bars = stored_bars(db).reset_index()
    from_trades = bars[bars["bar_time_s"] == second][expected.columns]
    assert from_trades.to_numpy().tolist() == expected.to_numpy().tolist()
    assert query(db, "SELECT bar_time_s, from_klines FROM bars_1s ORDER BY bar_time_s") == [
        (second, 0),
        (second + 5, 1),
    ]


def test_close_commits_everything_queued_by_concurrent_producers(db):
    writer = start_writer(db, max_queue=50, max_backlog=4)
    rows = random_tape(2_000, symbols=("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"))
    by_symbol: dict[str, list[tuple]] = {}
    for row in rows:
        by_symbol.setdefault(row[1], []).append(row)

    def produce(symbol_rows):
        for start in range(0, len(symbol_rows), 7):
            writer.put_trades(symbol_rows[start : start + 7], block=True)

    producers = [threading.Thread(target=produce, args=(r,)) for r in by_symbol.values()]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert writer.close(timeout=60)
    assert stored_trades(db) == sorted(rows)
    assert writer.stats.commits < len(rows) / 7  # batched
    assert_bars_match(db, rows)


# -- PostgreSQL only ---------------------------------------------------------------------


@pytest.mark.postgres
def test_a_locked_table_is_retried_until_it_frees_and_nothing_is_lost(postgres_url):
    writer = start_writer(postgres_url)
    writer.flush()
    writer.submit(lambda conn: conn.execute("SET lock_timeout = '50ms'")).result(10)
    with postgres.connect(postgres_url) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE bars_1s IN ACCESS EXCLUSIVE MODE")
        rows = random_tape(200)
        writer.put_trades(rows)
        wait_until(lambda: writer.stats.failed_commits >= 2)
        assert writer.stats.state == "retrying"
        assert "LockNotAvailable" in (writer.stats.last_error or "")
        blocker.execute("COMMIT")
    writer.flush(timeout=30)
    assert writer.stats.state == "ok"
    assert writer.close()
    assert stored_trades(postgres_url) == sorted(rows)
    assert_bars_match(postgres_url, rows)


@pytest.mark.postgres
def test_a_server_restart_mid_run_loses_and_doubles_nothing(postgres_url, postgres_cluster):
    cluster: PostgresCluster = postgres_cluster
    rows = random_tape(12_000, symbols=("AAAUSDT", "BBBUSDT"))
    writer = start_writer(postgres_url, max_batch_rows=2_000)
    calls: list[Any] = []
    done = threading.Event()

    def produce() -> None:
        for number, start in enumerate(range(0, len(rows), 400)):
            writer.put_trades(rows[start : start + 400], block=True)

            def mark(conn: Any, n: int = number) -> int:
                return conn.execute(
                    "INSERT INTO ingest_runs (venue, source, symbols, started_ms) "
                    "VALUES ('marks', 'live', ?, 0)",
                    (str(n),),
                ).rowcount

            calls.append(writer.submit(mark))
            time.sleep(0.02)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(2):
        wait_until(lambda: writer.stats.trades_stored > 0)
        cluster.restart()
        wait_until(lambda: writer.stats.failed_commits > 0, timeout=30)
    producer.join(120)
    assert done.is_set()
    writer.flush(timeout=60)
    assert writer.close(timeout=60)
    assert writer.stats.failed_commits >= 1
    assert [call.result(0) for call in calls] == [1] * len(calls)
    assert stored_trades(postgres_url) == sorted(rows)
    assert writer.stats.trades_stored == len(rows)
    assert_bars_match(postgres_url, rows)
    marks = query(postgres_url, "SELECT symbols, count(*) FROM ingest_runs GROUP BY symbols")
    assert sorted(int(mark) for mark, _count in marks) == list(range(len(calls)))
    assert {count for _mark, count in marks} == {1}


@pytest.mark.postgres
def test_a_commit_whose_answer_was_lost_is_looked_up_not_run_again(postgres_url):
    """The server answers for a transaction by its id: committed, or not (rolled back)."""
    storage = PostgresStorage(postgres_url)
    rejects = Rejects(logging.getLogger("test"))
    storage.open()
    try:
        storage.begin()
        assert storage.store_trades([GOOD], rejects) == (1, 0)
        committed_xid = storage._xid
        storage.commit()
        storage.begin()
        storage.store_trades([(VENUE, "AAAUSDT", 2, T0, 5.0, 1.0, 0)], rejects)
        aborted_xid = storage._xid
        storage.rollback()
        storage._lost_xid = committed_xid
        storage.connection.raw.close()  # the answer came not: a new connection asks
        assert storage.lost_commit_went_through()
        storage._lost_xid = aborted_xid
        assert not storage.lost_commit_went_through()
        assert not storage.lost_commit_went_through()  # nothing lost any more
    finally:
        storage.close(False)
    assert stored_trades(postgres_url) == [GOOD]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.SerializationFailure("x"), True),
        (psycopg.errors.DeadlockDetected("x"), True),
        (psycopg.errors.AdminShutdown("x"), True),
        (psycopg.errors.LockNotAvailable("x"), True),
        (psycopg.errors.DiskFull("x"), True),
        (psycopg.OperationalError("connection lost"), True),
        (psycopg.errors.UniqueViolation("x"), False),
        (psycopg.errors.UndefinedTable("x"), False),
        (ValueError("x"), False),
    ],
)
def test_what_passes_on_postgresql(error, transient):
    assert is_transient(error) is transient
