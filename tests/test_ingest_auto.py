"""``--source auto``: the simulator stands in while Binance cannot be reached, then yields."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import (
    ROOT,
    SYMBOLS,
    assert_tape_complete,
    query,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sim_trades(db) -> int:
    try:
        return query(db, "SELECT count(*) FROM trades WHERE venue = 'sim'")[0][0]
    except Exception:
        return 0


def test_auto_falls_back_to_sim_then_switches_to_live(daemon_factory):
    server = BinanceServer(SYMBOLS, port=free_port())  # not listening yet: Binance is "down"
    daemon = daemon_factory(server, "--source", "auto", "--fallback-after", "1").start()
    try:
        wait_for(lambda: sim_trades(daemon.db) > 0, 20, "simulated trades")
        wait_for(
            lambda: (
                query(
                    daemon.db,
                    "SELECT DISTINCT source FROM feed_status WHERE venue = 'binance-spot'",
                )
                == [("sim",)]
            ),
            5,
            "feed_status to show the simulator",
        )
        server.start()  # Binance is back
        server.wait_clients(1, timeout=15)
        wait_for(lambda: "simulator stopped" in daemon.log, 10, "the simulator to stop")
        server.publish("BTCUSDT", 200)
        server.publish("ETHUSDT", 200)
        wait_complete(daemon.db, server)
        frozen = sim_trades(daemon.db)
        time.sleep(1.0)
        assert sim_trades(daemon.db) == frozen  # no more simulated trades once live is up
        wait_for(
            lambda: (
                query(
                    daemon.db,
                    "SELECT DISTINCT source, connected FROM feed_status "
                    "WHERE venue = 'binance-spot'",
                )
                == [("live", 1)]
            ),
            5,
            "feed_status to show live",
        )
        assert daemon.stop() == 0
        assert_tape_complete(daemon.db, server)
        assert "NO CONNECTION TO BINANCE" in daemon.log
        assert query(daemon.db, "SELECT source FROM ingest_runs") == [("auto",)]
    finally:
        server.stop()


def test_auto_with_both_markets_simulates_their_symbols_once_each(tmp_path):
    """Spot and USD-M both out of reach: the simulator stands in for the symbols of both
    markets, each once and without its prefix, under venue ``sim``."""
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    nothing = f"127.0.0.1:{free_port()}"  # nothing listens there
    argv = [
        sys.executable, "ingest.py", "--source", "auto", "--fallback-after", "0.5",
        "--symbols", "btcusdt", "usdm:btcusdt", "usdm:ethusdt", "--db", str(db),
        "--spot-ws-url", f"ws://{nothing}", "--spot-rest-url", f"http://{nothing}",
        "--usdm-ws-url", f"ws://{nothing}", "--usdm-rest-url", f"http://{nothing}",
        "--connect-timeout", "1",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:

        def simulated() -> list[tuple]:
            try:  # the file exists a moment before its tables do
                return query(
                    db, "SELECT DISTINCT symbol FROM trades WHERE venue = 'sim' ORDER BY 1"
                )
            except sqlite3.OperationalError:
                return []

        wait_for(
            lambda: db.exists() and simulated() == [("BTCUSDT",), ("ETHUSDT",)],
            30,
            "simulated trades of both symbols",
        )
        standing_in = [("binance-spot", "sim"), ("binance-usdm", "sim")]
        sql = "SELECT DISTINCT venue, source FROM feed_status WHERE venue != 'sim' ORDER BY 1"
        wait_for(
            lambda: query(db, sql) == standing_in,
            10,
            "feed_status to show the simulator standing in for both markets",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "NO CONNECTION TO BINANCE" in text
    assert f"ws://{nothing}, ws://{nothing}" in text  # both markets' hosts named
    run = query(db, "SELECT venue, source FROM ingest_runs")
    assert run == [("binance-spot,binance-usdm", "auto")]
