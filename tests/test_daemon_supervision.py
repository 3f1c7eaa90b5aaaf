"""The daemon's supervision and exits, through the real ``ingest.py`` as a subprocess.

- SIGHUP (the terminal closed under ``make run``) stops it like SIGTERM: flushed, exit 0;
- one daemon per database: a second is refused naming the first's pid, and a kill -9 of
  the first frees the database (the OS drops the ``flock``);
- a thread that dies ends the daemon with a message and a non-zero status: the source's
  thread (``EXIT_SOURCE_FAILED``), the writer's (``EXIT_DATABASE``), and under
  ``--source auto`` a live connection thread (the simulator stops with it);
- an unknown symbol has its own status (``EXIT_BAD_SYMBOL``), apart from argparse's 2.

Faults no real input can cause (a thread dying of a bug) are injected by running the
daemon's ``main`` in a fresh interpreter after patching one method: the process, its
signals and its exit status are the real ones.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ingest
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import ROOT, SYMBOLS, query, wait_for

pytestmark = pytest.mark.daemon

SIM = ["--source", "sim", "--symbols", "btcusdt", "ethusdt", "--log-level", "INFO"]


def start(db: Path, log: Path, *argv: str, fault: str = "") -> subprocess.Popen[bytes]:
    """``ingest.py`` with ``argv``; ``fault``: Python run first (a patch), else nothing."""
    if fault:
        code = (
            f"import sys\n{fault}\nfrom pairs_monitor.ingest.daemon import main\n"
            f"sys.exit(main({[*argv, '--db', str(db)]!r}))\n"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "ingest.py", *argv, "--db", str(db)]
    with log.open("a") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=as_from_a_terminal
        )


def as_from_a_terminal() -> None:
    """SIGHUP at its default, as in a terminal: a test suite itself run under ``nohup``
    passes SIGHUP on ignored, and the daemon leaves an ignored SIGHUP ignored on purpose."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def count(db: Path, where: str = "1") -> int:
    try:
        return query(db, f"SELECT count(*) FROM trades WHERE {where}")[0][0]
    except sqlite3.OperationalError:  # no schema yet
        return 0


def connected(db: Path) -> int:
    """Symbols ``feed_status`` shows connected."""
    return query(db, "SELECT count(*) FROM feed_status WHERE connected = 1")[0][0]


def last_ids(db: Path) -> list[tuple]:
    return query(db, "SELECT symbol, max(trade_id), count(*) FROM trades GROUP BY symbol")


def test_sighup_flushes_and_exits_0_like_sigterm(tmp_path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    proc = start(db, log, *SIM)
    try:
        wait_for(lambda: count(db) > 0, 30, "the simulator's first trades")
        proc.send_signal(signal.SIGHUP)
        try:
            status = finish(proc)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit 30 s after SIGHUP; the daemon's log:\n{log.read_text()}")
        assert status == 0, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert "SIGHUP received: stopping" in text
    assert "stopped cleanly" in text
    stored = int(text.split("stopped cleanly: ")[1].split(" trades")[0])
    assert stored > 0
    assert count(db) == stored  # every trade the run counted is in the file
    assert query(db, "SELECT count(*) FROM ingest_runs WHERE stopped_ms IS NOT NULL") == [(1,)]
    # the simulator's ids are consecutive from 1: nothing queued was dropped
    assert all(top == n for _, top, n in last_ids(db))


def test_under_nohup_sighup_stays_ignored(tmp_path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does"
    proc = start(db, log, *SIM, fault=fault)
    try:
        wait_for(lambda: count(db) > 0, 30, "the simulator's first trades")
        proc.send_signal(signal.SIGHUP)
        before = count(db)
        wait_for(lambda: count(db) > before + 20, 10, "the daemon to go on after SIGHUP")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0
    finally:
        finish(proc, 0)
    assert "SIGHUP received" not in log.read_text()


def test_a_second_daemon_on_one_database_is_refused_until_the_first_is_killed(tmp_path):
    db = tmp_path / "ticks.db"
    first = start(db, tmp_path / "first.log", *SIM)
    second = None
    try:
        wait_for(lambda: count(db) > 0, 30, "the first daemon's trades")
        assert (tmp_path / "ticks.db.lock").read_text() == f"{first.pid}\n"
        second = start(db, tmp_path / "second.log", *SIM)
        assert finish(second) == ingest.EXIT_DATABASE == 1
        text = (tmp_path / "second.log").read_text()
        assert f"{db} is in use by another ingest daemon (pid {first.pid};" in text
        assert "Traceback" not in text
        # the second touched nothing: one run, and the first is still writing
        assert query(db, "SELECT count(*) FROM ingest_runs") == [(1,)]
        before = count(db)
        wait_for(lambda: count(db) > before, 10, "the first daemon to go on")
        first.kill()  # kill -9: no clean-up, the lock file stays, the OS drops the lock
        first.wait()
        second = start(db, tmp_path / "third.log", *SIM)
        wait_for(lambda: query(db, "SELECT count(*) FROM ingest_runs") == [(2,)], 30, "run 2")
        assert (tmp_path / "ticks.db.lock").read_text() == f"{second.pid}\n"
        second.send_signal(signal.SIGTERM)
        assert finish(second) == 0, (tmp_path / "third.log").read_text()
    finally:
        finish(first, 0)
        if second is not None:
            finish(second, 0)


def test_two_daemons_started_at_once_on_a_new_database_one_runs_one_is_refused(tmp_path):
    """Both used to create the schema at once, the second failing with "table trades
    already exists"; the lock is taken before the database is opened."""
    db = tmp_path / "ticks.db"
    procs = [start(db, tmp_path / f"{n}.log", *SIM) for n in (1, 2)]
    try:
        wait_for(lambda: any(p.poll() is not None for p in procs), 30, "one of them to exit")
        refused = next(p for p in procs if p.poll() is not None)
        running = next(p for p in procs if p is not refused)
        n = procs.index(refused) + 1
        text = (tmp_path / f"{n}.log").read_text()
        assert refused.returncode == 1, text
        assert f"in use by another ingest daemon (pid {running.pid};" in text
        assert "already exists" not in text
        wait_for(lambda: count(db) > 0, 30, "the other daemon's trades")
        running.send_signal(signal.SIGTERM)
        assert finish(running) == 0
    finally:
        for proc in procs:
            finish(proc, 0)


def test_the_source_thread_dying_ends_the_daemon_with_exit_5(tmp_path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "from pairs_monitor.ingest import sim\n"
        "def run(self, stop):\n"
        "    raise ZeroDivisionError('a bug in the source')\n"
        "sim.SimFeed.run = run"
    )
    started = time.monotonic()
    proc = start(db, log, *SIM, fault=fault)
    assert finish(proc) == ingest.EXIT_SOURCE_FAILED == 5, log.read_text()
    assert time.monotonic() - started < 20
    text = log.read_text()
    assert "the sim source died: ZeroDivisionError('a bug in the source')" in text
    assert "stopped cleanly" not in text


def test_the_writer_thread_dying_ends_the_daemon_with_exit_1(tmp_path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "from pairs_monitor.store.writer import TradeWriter\n"
        "commit = TradeWriter._commit_with_retry\n"
        "def dying(self, batch):\n"
        "    if self.stats.trades_stored > 0:\n"
        "        raise MemoryError('the writer is gone')\n"
        "    commit(self, batch)\n"
        "TradeWriter._commit_with_retry = dying"
    )
    proc = start(db, log, *SIM, fault=fault)
    try:
        # without supervision the daemon would run on for ever, storing nothing more
        assert finish(proc, 20) == ingest.EXIT_DATABASE == 1, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert "the writer thread died" in text
    assert "stopped cleanly" not in text


def test_a_deleted_database_ends_the_daemon_with_exit_1(tmp_path):
    """The writer reports ``fatal_error`` when its file is deleted; the daemon exits 1."""
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    proc = start(db, log, *SIM)
    try:
        wait_for(lambda: count(db) > 0, 30, "the simulator's first trades")
        db.unlink()
        assert finish(proc, 30) == ingest.EXIT_DATABASE, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert f"exit 1, trades still queued are not stored: the writer stopped: {db} was deleted" in (
        text
    )
    assert "stopped cleanly" not in text


def test_auto_stops_the_simulator_and_exits_5_when_a_live_connection_thread_dies(tmp_path):
    """Binance unreachable, the simulator standing in; then the connection thread dies
    (a bug, or the reconnect delay overflowing): live will never come back, so the
    daemon must not simulate for ever."""
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "import time\n"
        "from pairs_monitor.ingest.binance import ws\n"
        "def run(self):\n"
        "    time.sleep(3)\n"
        "    raise OverflowError('math range error')\n"
        "ws.StreamConnection.run = run"
    )
    argv = [
        "--source", "auto", "--symbols", "btcusdt", "ethusdt", "--fallback-after", "0.5",
        "--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9",  # nothing there
        "--connect-timeout", "1",
    ]  # fmt: skip
    proc = start(db, log, *argv, fault=fault)
    try:
        wait_for(lambda: count(db, "venue = 'sim'") > 0, 30, "the simulator")
        assert finish(proc, 20) == ingest.EXIT_SOURCE_FAILED, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert "thread(s) ws-0 died" in text
    assert "simulator stopped" in text
    assert "stopped cleanly" not in text


def test_auto_exits_5_when_the_simulator_standing_in_dies(tmp_path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "import time\n"
        "from pairs_monitor.ingest import sim\n"
        "def run(self, stop):\n"
        "    time.sleep(1)\n"
        "    raise ValueError('a bug in the simulator')\n"
        "sim.SimFeed.run = run"
    )
    argv = [
        "--source", "auto", "--symbols", "btcusdt", "ethusdt", "--fallback-after", "0.5",
        "--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9",  # nothing there
        "--connect-timeout", "1",
    ]  # fmt: skip
    proc = start(db, log, *argv, fault=fault)
    try:
        # without supervision: up for ever, recording nothing
        assert finish(proc, 20) == ingest.EXIT_SOURCE_FAILED, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert "the simulator standing in for live died (ValueError('a bug in the simulator'))" in text
    assert "stopped cleanly" not in text


def test_live_exits_5_when_its_connection_thread_dies(tmp_path):
    """``--source live``: a connection thread that dies (it never reconnects) ends the
    daemon instead of leaving it up and recording nothing."""
    server = BinanceServer(SYMBOLS).start()
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "import time\n"
        "from pairs_monitor.ingest.binance import ws\n"
        "def run(self):\n"
        "    time.sleep(1)\n"
        "    raise OverflowError('math range error')\n"
        "ws.StreamConnection.run = run"
    )
    argv = [
        "--source", "live", "--symbols", "btcusdt", "ethusdt",
        "--ws-url", server.ws_url, "--rest-url", server.rest_url,
    ]  # fmt: skip
    try:
        proc = start(db, log, *argv, fault=fault)
        assert finish(proc, 20) == ingest.EXIT_SOURCE_FAILED, log.read_text()
    finally:
        server.stop()
    text = log.read_text()
    assert "stopping: the live source's thread(s) ws-0 died" in text
    assert "stopped cleanly" not in text


def test_a_status_reporter_that_dies_is_restarted(tmp_path):
    """The reporter dies at its first report (a bug): the daemon restarts it, so
    ``feed_status`` is written all the same, and the run goes on and stops cleanly."""
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    fault = (
        "from pairs_monitor.ingest import status\n"
        "report = status.StatusReporter.report\n"
        "died = []\n"
        "def once(self):\n"
        "    if not died:\n"
        "        died.append(1)\n"
        "        raise KeyError('a bug in the reporter')\n"
        "    report(self)\n"
        "status.StatusReporter.report = once"
    )
    proc = start(db, log, *SIM, fault=fault)
    try:
        wait_for(
            lambda: count(db) > 0 and connected(db) == 2,
            30,
            "feed_status from the restarted reporter",
        )
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    finally:
        finish(proc, 0)
    text = log.read_text()
    assert "KeyError: 'a bug in the reporter'" in text
    assert text.count("the status reporter died") == 1
    assert "stopped cleanly" in text


def test_an_unknown_symbol_exits_4_and_a_usage_error_2(tmp_path):
    server = BinanceServer(SYMBOLS).start()
    try:
        argv = [
            "--source", "live", "--symbols", "btcusdt", "foousdt",
            "--ws-url", server.ws_url, "--rest-url", server.rest_url,
        ]  # fmt: skip
        proc = start(tmp_path / "ticks.db", tmp_path / "ingest.log", *argv)
        assert finish(proc) == ingest.EXIT_BAD_SYMBOL == 4
    finally:
        server.stop()
    assert "unknown symbol(s) for binance-spot: FOOUSDT" in (tmp_path / "ingest.log").read_text()
    usage = subprocess.run(
        [sys.executable, "ingest.py", "--no-such-flag"], cwd=ROOT, capture_output=True, text=True
    )
    assert usage.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in usage.stderr
