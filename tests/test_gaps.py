"""Gaps REST cannot fill end ``abandoned``, through the real daemon and the local server.

USD-M futures gives out trade ids to insurance-fund and ADL trades that historicalTrades
never returns (../shared/BINANCE.md). When the socket missed such a trade, no REST call
can recover it: the gap is marked ``abandoned`` with what was recovered, the daemon says
so, and every trade REST does have is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers.binance_server import BinanceServer, Trade
from tests.helpers.daemon import SYMBOLS, Daemon, query, stored, wait_complete, wait_for

pytestmark = pytest.mark.daemon

VENUE = "binance-usdm"


@pytest.fixture
def futures() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS, prefix="/fapi/v1").start()
    yield server
    server.stop()


def start_futures_daemon(make: Callable[..., Daemon], server: BinanceServer) -> Daemon:
    """A daemon on the futures market with 50 trades of each symbol stored."""
    daemon = make(server, "--market", "usdm").start()
    server.wait_clients(1)
    for symbol in SYMBOLS:
        server.publish(symbol, 50)
    wait_complete(daemon.db, server, venue=VENUE)
    return daemon


def stored_ids(db, symbol: str) -> list[int]:
    return [row[0] for row in stored(db, symbol, VENUE)]


def published_ids(trades: list[Trade]) -> list[int]:
    return [t.id for t in trades]


def test_a_trade_rest_never_returns_abandons_its_gap_with_the_rest_recovered(
    futures, daemon_factory
):
    daemon = start_futures_daemon(daemon_factory, futures)
    # Missed by the socket: two market trades around one insurance-fund trade.
    before = futures.publish("BTCUSDT", 2, live=False)
    unrecoverable = futures.publish("BTCUSDT", 1, live=False, in_rest=False)[0]
    after = futures.publish("BTCUSDT", 2, live=False)
    futures.publish("BTCUSDT", 10)  # the jump that opens the gap
    gap_ids = published_ids([*before, unrecoverable, *after])
    wait_for(
        lambda: query(daemon.db, "SELECT status FROM gaps") == [("abandoned",)],
        what="the gap to be abandoned",
    )
    wait_for(
        lambda: query(daemon.db, "SELECT gaps_abandoned FROM feed_status WHERE symbol = ?",
                      ("BTCUSDT",)) == [(1,)],
        what="feed_status to count the abandoned gap",
    )  # fmt: skip
    assert daemon.stop() == 0
    assert query(
        daemon.db,
        "SELECT symbol, first_missing_id, last_missing_id, reason, status, trades_recovered, "
        "note, resolved_ms IS NOT NULL FROM gaps",
    ) == [
        (
            "BTCUSDT",
            gap_ids[0],
            gap_ids[-1],
            "live-jump",
            "abandoned",
            4,
            "REST returned 4 of 5 trades",
            1,
        )
    ]
    want = [t.id for t in futures.tapes["BTCUSDT"] if t.in_rest]
    assert stored_ids(daemon.db, "BTCUSDT") == want  # all but the one REST lacks
    assert unrecoverable.id not in stored_ids(daemon.db, "BTCUSDT")
    assert stored(daemon.db, "ETHUSDT", VENUE) == futures.expected("ETHUSDT")
    assert f"ids {gap_ids[0]}..{gap_ids[-1]} abandoned: REST returned 4 of 5 trades" in daemon.log


def test_a_stored_hole_rest_cannot_fill_is_abandoned_on_the_next_start(futures, daemon_factory):
    """A catch-up skips an id REST lacks; the next start finds the hole and abandons it."""
    first = start_futures_daemon(daemon_factory, futures)
    futures.drop()
    hole = futures.publish("BTCUSDT", 1, live=False, in_rest=False)[0]
    futures.publish("BTCUSDT", 20, live=False)
    futures.wait_clients(1, total=2)
    wait_for(
        lambda: len(stored(first.db, "BTCUSDT", VENUE)) == 70,
        what="the catch-up to store what REST has",
    )
    assert first.stop() == 0
    assert hole.id not in stored_ids(first.db, "BTCUSDT")
    second = daemon_factory(futures, "--market", "usdm").start()
    wait_for(
        lambda: (
            query(second.db, "SELECT status FROM gaps WHERE reason = 'stored-hole'")
            == [("abandoned",)]
        ),
        timeout=30,
        what="the stored hole to be abandoned",
    )
    assert second.stop() == 0
    assert query(
        second.db,
        "SELECT first_missing_id, last_missing_id, trades_recovered, note FROM gaps "
        "WHERE reason = 'stored-hole'",
    ) == [(hole.id, hole.id, 0, "REST returned 0 of 1 trades")]
    want = [t.id for t in futures.tapes["BTCUSDT"] if t.in_rest]
    assert stored_ids(second.db, "BTCUSDT") == want
    assert stored(second.db, "ETHUSDT", VENUE) == futures.expected("ETHUSDT")
