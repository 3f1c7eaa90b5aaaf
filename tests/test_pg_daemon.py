"""The real ingest daemon on a real PostgreSQL 15 store (issue 17): the same tape, trade
by trade, as on SQLite (sim, live through faults, replay); several daemons into one
database, one per (venue, symbol); ``--retain-ticks``. The password of the test cluster
must never reach a log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.binance.funding import FundingRecorder
from pairs_monitor.ingest.binance.rest import RestClient
from pairs_monitor.ingest.daemon import EXIT_DATABASE, EXIT_USAGE
from pairs_monitor.store import postgres
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import (
    BARS,
    ROOT,
    SYMBOLS,
    Daemon,
    assert_bars_equal,
    assert_tape_complete,
    query,
    stored,
    wait_complete,
    wait_for,
)
from tests.helpers.postgres import PASSWORD, free_port
from tests.test_funding_recorder import DAY_MS, funding_calls, server_rows, stored_rows
from tests.test_funding_recorder import VENUE as FUNDING_VENUE
from tests.test_replay import BTC, agg_spot_variant, expected_rows, read_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.daemon]

DAY_US = 86_400_000_000
KLINE_BARS = (
    "SELECT bar_time_s, open, high, low, close, trade_count FROM bars_1s "
    "WHERE venue = ? AND symbol = ? AND from_klines = 1 ORDER BY bar_time_s"
)


def run_sim(url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``ingest.py --source sim`` on ``url``, its output to ``log``."""
    argv = [
        sys.executable, str(ROOT / "ingest.py"), "--source", "sim",
        "--symbols", "btcusdt", "ethusdt", "--sim-rate", "60", "--sim-seed", "5",
        "--db", url, "--scan-every", "0", *extra,
    ]  # fmt: skip
    with log.open("a") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_sim_source_on_postgres(postgres_url, tmp_path):
    log = tmp_path / "sim.log"
    proc = run_sim(postgres_url, log)
    try:
        wait_for(
            lambda: (
                len(stored(postgres_url, "BTCUSDT", "sim")) > 50
                and len(query(postgres_url, "SELECT 1 FROM feed_status WHERE venue = 'sim'")) == 2
            ),
            30,
            "sim trades and feed status",
        )
    finally:
        assert stop(proc) == 0, log.read_text()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        tape = stored(postgres_url, symbol, "sim")
        assert [row[0] for row in tape] == list(range(1, len(tape) + 1))
        ((bar_trades,),) = query(
            postgres_url,
            "SELECT sum(trade_count) FROM bars_1s WHERE venue = 'sim' AND symbol = ?",
            (symbol,),
        )
        assert bar_trades == len(tape)
    ((source, symbols, stopped_ms),) = query(
        postgres_url, "SELECT source, symbols, stopped_ms FROM ingest_runs"
    )
    assert (source, symbols) == ("sim", "BTCUSDT,ETHUSDT") and stopped_ms is not None
    assert query(postgres_url, "SELECT state FROM writer_status") == [("stopped",)]
    text = log.read_text()
    assert "stopped cleanly" in text
    assert PASSWORD not in text


def make_daemon(url: str, server: BinanceServer, log: Path, words: list[str]) -> Daemon:
    return Daemon(url, server, log, [], words=words)


def test_live_tape_exact_through_a_drop_and_a_kill9(postgres_url, server, tmp_path):
    log = tmp_path / "ingest.log"
    daemon = make_daemon(postgres_url, server, log, ["btcusdt", "ethusdt"]).start()
    try:
        server.wait_clients(1)
        server.publish("BTCUSDT", 300)
        server.publish("ETHUSDT", 200)
        wait_complete(postgres_url, server)
        server.drop()  # the socket cut: what is published meanwhile comes over REST
        server.publish("BTCUSDT", 700, live=False)
        server.wait_clients(1, total=2)
        server.publish("BTCUSDT", 50)
        server.publish("ETHUSDT", 50)
        wait_complete(postgres_url, server)
        server.start_stream(2000)
        wait_for(lambda: len(stored(postgres_url, "BTCUSDT")) > 2000, 20, "trades under load")
        daemon.kill9()
        time.sleep(0.3)  # the stream goes on while the daemon is dead
        again = make_daemon(postgres_url, server, log, ["btcusdt", "ethusdt"]).start()
        server.wait_clients(1)
        server.stop_stream()
        server.publish("BTCUSDT", 10)
        server.publish("ETHUSDT", 10)
        wait_complete(postgres_url, server, timeout=30)
        assert again.stop() == 0, again.log
    finally:
        for d in (daemon, locals().get("again")):
            if isinstance(d, Daemon) and d.proc is not None and d.proc.poll() is None:
                d.kill9()
    assert_tape_complete(postgres_url, server)
    for symbol in server.symbols:
        assert_bars_equal(
            query(postgres_url, BARS, ("binance-spot", symbol)), server.expected_bars(symbol)
        )
    assert query(postgres_url, "SELECT count(*) FROM gaps WHERE status <> 'filled'") == [(0,)]
    assert query(postgres_url, "SELECT count(*) FROM gaps") != [(0,)]
    assert query(postgres_url, "SELECT count(*) FROM ingest_runs") == [(2,)]
    text = log.read_text()
    assert "connection lost" in text and "catch-up from id" in text
    assert PASSWORD not in text


def test_two_daemons_one_store_and_a_third_refused(postgres_url, server, tmp_path):
    btc = make_daemon(postgres_url, server, tmp_path / "btc.log", ["btcusdt"]).start()
    eth = make_daemon(postgres_url, server, tmp_path / "eth.log", ["ethusdt"]).start()
    third = make_daemon(postgres_url, server, tmp_path / "third.log", ["btcusdt"])
    heir = make_daemon(postgres_url, server, tmp_path / "heir.log", ["btcusdt"])
    try:
        server.wait_clients(2)
        server.publish("BTCUSDT", 400)
        server.publish("ETHUSDT", 300)
        wait_complete(postgres_url, server)
        # A third daemon asking for a feed the first records is refused, naming it.
        assert third.start().wait(30) == EXIT_USAGE
        assert "another daemon already records binance-spot BTCUSDT" in third.log
        btc.kill9()
        server.publish("BTCUSDT", 200, live=False)  # while nobody records BTCUSDT
        heir.start()  # claims the feed the killed daemon held
        server.wait_clients(2)
        server.publish("BTCUSDT", 20)
        server.publish("ETHUSDT", 20)
        wait_complete(postgres_url, server)
        assert heir.stop() == 0, heir.log
        assert eth.stop() == 0, eth.log
    finally:
        for d in (btc, eth, third, heir):
            if d.proc is not None and d.proc.poll() is None:
                d.kill9()
    assert_tape_complete(postgres_url, server)
    runs = query(postgres_url, "SELECT symbols FROM ingest_runs ORDER BY run_id")
    assert sorted(runs) == [("BTCUSDT",), ("BTCUSDT",), ("ETHUSDT",)]
    for d in (btc, eth, third, heir):
        assert PASSWORD not in d.log


def test_retain_ticks_drops_old_days_and_keeps_their_bars(postgres_url, tmp_path):
    today_us = int(time.time()) * 1_000_000
    old_us = today_us - 40 * DAY_US
    writer = TradeWriter(postgres_url)
    writer.start()
    writer.put_trades(
        [
            ("old", "XUSDT", 1, old_us, 10.0, 1.0, 0),
            ("old", "XUSDT", 2, old_us + 1, 11.0, 1.0, 1),
            ("old", "XUSDT", 3, today_us - DAY_US, 12.0, 1.0, 0),
        ]
    )
    assert writer.close()
    log = tmp_path / "retain.log"
    proc = run_sim(postgres_url, log, "--retain-ticks", "30d")
    try:
        wait_for(lambda: "dropped 1 day partition" in log.read_text(), 30, "the drop")
    finally:
        assert stop(proc) == 0, log.read_text()
    assert query(postgres_url, "SELECT trade_id FROM trades WHERE venue = 'old'") == [(3,)]
    bars = query(
        postgres_url,
        "SELECT bar_time_s, trade_count FROM bars_1s WHERE venue = 'old' ORDER BY 1",
    )
    assert bars == [(old_us // 1_000_000, 2), ((today_us - DAY_US) // 1_000_000, 1)]
    conn = postgres.connect(postgres_url)
    try:
        old_day = old_us // DAY_US
        assert old_day not in postgres.partition_days(conn)
    finally:
        conn.close()


def test_retain_ticks_is_refused_on_sqlite(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "ingest.py"), "--source", "sim", "--symbols", "btcusdt",
         "--db", str(tmp_path / "ticks.db"), "--retain-ticks", "30d"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert "--retain-ticks is not supported on SQLite" in done.stderr
    assert not (tmp_path / "ticks.db").exists()


def test_replay_on_postgres_stores_each_row_once_and_keeps_a_venue_numbering(
    postgres_url, tmp_path
):
    def replay_run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "ingest.py"), "--source", "replay", "--speed", "0",
             "--db", postgres_url, "--scan-every", "0", "--replay", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    first = replay_run(str(BTC), "--replay-venue", "mine")
    assert first.returncode == 0, first.stderr
    assert "300 rows read, 300 stored, 0 already stored, 0 bad" in first.stderr
    want = expected_rows(read_fixture(BTC))
    assert stored(postgres_url, "BTCUSDT", "mine") == list(want.itertuples(index=False, name=None))
    again = replay_run(str(BTC), "--replay-venue", "mine")
    assert again.returncode == 0, again.stderr
    assert "300 rows read, 0 stored, 300 already stored" in again.stderr
    # The venue's numbering of BTCUSDT, recorded in ingest_runs, is read back on PostgreSQL.
    agg_path, _ = agg_spot_variant(tmp_path, first_id=553287559)
    other = replay_run(str(agg_path), "--replay-venue", "mine")
    assert "already holds spot trades of it (replay run 1)" in other.stderr
    assert PASSWORD not in first.stderr + again.stderr + other.stderr


def test_funding_history_on_postgres_from_the_earliest_trade_then_only_what_is_new(postgres_url):
    usdm = BinanceServer(["BTCUSDT", "ETHUSDT"], market="usdm").start()
    writer = TradeWriter(postgres_url)
    writer.start()

    def record_until(done: Callable[[], bool], what: str) -> None:
        stop_event = threading.Event()
        rest = RestClient(usdm.rest_url, "/fapi/v1", weight_per_min=1000, stop=stop_event)
        recorder = FundingRecorder(
            rest, writer, FUNDING_VENUE, ["BTCUSDT", "ETHUSDT"], postgres_url
        )
        recorder.start()
        try:
            wait_for(done, 10, what)
        finally:
            stop_event.set()
            recorder.close()

    try:
        earliest_ms = now_ms() - 30 * DAY_MS  # BTCUSDT's first stored trade; ETHUSDT has none
        writer.put_trades([(FUNDING_VENUE, "BTCUSDT", 7, earliest_ms * 1000, 60000.0, 0.5, 0)])
        writer.flush(5)
        btc = server_rows(usdm, "BTCUSDT", earliest_ms)
        eth = server_rows(usdm, "ETHUSDT", now_ms() - 7 * DAY_MS)
        record_until(
            lambda: (
                len(stored_rows(postgres_url, "BTCUSDT")) == len(btc)
                and len(stored_rows(postgres_url, "ETHUSDT")) == len(eth)
            ),
            "the funding history",
        )
        assert stored_rows(postgres_url, "BTCUSDT") == btc
        assert stored_rows(postgres_url, "ETHUSDT") == eth
        usdm.rest_calls.clear()
        record_until(lambda: len(funding_calls(usdm)) == 2, "the second start's requests")
        again = {call["symbol"]: int(call["startTime"]) for call in funding_calls(usdm)}
        assert again == {"BTCUSDT": btc[-1][0] + 1, "ETHUSDT": eth[-1][0] + 1}
    finally:
        assert writer.close()
        usdm.stop()


def test_history_from_klines_on_postgres_and_a_restart_asks_nothing_again(postgres_url, tmp_path):
    start_ms = int(time.time() * 1000) - 10_000
    spot = BinanceServer(
        SYMBOLS, base_time_ms=start_ms - 1_000_000 // 3, kline_history_s=3600
    ).start()
    log = tmp_path / "ingest.log"
    try:
        first = Daemon(postgres_url, spot, log, []).start("--history", "5m")
        spot.wait_clients(1)
        spot.publish("BTCUSDT", 30)
        spot.publish("ETHUSDT", 30)
        wait_complete(postgres_url, spot)
        wait_for(lambda: "history in:" in first.log, 60, "the history landed")
        assert first.stop() == 0, first.log
        assert_tape_complete(postgres_url, spot)
        for symbol in SYMBOLS:
            got = query(postgres_url, KLINE_BARS, ("binance-spot", symbol))
            assert got[-1][0] - got[0][0] > 4 * 60  # five minutes (a second of no trade: no bar)
            served = [
                (k[0] // 1000, float(k[1]), float(k[2]), float(k[3]), float(k[4]), k[8])
                for k in spot.expected_klines(symbol, "1s", got[0][0] * 1000, got[-1][0] * 1000)
                if k[8] > 0
            ]
            assert got == served
        asked = sum(1 for call in spot.rest_calls if call.endpoint == "/klines")
        second = Daemon(postgres_url, spot, log, []).start("--history", "5m")
        spot.wait_clients(1, total=2)
        spot.publish("BTCUSDT", 10)
        wait_complete(postgres_url, spot)
        time.sleep(1.0)  # time for a history pass, were it to ask for anything
        assert second.stop() == 0, second.log
        assert sum(1 for call in spot.rest_calls if call.endpoint == "/klines") == asked
        assert_tape_complete(postgres_url, spot)
    finally:
        spot.stop()


def test_an_unreachable_server_is_exit_1_without_the_password(tmp_path):
    url = f"postgresql://pm_test:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    done = subprocess.run(
        [sys.executable, str(ROOT / "ingest.py"), "--source", "sim", "--symbols", "btcusdt",
         "--scan-every", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "TICKS_DB": url},
    )  # fmt: skip
    assert done.returncode == EXIT_DATABASE, done.stderr
    assert "cannot open postgresql://pm_test:***@127.0.0.1" in done.stderr
    assert PASSWORD not in done.stderr


def test_a_server_restart_under_load_leaves_the_tape_exact(
    postgres_cluster, postgres_url, server, tmp_path
):
    daemon = make_daemon(postgres_url, server, tmp_path / "ingest.log", ["btcusdt", "ethusdt"])
    daemon.start()
    try:
        server.wait_clients(1)
        server.start_stream(2000)
        wait_for(lambda: len(stored(postgres_url, "BTCUSDT")) > 1000, 20, "trades under load")
        postgres_cluster.restart()  # every connection cut, the daemon's included
        time.sleep(0.5)
        server.stop_stream()
        server.publish("BTCUSDT", 10)
        server.publish("ETHUSDT", 10)
        wait_complete(postgres_url, server, timeout=30)
        # The claims went with their connection; the daemon takes them back.
        wait_for(lambda: "claims taken back" in daemon.log, 15, "the claims taken back")
        second = make_daemon(postgres_url, server, tmp_path / "second.log", ["ethusdt"])
        assert second.start().wait(30) == EXIT_USAGE
        assert "another daemon already records binance-spot ETHUSDT" in second.log
        assert daemon.process.poll() is None, daemon.log
        assert daemon.stop() == 0, daemon.log
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
    assert_tape_complete(postgres_url, server)
    assert PASSWORD not in daemon.log
