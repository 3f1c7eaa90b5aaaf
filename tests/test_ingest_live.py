"""The live source end to end: the real daemon against a local Binance-speaking server.

Every test ends by comparing the stored tape, trade by trade, with what the server
published.
"""

from __future__ import annotations

import signal
import time

from binance_server import BinanceServer
from conftest import (
    SYMBOLS,
    assert_tape_complete,
    query,
    stored,
    wait_complete,
    wait_for,
)


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
