"""The database file deleted or replaced under a running writer (issue 15): the writer kept
writing into the unlinked file and the daemon said "stopped cleanly"; after a replace, the
stale -wal made the new file read as "malformed". Now the writer notices within
``file_check_seconds``, stops for good with ``fatal_error`` set, and leaves the new file
readable."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pairs_monitor.store import schema
from pairs_monitor.store.writer import TradeWriter, WriterFatalError

VENUE = "binance-spot"
ROOT = Path(__file__).resolve().parent.parent


def tape(symbol: str, first_id: int, count: int) -> list[tuple]:
    return [
        (VENUE, symbol, i, 1_700_000_000_000_000 + i * 333_333, 100.0 + i % 7, 0.5, i % 2)
        for i in range(first_id, first_id + count)
    ]


def wait_for_fatal(writer: TradeWriter, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while writer.fatal_error is None:
        assert time.monotonic() < deadline, "the writer did not notice"
        time.sleep(0.02)
    writer.join(5)
    assert not writer.is_alive()
    return writer.fatal_error


def test_a_deleted_database_stops_the_writer_with_a_fatal_error(tmp_path):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path, file_check_seconds=0.1, max_queue=4)
    writer.start()
    writer.put_trades(tape("AAAUSDT", 1, 10))
    writer.flush(10)
    assert writer.fatal_error is None
    for name in ("ticks.db", "ticks.db-wal", "ticks.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    message = wait_for_fatal(writer)  # idle: noticed without any write
    assert str(path) in message and "was deleted" in message and "Restart" in message
    assert writer.stats.state == "stopped"
    assert writer.stats.last_error == message
    # Nothing hangs and nothing claims success from here on.
    for first in range(11, 200, 10):  # far more than max_queue items
        writer.put_trades(tape("AAAUSDT", first, 10), block=True)
    with pytest.raises(WriterFatalError, match="was deleted"):
        writer.submit(lambda conn: 1).result(1)
    with pytest.raises(WriterFatalError):
        writer.flush(1)
    assert writer.close(1) is False
    assert not path.exists()  # not created again behind the user's back


def test_a_deletion_is_noticed_between_batches_and_queued_calls_fail(tmp_path):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path, file_check_seconds=0.1)
    writer.start()
    writer.flush(10)
    path.unlink()
    time.sleep(0.15)  # the next check is due
    future = writer.submit(lambda conn: conn.execute("SELECT count(*) FROM trades").fetchone())
    with pytest.raises(WriterFatalError, match="was deleted"):
        future.result(5)
    wait_for_fatal(writer)
    assert writer.stats.commits == 1  # the flush before; nothing after the deletion


def test_a_replaced_database_stops_the_writer_and_the_new_file_reads_whole(tmp_path):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path, file_check_seconds=0.3)
    writer.start()
    writer.put_trades(tape("AAAUSDT", 1, 500))
    writer.flush(10)
    # A backup restored over the live file (e.g. cp backup.db ticks.db.new && mv ...).
    backup = tmp_path / "backup.db"
    restored = tape("BBBUSDT", 1, 50)
    other = TradeWriter(backup)
    other.start()
    other.put_trades(restored)
    assert other.close()
    for leftover in tmp_path.glob("backup.db-*"):
        leftover.unlink()
    os.replace(backup, path)
    writer.put_trades(tape("AAAUSDT", 501, 3000))  # would land in the old file's -wal
    message = wait_for_fatal(writer)
    assert "was replaced by another file" in message and str(path) in message
    assert writer.close() is False
    # The stale -wal went with the old file: the new one reads as itself, not "malformed".
    conn = schema.connect_read_only(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT * FROM trades ORDER BY trade_id").fetchall() == restored
    finally:
        conn.close()
    # And a new writer takes it up where the backup ended.
    again = TradeWriter(path)
    again.start()
    again.put_trades(tape("BBBUSDT", 51, 5))
    assert again.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM trades").fetchone()[0] == 55


def test_the_file_in_place_keeps_the_writer_going(tmp_path):
    path: Path = tmp_path / "ticks.db"
    writer = TradeWriter(path, file_check_seconds=0.05)
    writer.start()
    for first in range(1, 301, 30):
        writer.put_trades(tape("AAAUSDT", first, 30))
        time.sleep(0.03)
    assert writer.close()
    assert writer.fatal_error is None
    assert writer.stats.trades_stored == 300


def test_only_the_main_file_deleted_leaves_no_stale_wal_for_the_next_start(tmp_path):
    # rm ticks.db: the -wal and -shm stayed, and the next daemon's new file would have read
    # the old file's pages from them.
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path, file_check_seconds=0.1)
    writer.start()
    writer.put_trades(tape("AAAUSDT", 1, 2_000))
    writer.flush(10)
    path.unlink()
    writer.put_trades(tape("AAAUSDT", 2_001, 2_000))
    wait_for_fatal(writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    again = TradeWriter(path)
    again.start()
    again.put_trades(tape("BBBUSDT", 1, 5))
    assert again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT * FROM trades").fetchall() == tape("BBBUSDT", 1, 5)


@pytest.mark.daemon
def test_the_daemon_never_says_stopped_cleanly_after_its_database_was_deleted(tmp_path):
    db = tmp_path / "ticks.db"
    symbols = ["--symbols", "AAAUSDT", "BBBUSDT"]
    daemon = subprocess.Popen(
        [sys.executable, "ingest.py", "--source", "sim", *symbols, "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the daemon stored nothing"
            if db.exists():
                with sqlite3.connect(db) as conn:
                    try:
                        if conn.execute("SELECT count(*) FROM trades").fetchone()[0] > 0:
                            break
                    except sqlite3.OperationalError:
                        pass  # the schema is not there yet
            time.sleep(0.2)
        db.unlink()
        try:  # the daemon's supervision ends it on fatal_error; else stop it as a user would
            daemon.wait(8)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 1, output
    assert f"{db} was deleted while the daemon was writing to it" in output
    assert "stopped cleanly" not in output
