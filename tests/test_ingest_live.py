"""The live source end to end: the real daemon against a local Binance-speaking server.

Every test ends by comparing the stored tape, trade by trade, with what the server
published.
"""

from __future__ import annotations

import signal
import time

import pytest

import ingest
from tests.helpers.binance_server import TEST_API_KEY, BinanceServer
from tests.helpers.daemon import (
    SYMBOLS,
    Daemon,
    assert_tape_complete,
    query,
    start_with_tape,
    stored,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon


def test_live_trades_stored_with_status_and_pings(daemon_factory, tmp_path):
    """Trades of two symbols arrive, server pings are answered, status is written."""
    server = BinanceServer(SYMBOLS, ping_interval=0.5, ping_timeout=2).start()
    try:
        daemon = daemon_factory(server).start()
        server.wait_clients(1)
        for _ in range(5):
            server.publish("BTCUSDT", 200)
            server.publish("ETHUSDT", 150)
        wait_complete(daemon.db, server)
        # Pings every 0.5 s with a 2 s timeout: still the first connection after 3 s.
        time.sleep(3)
        assert server.connections_total == 1
        server.publish("BTCUSDT", 10)
        wait_complete(daemon.db, server)
        wait_for(
            lambda: (
                query(daemon.db, "SELECT count(*) FROM feed_status WHERE connected = 1") == [(2,)]
            ),
            5,
            "feed_status rows",
        )
        assert daemon.stop() == 0
        assert_tape_complete(daemon.db, server)
        runs = query(daemon.db, "SELECT venue, source, symbols, stopped_ms FROM ingest_runs")
        assert runs[0][:3] == ("binance-spot", "live", "BTCUSDT,ETHUSDT")
        assert runs[0][3] is not None
        rows = query(
            daemon.db, "SELECT symbol, connected, last_trade_id FROM feed_status ORDER BY 1"
        )
        assert rows == [
            ("BTCUSDT", 0, server.tapes["BTCUSDT"][-1].id),
            ("ETHUSDT", 0, server.tapes["ETHUSDT"][-1].id),
        ]
        assert query(daemon.db, "SELECT count(*) FROM gaps") == [(0,)]
        # bars agree with the trades (no trade counted twice)
        assert query(
            daemon.db, "SELECT sum(trade_count) FROM bars_1s WHERE symbol = 'BTCUSDT'"
        ) == [(len(stored(daemon.db, "BTCUSDT")),)]
    finally:
        server.stop()


def test_sigterm_exits_zero(server, daemon_factory):
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 100)
    wait_complete(daemon.db, server)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert_tape_complete(daemon.db, server)


def test_abrupt_drop_catch_up_and_resent_duplicates(server, daemon_factory):
    """Trades published while the socket is down come over REST; resent ones are not doubled."""
    daemon = start_with_tape(daemon_factory, server, 300, 300)
    server.resend_on_connect = 50
    server.drop()
    # The daemon is reconnecting; these reach REST only (or the socket, if it is back).
    server.publish("BTCUSDT", 1500, live=False)
    server.publish("ETHUSDT", 20, live=False)
    server.wait_clients(1, total=2)
    server.publish("BTCUSDT", 100)
    server.publish("ETHUSDT", 100)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT sum(trade_count) FROM bars_1s WHERE symbol = 'BTCUSDT'") == [
        (len(server.tapes["BTCUSDT"]),)
    ]
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
    assert query(daemon.db, "SELECT min(reconnects) FROM feed_status") == [(1,)]
    assert "connection lost" in daemon.log


def test_close_1001_and_server_shutdown(server, daemon_factory):
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 100)
    server.close(1001)
    server.publish("BTCUSDT", 100, live=False)
    server.wait_clients(1, total=2)
    server.publish("ETHUSDT", 100)
    server.server_shutdown()
    server.publish("ETHUSDT", 50, live=False)
    server.wait_clients(1, total=3)
    server.publish("BTCUSDT", 100)
    server.publish("ETHUSDT", 100)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert "1001" in daemon.log
    assert "serverShutdown received; reconnecting now" in daemon.log


def test_silent_socket_closed_by_watchdog(server, daemon_factory):
    """A socket that stops sending anything is replaced; what it swallowed comes from REST."""
    daemon = start_with_tape(daemon_factory, server, 100, 100, "--watchdog", "1")
    server.set_silent(True)
    server.publish("BTCUSDT", 200)  # swallowed by the silent socket
    server.wait_clients(1, total=2, timeout=10)
    server.set_silent(False)
    server.publish("BTCUSDT", 100)
    server.publish("ETHUSDT", 100)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert "watchdog" in daemon.log


def test_quiet_market_is_not_a_dead_socket(server, daemon_factory):
    """No trades for several watchdog periods: the watchdog's pings keep the socket."""
    daemon = daemon_factory(server, "--watchdog", "1").start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 10)
    time.sleep(3.5)
    server.publish("BTCUSDT", 10)
    server.publish("ETHUSDT", 10)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert server.connections_total == 1
    assert "pinging" in daemon.log


def test_proactive_reconnect_before_the_age_limit_loses_nothing(server, daemon_factory):
    daemon = daemon_factory(server, "--max-connection-age", "1").start()
    server.wait_clients(1)
    server.start_stream(1000)
    server.wait_clients(1, total=3, timeout=10)
    server.stop_stream()
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert "reconnecting before the 24 h limit" in daemon.log


def test_malformed_unknown_and_bad_frames_are_skipped(server, daemon_factory):
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 50)
    for frame in [
        "not json at all",
        b"\xff\xfe binary garbage",
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"x","p":"1",'
        '"q":"1","T":1,"m":true}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":5,"p":"abc",'
        '"q":"1","T":1,"m":true}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"XRPUSDT","t":5,"p":"1",'
        '"q":"1","T":1,"m":true}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}',
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}',
        '{"result":null,"id":1}',
        "[1, 2, 3]",
        '"just a string"',
        "{}",
    ]:
        server.send_raw(frame)
    server.publish("BTCUSDT", 50)
    server.publish("ETHUSDT", 50)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert server.connections_total == 1  # none of it cost the connection
    log = daemon.log
    assert "malformed frame skipped" in log
    assert "trade with bad fields skipped" in log
    assert "unknown frame skipped" in log
    assert "Traceback" not in log


def test_withheld_range_filled_from_rest_despite_429(server, daemon_factory):
    """Ids the socket never sends are fetched by fromId; 429 + Retry-After is honoured."""
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.rest_429 = 2
    server.retry_after = 1
    withheld = server.publish("BTCUSDT", 2345, live=False)
    server.publish("BTCUSDT", 100)
    server.publish("ETHUSDT", 100)
    wait_complete(daemon.db, server, timeout=30)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    gaps = query(
        daemon.db,
        "SELECT symbol, first_missing_id, last_missing_id, reason, status, trades_recovered "
        "FROM gaps",
    )
    assert gaps == [
        ("BTCUSDT", withheld[0].id, withheld[-1].id, "live-jump", "filled", len(withheld))
    ]
    assert server.rest_429 == 0
    assert "Retry-After" in daemon.log
    assert server.connections_total == 1  # REST never stalled or broke the live stream


def test_quiet_symbol_caught_up_without_a_live_trade(server, daemon_factory):
    """Trades missed during an outage are fetched even if the symbol then goes quiet."""
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.drop()
    server.publish("ETHUSDT", 42, live=False)  # and nothing more on ETHUSDT
    server.wait_clients(1, total=2)
    wait_complete(daemon.db, server)
    # later live trades continue the tape without a spurious gap
    server.publish("ETHUSDT", 10)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT reason, status, trades_recovered FROM gaps") == [
        ("catch-up", "filled", 42)
    ]


def test_unknown_symbol_is_a_clear_error(server, daemon_factory):
    daemon = daemon_factory(server).start("--symbols", "btcusdt", "foousdt")
    assert daemon.wait(15) == ingest.EXIT_BAD_SYMBOL
    assert "unknown symbol(s) for binance-spot: FOOUSDT" in daemon.log


def test_unreachable_rest_warns_and_goes_on(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 100, 100, "--rest-url", "http://127.0.0.1:9")
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert "cannot check the symbols against exchangeInfo" in daemon.log


def test_usdm_market_uses_the_futures_paths_and_venue(tmp_path):
    """USD-M: streams under /market, REST under /fapi/v1, the key in historicalTrades'
    header only, pages of at most 500."""
    server = BinanceServer(SYMBOLS, market="usdm", api_keys=[TEST_API_KEY]).start()
    daemon = Daemon(tmp_path / "ticks.db", server, tmp_path / "ingest.log", [],
                    api_key=TEST_API_KEY)  # fmt: skip
    try:
        daemon.start()
        server.wait_clients(1)
        server.publish("BTCUSDT", 100)
        server.publish("BTCUSDT", 1200, live=False)
        server.publish("BTCUSDT", 100)
        server.publish("ETHUSDT", 100)
        wait_complete(daemon.db, server, venue="binance-usdm")
        assert daemon.stop() == 0
        assert_tape_complete(daemon.db, server, venue="binance-usdm")
        assert query(daemon.db, "SELECT DISTINCT venue FROM trades") == [("binance-usdm",)]
        pages = [c for c in server.rest_calls if c.endpoint == "/historicalTrades"]
        assert len(pages) >= 3 and all(int(c.params["limit"]) <= 500 for c in pages)
        assert "/aggTrades" not in {c.endpoint for c in server.rest_calls}
        keyed = {c.endpoint for c in server.rest_calls if c.headers.get("X-MBX-APIKEY")}
        assert keyed == {"/historicalTrades"}
        assert query(daemon.db, "SELECT DISTINCT filled_from FROM gaps") == [("historicalTrades",)]
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
        server.stop()


def test_failed_catch_up_is_covered_by_a_gap(server, daemon_factory):
    """REST refuses the catch-up once: its range is still filled, nothing is skipped."""
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.rest_errors = 1
    server.drop()
    server.publish("BTCUSDT", 300, live=False)
    server.wait_clients(1, total=2)
    server.publish("BTCUSDT", 50)
    server.publish("ETHUSDT", 50)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert "failed; the gap stays open" in daemon.log
    assert server.rest_errors == 0
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
