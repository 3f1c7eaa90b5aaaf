"""Spot and USD-M in one daemon through the faults a day brings, at the same time.

Two local servers (spot and USD-M, ports of their own) and one daemon recording
``btcusdt ethusdt usdm:btcusdt usdm:ethusdt``. Both markets drop their connections, both
withhold ranges from the socket (USD-M's holding insurance-fund trades), the daemon is
killed with ``kill -9`` while trades go on, and a new one starts on the same file. At the
end the spot tape equals the server's trade by trade; the USD-M tape too with an API key,
and bar by bar without one (aggTrades gives every id's price, time and side and each
aggregate's total size, not each trade's own), with every non-market id accounted for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.binance_server import TEST_API_KEY, BinanceServer
from tests.helpers.daemon import (
    BARS,
    NONMARKET,
    SYMBOLS,
    Daemon,
    assert_bars_equal,
    assert_tape_complete,
    query,
    stored,
    wait_for,
)

pytestmark = pytest.mark.daemon

SPOT, USDM = "binance-spot", "binance-usdm"


@pytest.fixture
def spot() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS).start()
    yield server
    server.stop()


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS, market="usdm", api_keys=[TEST_API_KEY]).start()
    yield server
    server.stop()


@pytest.fixture
def make(
    tmp_path: Path, spot: BinanceServer, usdm: BinanceServer
) -> Iterator[Callable[..., Daemon]]:
    """Daemons of both markets on one database; killed at the end."""
    made: list[Daemon] = []

    def build(api_key: str | None) -> Daemon:
        daemon = Daemon(
            tmp_path / "ticks.db", spot, tmp_path / "ingest.log", [], usdm=usdm, api_key=api_key
        )
        made.append(daemon)
        return daemon

    yield build
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def _spot_done(db: Path, server: BinanceServer, symbol: str) -> bool:
    return len(stored(db, symbol, SPOT)) == len(server.expected(symbol))


def _usdm_done(db: Path, server: BinanceServer, symbol: str) -> bool:
    if not db.exists():
        return False
    trades = len(stored(db, symbol, USDM))
    nonmarket = len(query(db, NONMARKET, (USDM, symbol)))
    return trades + nonmarket == len(server.tapes[symbol])


def wait_both(db: Path, spot: BinanceServer, usdm: BinanceServer, timeout: float = 40.0) -> None:
    """Every id of both servers' tapes is accounted for in the database."""
    for symbol in SYMBOLS:
        wait_for(functools.partial(_spot_done, db, spot, symbol), timeout, f"spot {symbol}")
        wait_for(functools.partial(_usdm_done, db, usdm, symbol), timeout, f"usdm {symbol}")


def publish_live(spot: BinanceServer, usdm: BinanceServer, count: int) -> None:
    for server in (spot, usdm):
        for symbol in SYMBOLS:
            server.publish(symbol, count)


def withhold(spot: BinanceServer, usdm: BinanceServer) -> None:
    """Ranges only REST can give, on both markets; USD-M's hold insurance-fund trades."""
    spot.publish("BTCUSDT", 1_500, live=False)  # more than one page of 1,000
    spot.publish("ETHUSDT", 40, live=False)
    usdm.publish("BTCUSDT", 600, live=False)  # more than one page of 500
    usdm.publish("BTCUSDT", 2, live=False, nonmarket=True)
    usdm.publish("BTCUSDT", 30, live=False)
    usdm.publish("ETHUSDT", 1, live=False, nonmarket=True)
    usdm.publish("ETHUSDT", 40, live=False)


@pytest.mark.parametrize("api_key", [TEST_API_KEY, None], ids=["with-key", "no-key"])
def test_both_markets_through_drops_withheld_ranges_and_kill_9(spot, usdm, make, api_key):
    first = make(api_key).start()
    spot.wait_clients(1)
    usdm.wait_clients(1)
    publish_live(spot, usdm, 50)
    usdm.publish("ETHUSDT", 1, nonmarket=True)  # on the socket: no gap, no bar
    wait_both(first.db, spot, usdm)

    # Both markets drop at once; trades go on meanwhile, then live again.
    spot.drop()
    usdm.drop()
    withhold(spot, usdm)
    spot.wait_clients(1, total=2)
    usdm.wait_clients(1, total=2)
    publish_live(spot, usdm, 10)
    # A range withheld while connected: the next live trade jumps over it.
    withhold(spot, usdm)
    publish_live(spot, usdm, 10)
    wait_both(first.db, spot, usdm)

    # kill -9 while both markets trade on; a new daemon resumes from the file.
    first.kill9()
    withhold(spot, usdm)
    second = make(api_key).start()
    spot.wait_clients(1, total=3)
    usdm.wait_clients(1, total=3)
    publish_live(spot, usdm, 10)
    wait_both(second.db, spot, usdm)
    assert second.stop() == 0

    db = second.db
    assert_tape_complete(db, spot, SPOT)
    for symbol in SYMBOLS:
        nonmarket = [r[0] for r in query(db, NONMARKET, (USDM, symbol))]
        assert nonmarket == usdm.expected_nonmarket(symbol)
        got, want = stored(db, symbol, USDM), usdm.expected(symbol)
        if api_key:
            assert got == want
        else:  # each id's time, price and side; sizes are their aggregate's share
            assert [(r[0], r[1], r[2], r[4]) for r in got] == [
                (w[0], w[1], w[2], w[4]) for w in want
            ]
        assert_bars_equal(query(db, BARS, (USDM, symbol)), usdm.expected_bars(symbol))
        # Spot bars are untouched by USD-M's and the other way round.
        spot_bars = query(db, BARS, (SPOT, symbol))
        assert sum(b[8] for b in spot_bars) == len(spot.expected(symbol))

    usdm_sources = {
        f for (f,) in query(db, "SELECT filled_from FROM gaps WHERE venue = ?", (USDM,))
    }
    assert usdm_sources == {"historicalTrades" if api_key else "aggTrades"}
    spot_sources = {
        f for (f,) in query(db, "SELECT filled_from FROM gaps WHERE venue = ?", (SPOT,))
    }
    assert spot_sources == {"historicalTrades"}
    assert query(db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
    # The key went to USD-M's historicalTrades only, never to spot.
    assert not any(c.headers.get("X-MBX-APIKEY") for c in spot.rest_calls)
    keyed = {c.endpoint for c in usdm.rest_calls if c.headers.get("X-MBX-APIKEY")}
    assert keyed == ({"/historicalTrades"} if api_key else set())
