"""The daemon's ways to exit 1 (``EXIT_DATABASE``) at start and stop, each with its message.

1. the database cannot be opened (not a database, a folder);
2. the database accepts no write for ``--start-write-timeout`` at start (another program
   holds the write lock);
3. the writer does not finish within ``--flush-timeout`` at stop (the lock is taken away
   while the daemon runs).

Another daemon holding the database, and the writer dying while the daemon runs, are in
``test_daemon_supervision.py`` with the other supervision exits.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pairs_monitor.ingest.daemon import EXIT_DATABASE
from pairs_monitor.store import schema
from tests.helpers.daemon import ROOT, wait_for

pytestmark = pytest.mark.daemon

SIM = ["--source", "sim", "--symbols", "btcusdt", "ethusdt", "--log-level", "INFO"]


def ingest(db: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``ingest.py`` (the simulator, so no network) to its end."""
    argv = [sys.executable, "ingest.py", *SIM, "--db", str(db)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_file_that_is_not_a_database_exits_1_saying_so(tmp_path):
    db = tmp_path / "ticks.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    result = ingest(db)
    assert result.returncode == EXIT_DATABASE == 1
    assert f"cannot open {db}: file is not a database" in result.stderr
    assert db.read_bytes() == b"these are my notes, not a database\n" * 200  # untouched


def test_a_folder_in_place_of_the_database_exits_1_saying_so(tmp_path):
    result = ingest(tmp_path)
    assert result.returncode == 1
    assert f"cannot open {tmp_path}: unable to open database file" in result.stderr


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another program's write transaction on ``db``: no other writer gets in meanwhile."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_database_locked_from_the_start_exits_1_after_the_first_write_timeout(tmp_path):
    db = tmp_path / "ticks.db"
    schema.setup(db)
    holder = hold_write_lock(db)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "ingest.py", *SIM, "--db", str(db), "--start-write-timeout", "2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    assert 2.0 <= time.monotonic() - started < 30  # the flag, not the default 60 s
    assert f"{db} accepted no write for 2 s" in result.stderr
    assert "is another program holding it locked?" in result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM ingest_runs").fetchone()[0] == 0
    conn.close()


def test_a_writer_locked_out_at_stop_exits_1_after_the_close_timeout(tmp_path):
    """The writer cannot commit the queue within ``--flush-timeout`` of the stop."""
    db = tmp_path / "ticks.db"
    log = (tmp_path / "ingest.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "ingest.py", *SIM, "--db", str(db), "--flush-timeout", "2"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    holder = None
    try:
        wait_for(lambda: trades_stored(db) > 0, what="the simulator's first trades")
        holder = hold_write_lock(db)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if holder is not None:
            holder.close()
        log.close()
    text = (tmp_path / "ingest.log").read_text()
    assert "SIGTERM received: stopping" in text
    assert "writer did not finish within 2 s;" in text
    assert "stopped cleanly" not in text


def trades_stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
