"""The writer thread: exactly-once storage, bars that match the trades, failures contained."""

import random
import sqlite3
import threading
import time

import pandas as pd
import pytest

from pairs_monitor.store.writer import TradeWriter

VENUE = "binance-spot"


def random_tape(n: int, symbols=("AAAUSDT", "BBBUSDT"), seed: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    rows, time_us = [], 1_700_000_000_000_000
    for trade_id in range(1, n + 1):
        time_us += rng.choice([0, 0, 1_000, 250_000, 900_000])  # many share a millisecond
        for symbol in symbols:
            price = round(100 + rng.gauss(0, 1), 2)
            rows.append(
                (
                    VENUE,
                    symbol,
                    trade_id,
                    time_us,
                    price,
                    round(rng.random(), 4),
                    rng.random() < 0.5,
                )
            )
    return rows


def start_writer(path, **kwargs) -> TradeWriter:
    writer = TradeWriter(path, **kwargs)
    writer.start()
    return writer


def stored_trades(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM trades ORDER BY venue, symbol, trade_id").fetchall()


def expected_bars(rows: list[tuple]) -> pd.DataFrame:
    """One-second bars computed independently from the distinct trades, with pandas."""
    trades = pd.DataFrame(
        rows, columns=["venue", "symbol", "trade_id", "time_us", "price", "qty", "maker"]
    )
    trades = trades.drop_duplicates(["venue", "symbol", "trade_id"]).sort_values("trade_id")
    trades["bar_time_s"] = trades["time_us"] // 1_000_000
    trades["quote"] = trades["price"] * trades["qty"]
    trades["taker_buy"] = trades["qty"].where(~trades["maker"].astype(bool), 0.0)
    grouped = trades.groupby(["venue", "symbol", "bar_time_s"])
    return pd.DataFrame(
        {
            "open": grouped["price"].first(),
            "high": grouped["price"].max(),
            "low": grouped["price"].min(),
            "close": grouped["price"].last(),
            "volume": grouped["qty"].sum(),
            "quote_volume": grouped["quote"].sum(),
            "taker_buy_volume": grouped["taker_buy"].sum(),
            "trade_count": grouped.size(),
            "first_trade_id": grouped["trade_id"].min(),
            "last_trade_id": grouped["trade_id"].max(),
        }
    )


def stored_bars(path) -> pd.DataFrame:
    with sqlite3.connect(path) as conn:
        bars = pd.read_sql("SELECT * FROM bars_1s", conn)
    return bars.set_index(["venue", "symbol", "bar_time_s"]).sort_index()


def test_bars_match_trades_whatever_the_batching_order_and_duplicates(tmp_path):
    path = tmp_path / "ticks.db"
    rows = random_tape(3_000)
    rng = random.Random(1)
    # Deliver out of order (a backfill lands after later live trades) and with repeats.
    chunks, start = [], 0
    while start < len(rows):
        size = rng.randint(1, 400)
        chunks.append(rows[start : start + size])
        start += size
    rng.shuffle(chunks)
    chunks += [rng.sample(rows, 300), rows[:50]]
    writer = start_writer(path, max_batch_rows=700)
    for chunk in chunks:
        writer.put_trades(chunk)
    assert writer.close()

    assert stored_trades(path) == sorted(set(rows))
    assert writer.stats.trades_stored == len(rows)
    expected = expected_bars(rows)
    actual = stored_bars(path)[expected.columns]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-12)


def test_a_bad_row_is_reported_and_the_rest_of_its_batch_is_stored(tmp_path, caplog):
    path = tmp_path / "ticks.db"
    good = random_tape(5, symbols=("AAAUSDT",))
    bad: tuple = (VENUE, "AAAUSDT", 99, 1_700_000_000_000_000, None, 1.0, 0)  # no price
    writer = start_writer(path)
    writer.put_trades([*good[:2], bad, *good[2:]])
    assert writer.close()
    assert stored_trades(path) == good
    assert writer.stats.rows_rejected == 1
    assert "rejected trade row" in caplog.text and "99" in caplog.text


def test_a_failing_call_is_undone_alone(tmp_path):
    path = tmp_path / "ticks.db"
    writer = start_writer(path)
    rows = random_tape(3, symbols=("AAAUSDT",))
    writer.put_trades(rows)

    def half_done(conn):
        conn.execute(
            "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, "
            "detected_ms) VALUES ('x', 'Y', 1, 2, 'live-jump', 0)"
        )
        raise ValueError("boom")

    failed = writer.submit(half_done)
    counted = writer.submit(lambda conn: conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    with pytest.raises(ValueError, match="boom"):
        failed.result(5)
    assert counted.result(5) == 3  # a call sees the trades queued before it
    assert writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
    assert stored_trades(path) == rows


def test_a_locked_database_is_retried_until_it_frees_and_nothing_is_lost(tmp_path):
    path = tmp_path / "ticks.db"
    writer = start_writer(path)
    writer.flush()
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    blocker.execute("PRAGMA busy_timeout = 0")
    assert writer._conn is not None
    writer._conn.execute("PRAGMA busy_timeout = 50")  # fail fast instead of waiting 30 s
    blocker.execute("BEGIN IMMEDIATE")
    rows = random_tape(200)
    writer.put_trades(rows)
    deadline = time.monotonic() + 5
    while writer.stats.failed_commits == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stats.failed_commits >= 1
    assert "locked" in (writer.stats.last_error or "")
    blocker.execute("COMMIT")
    blocker.close()
    assert writer.close()
    assert stored_trades(path) == sorted(rows)


def test_close_commits_everything_queued_by_concurrent_producers(tmp_path):
    path = tmp_path / "ticks.db"
    writer = start_writer(path, max_queue=50)  # small queue: producers feel backpressure
    rows = random_tape(2_000, symbols=("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"))
    by_symbol: dict[str, list[tuple]] = {}
    for row in rows:
        by_symbol.setdefault(row[1], []).append(row)

    def produce(symbol_rows):
        for row in symbol_rows:
            writer.put_trades([row])

    producers = [threading.Thread(target=produce, args=(r,)) for r in by_symbol.values()]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert writer.close(timeout=30)
    assert stored_trades(path) == sorted(rows)
    assert writer.stats.commits < len(rows)  # batched, not one commit per trade


def test_start_reports_a_database_it_cannot_open(tmp_path):
    folder_in_the_way = tmp_path / "ticks.db"
    folder_in_the_way.mkdir()
    with pytest.raises(sqlite3.OperationalError):
        TradeWriter(folder_in_the_way).start()


def test_one_id_with_two_contents_in_a_batch_is_stored_once_and_reported(tmp_path, caplog):
    path = tmp_path / "ticks.db"
    first = (VENUE, "AAAUSDT", 10, 1_700_000_000_100_000, 5.0, 1.0, 0)
    corrupt = (VENUE, "AAAUSDT", 10, 1_700_000_003_100_000, 7.0, 2.0, 0)  # other second
    after = (VENUE, "AAAUSDT", 11, 1_700_000_003_200_000, 6.0, 1.0, 1)
    writer = start_writer(path)
    writer.put_trades([first, corrupt, after])
    assert writer.close()
    assert stored_trades(path) == [first, after]
    expected = expected_bars([first, after])
    pd.testing.assert_frame_equal(stored_bars(path)[expected.columns], expected, check_dtype=False)
    assert writer.stats.rows_rejected == 1
    assert "trade 10 arrived twice with different contents; kept the earlier" in caplog.text


def test_the_thread_survives_a_damaged_schema_and_stores_everything_once_mended(tmp_path):
    path = tmp_path / "ticks.db"
    writer = start_writer(path)
    writer.flush()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("ALTER TABLE bars_1s RENAME TO bars_1s_aside")  # not a passing error
    rows = random_tape(300)
    writer.put_trades(rows)
    deadline = time.monotonic() + 5
    while writer.stats.failed_commits < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stats.failed_commits >= 2  # retried, not dropped
    assert "no such table: main.bars_1s" in (writer.stats.last_error or "")
    assert writer.stats.state == "retrying"
    assert writer.stats.failing_since_ms is not None
    assert writer.is_alive()
    other.execute("ALTER TABLE bars_1s_aside RENAME TO bars_1s")
    other.close()
    writer.flush(timeout=10)
    assert writer.stats.state == "ok"
    assert writer.stats.failing_since_ms is None
    assert "no such table" in (writer.stats.last_error or "")  # kept: the last error seen
    assert writer.close()
    assert writer.stats.state == "stopped"
    assert stored_trades(path) == sorted(rows)
    expected = expected_bars(rows)
    pd.testing.assert_frame_equal(
        stored_bars(path)[expected.columns], expected, check_dtype=False, rtol=1e-12
    )


def test_rows_in_any_sequence_are_trades_never_mistaken_for_a_call(tmp_path):
    path = tmp_path / "ticks.db"
    rows = random_tape(2, symbols=("AAAUSDT",))
    writer = start_writer(path)
    writer.put_trades(tuple(rows))  # a tuple of two rows looks like (fn, future)
    assert writer.close()
    assert writer.stats.commits >= 1
    assert stored_trades(path) == rows


def test_a_time_of_the_wrong_type_is_rejected_not_stored_in_a_bar_of_its_own(tmp_path):
    path = tmp_path / "ticks.db"
    # Rows of the wrong types on purpose: ``tuple`` lets them past the type checker.
    integral_float: tuple = (VENUE, "AAAUSDT", 1, 1_700_000_000_100_000.0, 5.0, 1.0, 0)
    fractional: tuple = (VENUE, "AAAUSDT", 2, 1_700_000_000_200_000.5, 5.0, 1.0, 0)
    text_price: tuple = (VENUE, "AAAUSDT", 3, 1_700_000_000_300_000, "5.0x", 1.0, 0)
    writer = start_writer(path)
    writer.put_trades([integral_float, fractional, text_price])
    assert writer.close()
    assert stored_trades(path) == [(VENUE, "AAAUSDT", 1, 1_700_000_000_100_000, 5.0, 1.0, 0)]
    assert writer.stats.rows_rejected == 2
    with sqlite3.connect(path) as conn:
        bars = conn.execute("SELECT bar_time_s, typeof(bar_time_s) FROM bars_1s").fetchall()
    assert bars == [(1_700_000_000, "integer")]


def stuck_writer(path, max_backlog: int) -> tuple[TradeWriter, sqlite3.Connection]:
    """A writer whose commits fail while the returned connection holds the write lock."""
    writer = start_writer(path, max_backlog=max_backlog)
    writer.flush()
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    assert writer._conn is not None
    writer._conn.execute("PRAGMA busy_timeout = 50")
    blocker.execute("BEGIN IMMEDIATE")
    return writer, blocker


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_blocking_hand_over_waits_while_the_backlog_is_full_and_resumes(tmp_path):
    path = tmp_path / "ticks.db"
    writer, blocker = stuck_writer(path, max_backlog=2)
    rows = random_tape(40)
    writer.put_trades(rows[:10])  # the writer takes this batch and keeps failing to commit
    wait_until(lambda: writer.stats.failed_commits >= 1)
    writer.put_trades(rows[10:20])
    writer.put_trades(rows[20:30])  # the backlog is full: two items queued
    producer = threading.Thread(target=writer.put_trades, args=(rows[30:],), kwargs={"block": True})
    producer.start()
    producer.join(0.5)
    assert producer.is_alive()  # waiting for room, not queueing
    assert writer.queue_depth() == 2
    blocker.execute("COMMIT")
    blocker.close()
    producer.join(5)
    assert not producer.is_alive()
    assert writer.close()
    assert stored_trades(path) == sorted(rows)


def test_a_blocking_hand_over_ends_its_wait_when_the_producer_stops(tmp_path):
    path = tmp_path / "ticks.db"
    writer, blocker = stuck_writer(path, max_backlog=1)
    rows = random_tape(30)
    writer.put_trades(rows[:10])
    wait_until(lambda: writer.stats.failed_commits >= 1)
    writer.put_trades(rows[10:20])
    stop = threading.Event()
    producer = threading.Thread(
        target=writer.put_trades, args=(rows[20:],), kwargs={"block": True, "stop": stop}
    )
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()
    stop.set()
    producer.join(1)
    assert not producer.is_alive()
    assert writer.queue_depth() == 2  # queued all the same: a stop loses nothing
    blocker.execute("COMMIT")
    blocker.close()
    assert writer.close()
    assert stored_trades(path) == sorted(rows)


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
