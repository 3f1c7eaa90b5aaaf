"""USD-M futures through the real daemon, against the local server as Binance answers
since 2026-04-23 (../shared/BINANCE.md): streams under /market, insurance-fund trades on
the socket only, historicalTrades with an API key and pages of 500, aggTrades without.

With the key the stored tape is compared with the server's trade by trade; without it,
bar by bar (aggTrades gives each id's price, time and side, and each aggregate's total
quantity, not each trade's own size). The key must reach historicalTrades only, and
never the log or the database.
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
    query,
    stored,
    wait_for,
)

pytestmark = pytest.mark.daemon

VENUE = "binance-usdm"


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS, market="usdm", api_keys=[TEST_API_KEY]).start()
    yield server
    server.stop()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Daemons on one database with ``BINANCE_API_KEY`` as given; killed at the end."""
    made: list[Daemon] = []

    def factory(server: BinanceServer, api_key: str | None = None, *extra: str) -> Daemon:
        daemon = Daemon(tmp_path / "ticks.db", server, tmp_path / "ingest.log", list(extra),
                        api_key=api_key)  # fmt: skip
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def accounted(db: Path, server: BinanceServer, symbol: str) -> bool:
    """Every id of the server's tape is stored: as a trade or as a non-market trade."""
    trades = len(stored(db, symbol, VENUE))
    nonmarket = len(query(db, NONMARKET, (VENUE, symbol))) if db.exists() else 0
    return trades + nonmarket == len(server.tapes[symbol])


def wait_accounted(db: Path, server: BinanceServer, timeout: float = 30.0) -> None:
    for symbol in server.symbols:
        wait_for(functools.partial(accounted, db, server, symbol), timeout, f"{symbol} accounted")


def drop_and_withhold(server: BinanceServer) -> None:
    """The faults both paths recover from: a dropped connection whose missed trades hold
    an insurance-fund trade, and a range withheld from the socket around another."""
    server.drop()
    server.publish("BTCUSDT", 40, live=False)
    server.publish("BTCUSDT", 1, live=False, nonmarket=True)
    server.publish("BTCUSDT", 40, live=False)
    server.publish("ETHUSDT", 30, live=False)
    server.wait_clients(1, total=2)
    server.publish("BTCUSDT", 10)
    server.publish("ETHUSDT", 10)
    server.publish("BTCUSDT", 700, live=False)  # more than one page of 500
    server.publish("BTCUSDT", 2, live=False, nonmarket=True)
    server.publish("BTCUSDT", 30, live=False)
    server.publish("BTCUSDT", 10)  # the jump that opens the gap
    server.publish("ETHUSDT", 10)


def start(make: Callable[..., Daemon], server: BinanceServer, api_key: str | None) -> Daemon:
    daemon = make(server, api_key).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 60)
    server.publish("ETHUSDT", 60)
    wait_accounted(daemon.db, server)
    return daemon


def assert_key_kept(daemon: Daemon, server: BinanceServer) -> None:
    """The key went in historicalTrades' header only, and is in no log line nor file."""
    keyed = {c.endpoint for c in server.rest_calls if c.headers.get("X-MBX-APIKEY")}
    assert keyed <= {"/historicalTrades"}
    assert all(TEST_API_KEY not in str(c.params) for c in server.rest_calls)
    assert TEST_API_KEY not in daemon.log
    for path in daemon.db.parent.glob(daemon.db.name + "*"):
        assert TEST_API_KEY.encode() not in path.read_bytes(), path


def test_non_market_frames_move_the_tape_without_a_gap_and_reach_no_bar(usdm, make):
    daemon = start(make, usdm, TEST_API_KEY)
    insurance = usdm.publish("BTCUSDT", 3, nonmarket=True)
    usdm.publish("BTCUSDT", 40)
    wait_accounted(daemon.db, usdm)
    wait_for(
        lambda: (
            query(daemon.db, "SELECT nonmarket FROM feed_status WHERE symbol = 'BTCUSDT'") == [(3,)]
        ),
        what="feed_status.nonmarket",
    )
    assert daemon.stop() == 0
    assert query(daemon.db, "SELECT count(*) FROM gaps") == [(0,)]
    assert "skipped" not in daemon.log and "Traceback" not in daemon.log
    assert query(
        daemon.db,
        "SELECT trade_id, trade_time_us, trade_type FROM nonmarket_trades WHERE symbol = ?",
        ("BTCUSDT",),
    ) == [(t.id, t.time_ms * 1000, "INSURANCE_FUND") for t in insurance]
    for symbol in SYMBOLS:
        assert stored(daemon.db, symbol, VENUE) == usdm.expected(symbol)
        assert_bars_equal(query(daemon.db, BARS, (VENUE, symbol)), usdm.expected_bars(symbol))
    assert query(daemon.db, "SELECT min(price) FROM trades") > [(0.0,)]


def test_with_the_key_a_drop_and_a_withheld_range_end_in_the_exact_tape(usdm, make):
    daemon = start(make, usdm, TEST_API_KEY)
    drop_and_withhold(usdm)
    wait_accounted(daemon.db, usdm)
    assert daemon.stop() == 0
    for symbol in SYMBOLS:
        assert stored(daemon.db, symbol, VENUE) == usdm.expected(symbol)
        assert [r[0] for r in query(daemon.db, NONMARKET, (VENUE, symbol))] == (
            usdm.expected_nonmarket(symbol)
        )
    gaps = query(daemon.db, "SELECT status, filled_from FROM gaps")
    assert gaps and set(gaps) == {("filled", "historicalTrades")}
    pages = [c for c in usdm.rest_calls if c.endpoint == "/historicalTrades"]
    assert all(int(c.params["limit"]) <= 500 for c in pages)
    assert "/aggTrades" not in {c.endpoint for c in usdm.rest_calls}
    assert_key_kept(daemon, usdm)


def test_without_a_key_the_bars_are_exact_and_gap_rows_say_aggtrades(usdm, make):
    daemon = start(make, usdm, None)
    drop_and_withhold(usdm)
    wait_accounted(daemon.db, usdm)
    assert daemon.stop() == 0
    for symbol in SYMBOLS:
        got, want = stored(daemon.db, symbol, VENUE), usdm.expected(symbol)
        # Each id's time, price and side exactly; its size is its aggregate's share.
        assert [(r[0], r[1], r[2], r[4]) for r in got] == [(w[0], w[1], w[2], w[4]) for w in want]
        assert_bars_equal(query(daemon.db, BARS, (VENUE, symbol)), usdm.expected_bars(symbol))
        assert [r[0] for r in query(daemon.db, NONMARKET, (VENUE, symbol))] == (
            usdm.expected_nonmarket(symbol)
        )
    gaps = query(daemon.db, "SELECT status, filled_from FROM gaps")
    assert gaps and set(gaps) == {("filled", "aggTrades")}
    assert "/historicalTrades" not in {c.endpoint for c in usdm.rest_calls}
    assert "gaps and catch-ups from aggTrades" in daemon.log


def test_a_refused_key_is_said_once_and_the_gaps_come_from_aggtrades(usdm, make):
    refused = "someoneElsesKey" + "9" * 49  # well formed, not one the server knows
    daemon = start(make, usdm, refused)
    drop_and_withhold(usdm)
    wait_accounted(daemon.db, usdm)
    assert daemon.stop() == 0
    for symbol in SYMBOLS:
        assert_bars_equal(query(daemon.db, BARS, (VENUE, symbol)), usdm.expected_bars(symbol))
    assert daemon.log.count("BINANCE_API_KEY was refused by Binance (HTTP 401, code -2015") == 1
    assert refused not in daemon.log
    assert query(daemon.db, "SELECT DISTINCT status, filled_from FROM gaps") == [
        ("filled", "aggTrades")
    ]


def test_a_restart_after_kill_9_resumes_with_the_key_and_keeps_it_out_of_the_runs(usdm, make):
    first = start(make, usdm, TEST_API_KEY)
    usdm.publish("BTCUSDT", 2, nonmarket=True)
    wait_accounted(first.db, usdm)
    first.kill9()
    usdm.publish("BTCUSDT", 30, live=False)
    usdm.publish("BTCUSDT", 1, live=False, nonmarket=True)
    usdm.publish("BTCUSDT", 30, live=False)
    second = make(usdm, TEST_API_KEY).start()
    usdm.wait_clients(1, total=2)
    usdm.publish("BTCUSDT", 10)
    usdm.publish("ETHUSDT", 10)
    wait_accounted(second.db, usdm)
    assert second.stop() == 0
    for symbol in SYMBOLS:
        assert stored(second.db, symbol, VENUE) == usdm.expected(symbol)
    params = [p for (p,) in query(second.db, "SELECT params_json FROM ingest_runs")]
    assert params and all(TEST_API_KEY not in p for p in params)
    assert all('"api_key": true' in p for p in params)
    assert_key_kept(second, usdm)
