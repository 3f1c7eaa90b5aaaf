"""Operating the daemon: the writer's health in writer_status, and a log that rotates.

Both run the real ``ingest.py`` (``--source sim``, no network) against a real database.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers.daemon import ROOT, query, wait_for

pytestmark = pytest.mark.daemon

TRIGGER_MESSAGE = "refused by the test trigger"


def start_sim_daemon(db: Path, *extra: str, output: Path) -> subprocess.Popen[bytes]:
    """``ingest.py --source sim`` at a brisk rate; its stdout and stderr go to ``output``."""
    argv = [
        sys.executable, str(ROOT / "ingest.py"),
        "--source", "sim", "--symbols", "btcusdt", "ethusdt", "--sim-rate", "50",
        "--db", str(db), *extra,
    ]  # fmt: skip
    with output.open("ab") as sink:
        return subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class WriterStatus(NamedTuple):
    state: str
    last_error: str | None
    failing_since_ms: int | None
    queue_depth: int
    trades_stored: int
    updated_ms: int


def writer_status(db: Path) -> WriterStatus | None:
    """The writer_status row; None before the daemon has written it."""
    try:
        rows = query(db, f"SELECT {', '.join(WriterStatus._fields)} FROM writer_status")
    except sqlite3.OperationalError:  # the schema is not created yet
        return None
    return WriterStatus(*rows[0]) if rows else None


def state_of(db: Path) -> str | None:
    row = writer_status(db)
    return row.state if row else None


def trades(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM trades")[0][0])


def test_a_writer_that_cannot_commit_shows_in_writer_status_within_seconds(tmp_path):
    db = tmp_path / "ticks.db"
    proc = start_sim_daemon(db, output=tmp_path / "daemon.out")
    try:
        wait_for(lambda: state_of(db) == "ok", 30, "writer_status ok")
        wait_for(lambda: trades(db) > 0, 10, "a trade")
        with sqlite3.connect(db, timeout=10, isolation_level=None) as conn:
            # A real refusal from SQLite on every insert into trades: each commit fails.
            conn.execute(
                "CREATE TRIGGER refuse_trades BEFORE INSERT ON trades "
                f"BEGIN SELECT RAISE(ABORT, '{TRIGGER_MESSAGE}'); END"
            )
        broke_ms = time.time() * 1000
        wait_for(lambda: state_of(db) == "retrying", 5, "state retrying")
        failing = writer_status(db)
        assert failing is not None
        assert TRIGGER_MESSAGE in (failing.last_error or "")
        assert failing.failing_since_ms is not None
        assert failing.failing_since_ms >= broke_ms - 1000
        # The row keeps being written while the writer's commits fail.
        wait_for(
            lambda: (row := writer_status(db)) is not None and row.updated_ms > failing.updated_ms,
            5,
            "a fresh writer_status row while failing",
        )
        stored_while_failing = trades(db)
        output = tmp_path / "daemon.out"  # the status line (every 5 s) names the error too
        wait_for(lambda: "writer retrying for" in output.read_text(), 8, "the status line")
        assert TRIGGER_MESSAGE in output.read_text().split("writer retrying for", 1)[1]

        with sqlite3.connect(db, timeout=10, isolation_level=None) as conn:
            conn.execute("DROP TRIGGER refuse_trades")
        wait_for(lambda: state_of(db) == "ok", 10, "state ok again")
        healthy = writer_status(db)
        assert healthy is not None
        assert healthy.failing_since_ms is None
        assert TRIGGER_MESSAGE in (healthy.last_error or "")  # the last error, kept
        wait_for(lambda: trades(db) > stored_while_failing, 10, "the queued trades stored")
    finally:
        code = stop(proc)
    assert code == 0
    final = writer_status(db)
    assert final is not None
    assert final.state == "stopped"
    assert final.queue_depth == 0
    assert final.trades_stored == trades(db)  # a fresh database: this run stored them all


def test_the_log_file_rotates_by_size_and_keeps_the_backups_asked_for(tmp_path):
    db = tmp_path / "ticks.db"
    log_file = tmp_path / "logs" / "ingest.log"
    output = tmp_path / "daemon.out"
    max_bytes = 512  # --log-max-mb below, in bytes
    proc = start_sim_daemon(
        db,
        "--log-file", str(log_file), "--log-max-mb", str(max_bytes / 1024 / 1024),
        "--log-backups", "2", "--log-level", "DEBUG",
        output=output,
    )  # fmt: skip
    try:
        wait_for(lambda: Path(f"{log_file}.2").exists(), 30, "two rotations")
    finally:
        code = stop(proc)
    assert code == 0
    kept = sorted(p.name for p in log_file.parent.iterdir())
    assert kept == ["ingest.log", "ingest.log.1", "ingest.log.2"]  # no .3: two backups
    for name in kept[1:]:
        text = (log_file.parent / name).read_text()
        # Rotation comes before a record that would pass the size: a file holds at most
        # max_bytes, or one record longer than that on its own.
        assert 0 < len(text.encode()) <= max_bytes or text.count("\n") == 1
    assert "stopped cleanly" in "".join((log_file.parent / n).read_text() for n in kept)
    assert "SIMULATED DATA" not in output.read_text()  # the log went to the file only
