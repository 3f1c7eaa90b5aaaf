"""A socket on the wrong route is told from a quiet market.

USD-M's legacy ``/stream`` accepts the connection and answers pings but delivers nothing
(../shared/BINANCE.md). The feed is run here on a real writer and SQLite file against the
local USD-M server, with a :class:`Market` whose route is that legacy one and a
``silent_route_s`` of half a second: the problem must reach ``feed_status.problem``, the trades
must be fetched over REST meanwhile, and the problem must clear when trades arrive. On the
right route a market that stops trading is no problem.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed, Market
from pairs_monitor.ingest.status import StatusReporter
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import TEST_API_KEY, BinanceServer
from tests.helpers.daemon import query, stored, wait_for

VENUE = "binance-usdm"
LEGACY = dataclasses.replace(MARKETS["usdm"], ws_route="/stream")
PROBLEM = "SELECT problem FROM feed_status WHERE symbol = 'BTCUSDT'"


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(["BTCUSDT"], market="usdm", api_keys=[TEST_API_KEY]).start()
    yield server
    server.stop()


class Running:
    """A feed running in a thread of its own, with a writer and a status reporter."""

    def __init__(self, server: BinanceServer, market: Market, db: Path) -> None:
        self.writer = TradeWriter(db)
        self.writer.start()
        self.feed = BinanceFeed(
            market, ["BTCUSDT"], self.writer, db_path=db, ws_url=server.ws_url,
            rest_url=server.rest_url, api_key=TEST_API_KEY, silent_route_s=0.5,
            connect_timeout=2.0,
        )  # fmt: skip
        self.reporter = StatusReporter(self.writer, self.feed.stats, interval=0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.feed.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.reporter.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.reporter.stop()
        self.writer.close(5)


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_silent_socket_on_the_legacy_route_is_reported_and_its_trades_fetched(
    usdm: BinanceServer, tmp_path: Path, caplog
) -> None:
    db = tmp_path / "ticks.db"
    with Running(usdm, LEGACY, db) as run:
        usdm.wait_clients(1)
        usdm.publish("BTCUSDT", 50)  # on /market only: this socket hears nothing
        wait_for(lambda: run.feed.stats[0].problem is not None, 10, "the problem")
        wait_for(lambda: "wrong stream route" in str(query(db, PROBLEM)), 5, "feed_status")
        usdm.publish("BTCUSDT", 40)
        usdm.publish("BTCUSDT", 1, nonmarket=True)
        usdm.publish("BTCUSDT", 30)
        # Fetched over REST while the socket stays silent, from the first id REST showed.
        first = run.feed.tapes["BTCUSDT"].high
        assert first is not None
        want = [t for t in usdm.expected("BTCUSDT") if t[0] > first]
        wait_for(
            lambda: [r for r in stored(db, "BTCUSDT", VENUE) if r[0] > first] == want,
            15,
            "the silent socket's trades over REST",
        )
        reasons = query(db, "SELECT DISTINCT reason, status, filled_from FROM gaps")
        assert reasons == [("silent-socket", "filled", "historicalTrades")]
        # A trade on the socket clears it.
        usdm.send_raw(usdm.tapes["BTCUSDT"][-1].ws_frame())
        wait_for(lambda: run.feed.stats[0].problem is None, 5, "the problem cleared")
        wait_for(lambda: query(db, PROBLEM) == [(None,)], 5, "feed_status cleared")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "/stream?streams=btcusdt@trade delivers nothing" in errors[0]
    assert "--ws-url takes the host only" in errors[0]


@pytest.mark.soak  # seconds of waiting that nothing happens: the full suite's
def test_a_market_that_stops_trading_on_the_right_route_is_no_problem(
    usdm: BinanceServer, tmp_path: Path
) -> None:
    db = tmp_path / "ticks.db"
    with Running(usdm, MARKETS["usdm"], db) as run:
        usdm.wait_clients(1)
        usdm.publish("BTCUSDT", 30)
        wait_for(lambda: len(stored(db, "BTCUSDT", VENUE)) == 30, 10, "the live trades")
        time.sleep(1.5)  # three times silent_route_s without a trade
        assert run.feed.stats[0].problem is None
        assert query(db, PROBLEM) == [(None,)]
    assert query(db, "SELECT count(*) FROM gaps") == [(0,)]
