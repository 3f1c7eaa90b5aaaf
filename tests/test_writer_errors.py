"""SQLite errors raised inside a call submitted to the writer (``TradeWriter.submit``).

A transient error (SQLITE_BUSY, SQLITE_LOCKED) rolls the whole batch back and retries it
until it passes, and the call's result then arrives; a permanent one is the caller's to
handle: its future raises it, and the writer goes on with everything else.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pairs_monitor.store.writer import TradeRow, TradeWriter

VENUE = "binance-spot"

# A side database locked by another connection: how to open it, and how to free it.
SideDatabase = Iterator[tuple[Callable[[], sqlite3.Connection], Callable[[], None]]]


def tape(symbol: str, first_id: int, count: int) -> list[TradeRow]:
    """``count`` consecutive trades, three to a second."""
    return [
        (VENUE, symbol, i, 1_700_000_000_000_000 + i * 333_333, 100.0 + i % 7, 0.5, i % 2)
        for i in range(first_id, first_id + count)
    ]


def stored(path: Path) -> tuple[list[TradeRow], int]:
    """The stored trades, and the trade count summed over the 1-second bars."""
    conn = sqlite3.connect(path)
    try:
        trades = conn.execute("SELECT * FROM trades ORDER BY symbol, trade_id").fetchall()
        in_bars = conn.execute("SELECT coalesce(sum(trade_count), 0) FROM bars_1s").fetchone()[0]
    finally:
        conn.close()
    return trades, in_bars


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def locked_file(tmp_path: Path) -> SideDatabase:
    """A side database file whose write lock another connection holds: SQLITE_BUSY."""
    side = tmp_path / "side.db"
    holder = sqlite3.connect(side, isolation_level=None)
    holder.execute("CREATE TABLE marks (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO marks VALUES (0)")
    try:
        yield (lambda: sqlite3.connect(side, timeout=0, isolation_level=None)), holder.rollback
    finally:
        holder.close()


@contextmanager
def locked_shared_cache(
    tmp_path: Path,
) -> Iterator[tuple[Callable[[], sqlite3.Connection], Callable]]:
    """A shared-cache database with a table another connection is writing: SQLITE_LOCKED."""
    uri = f"file:{tmp_path.name}?mode=memory&cache=shared"
    holder = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE marks (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO marks VALUES (0)")
    try:
        yield (
            (lambda: sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)),
            (holder.rollback),
        )
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("side_database", "error_name"),
    [(locked_file, "SQLITE_BUSY"), (locked_shared_cache, "SQLITE_LOCKED")],
)
def test_a_transient_error_inside_a_call_is_retried_and_its_result_arrives(
    tmp_path, side_database, error_name
):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    before, after = tape("AAAUSDT", 1, 40), tape("AAAUSDT", 41, 40)
    errors: list[str] = []
    with side_database(tmp_path) as (open_side, release):

        def write_both(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, "
                "detected_ms) VALUES (?, 'AAAUSDT', 5, 6, 'live-jump', 0)",
                (VENUE,),
            )
            side = open_side()
            try:
                side.execute("INSERT INTO marks VALUES (1)")
            except sqlite3.Error as exc:
                errors.append(exc.sqlite_errorname)
                raise
            finally:
                side.close()
            return 42

        writer.put_trades(before)
        future = writer.submit(write_both)
        writer.put_trades(after)
        wait_until(lambda: writer.stats.failed_commits >= 2)
        assert not future.done()  # retried, not reported as a failure
        assert writer.stats.last_error is not None and "locked" in writer.stats.last_error
        release()
        assert future.result(10) == 42
    assert errors and all(name.startswith(error_name) for name in errors)
    assert writer.close()
    trades, in_bars = stored(path)
    assert trades == sorted(before + after) and in_bars == 80  # each retry rolled back whole
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 1  # the call ran once
    conn.close()


def test_a_permanent_error_goes_to_the_caller_and_the_writer_lives_on(tmp_path):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    first, second = tape("AAAUSDT", 1, 10), tape("AAAUSDT", 11, 10)
    writer.put_trades(first)
    broken = writer.submit(lambda conn: conn.execute("INSERT INTO no_such_table VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        broken.result(10)
    assert writer.stats.failed_commits == 0  # reported, not retried
    assert writer.is_alive()
    writer.put_trades(second)
    counted = writer.submit(lambda conn: conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    assert counted.result(10) == 20
    assert writer.close()
    assert stored(path) == (sorted(first + second), 20)


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_close_during_retries_returns_false_and_the_call_still_lands_once_freed(tmp_path):
    """The daemon's exit 1 "writer did not finish" rests on this: close() gives up in time."""
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    with locked_file(tmp_path) as (open_side, _release):

        def blocked(conn: sqlite3.Connection) -> str:
            side = open_side()
            try:
                side.execute("INSERT INTO marks VALUES (1)")
            finally:
                side.close()
            return "landed"

        future = writer.submit(blocked)
        wait_until(lambda: writer.stats.failed_commits >= 1)
        assert writer.close(timeout=0.5) is False
        assert not future.done()
    assert future.result(10) == "landed"  # the lock went with its holder
    writer.join(10)
    assert not writer.is_alive()
