"""Spot and USD-M in one daemon, each against a local server of its own (separate ports).

- both tapes are stored under their venues, trade by trade as the servers published them,
  and the run is recorded once with both venues;
- one market down (its server silent, then gone) never stalls the other: its trades keep
  being stored within a second or two of publication;
- ``top:N`` records the symbols ``ticker/24hr`` ranks highest among those ``exchangeInfo``
  lists as TRADING, and a symbol a market does not list stops the start with status 4
  naming that market;
- funding: ``funding_rates`` holds the server's ``fundingRate`` rows, ``funding_live``
  follows the ``markPrice`` stream, and a settlement lands with its settled rate;
- the API key reaches the USD-M ``historicalTrades`` calls and nothing else, and appears
  nowhere in the log or the database;
- a large USD-M universe (trade and markPrice streams) is spread over connections, and a
  thread of one market dying ends the daemon naming that market.
"""

from __future__ import annotations

import functools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.daemon import EXIT_BAD_SYMBOL, EXIT_SOURCE_FAILED
from tests.helpers.binance_server import TEST_API_KEY, BinanceServer, funding_rate
from tests.helpers.daemon import (
    ROOT,
    SYMBOLS,
    Daemon,
    assert_tape_complete,
    connect_ro,
    query,
    stored,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon

DAY_MS = 86_400_000


@pytest.fixture
def spot() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS).start()
    yield server
    server.stop()


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS, market="usdm", mark_interval=0.2).start()
    yield server
    server.stop()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons on one database (keywords: those of ``Daemon``); killed at the end."""
    made: list[Daemon] = []

    def build(server: BinanceServer, *extra: str, **options: object) -> Daemon:
        daemon = Daemon(tmp_path / "ticks.db", server, tmp_path / "ingest.log", list(extra),
                        **options)  # type: ignore[arg-type]  # fmt: skip
        made.append(daemon)
        return daemon

    yield build
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def publish_both(spot: BinanceServer, usdm: BinanceServer, count: int) -> None:
    for symbol in SYMBOLS:
        spot.publish(symbol, count)
        usdm.publish(symbol, count)


def test_spot_and_usdm_tapes_stored_under_their_venues(spot, usdm, make):
    daemon = make(spot, usdm=usdm).start()
    spot.wait_clients(1)
    usdm.wait_clients(1)
    publish_both(spot, usdm, 300)
    usdm.publish("BTCUSDT", 2, nonmarket=True)  # insurance-fund trades: not in the tape
    publish_both(spot, usdm, 200)
    wait_complete(daemon.db, spot)
    wait_complete(daemon.db, usdm, venue="binance-usdm")
    assert daemon.stop() == 0, daemon.log
    assert_tape_complete(daemon.db, spot)
    assert_tape_complete(daemon.db, usdm, venue="binance-usdm")
    run = query(daemon.db, "SELECT venue, symbols, params_json FROM ingest_runs")
    assert [r[:2] for r in run] == [("binance-spot,binance-usdm", "BTCUSDT,ETHUSDT")]
    assert '"binance-spot": {' in run[0][2] and '"binance-usdm": {' in run[0][2]
    status = query(daemon.db, "SELECT venue, symbol FROM feed_status ORDER BY venue, symbol")
    assert status == [(v, s) for v in ("binance-spot", "binance-usdm") for s in SYMBOLS]


def stored_within(db: Path, server: BinanceServer, count: int, seconds: float) -> float:
    """Publish ``count`` USD-M trades of each symbol; return how long storing them took."""
    venue = server.venue
    want = {s: len(server.expected(s)) + count for s in SYMBOLS}
    started = time.monotonic()
    for symbol in SYMBOLS:
        server.publish(symbol, count)
    wait_for(
        lambda: all(len(stored(db, s, venue)) == want[s] for s in SYMBOLS),
        seconds,
        f"{count} trades of each symbol stored within {seconds} s",
    )
    return time.monotonic() - started


def test_a_market_that_is_down_never_stalls_the_other(usdm, make):
    spot = BinanceServer(SYMBOLS).start()  # stopped by the test itself
    daemon = make(spot, usdm=usdm).start()
    spot.wait_clients(1)
    usdm.wait_clients(1)
    publish_both(spot, usdm, 50)
    wait_complete(daemon.db, spot)
    spot.set_silent(True)  # spot's socket: no data, no pongs (the watchdog cuts it at 3 s)
    latencies = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        latencies.append(stored_within(daemon.db, usdm, 20, 2.0))
        time.sleep(0.2)
    spot.stop()  # spot gone: connections refused, REST refused
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        latencies.append(stored_within(daemon.db, usdm, 20, 2.0))
        time.sleep(0.2)
    assert max(latencies) < 2.0
    wait_for(
        lambda: (
            query(daemon.db, "SELECT connected FROM feed_status WHERE venue = 'binance-spot'")
            == [(0,), (0,)]
        ),
        10,
        "spot shown down",
    )
    assert query(daemon.db, "SELECT connected FROM feed_status WHERE venue = 'binance-usdm'") == [
        (1,),
        (1,),
    ]
    assert daemon.stop() == 0, daemon.log
    assert_tape_complete(daemon.db, usdm, venue="binance-usdm")


def test_top_n_picks_what_ticker_24hr_ranks_highest(tmp_path, make):
    spot = BinanceServer(
        ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"],
        quote_volumes={"AAAUSDT": 4e9, "BBBUSDT": 1e6, "CCCUSDT": 5e9, "DDDUSDT": 9e9},
        statuses={"DDDUSDT": "BREAK"},  # the most volume, but not trading: never picked
    ).start()
    usdm = BinanceServer(
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        market="usdm",
        quote_volumes={"BTCUSDT": 1e6, "ETHUSDT": 2e6, "SOLUSDT": 3e9},
    ).start()
    try:
        daemon = make(spot, usdm=usdm, words=["top:2", "usdm:top:1", "usdm:btcusdt"]).start()
        spot.wait_clients(1)
        usdm.wait_clients(1)
        for server in (spot, usdm):
            for symbol in server.symbols:
                server.publish(symbol, 30)
        chosen = [("binance-spot", "AAAUSDT"), ("binance-spot", "CCCUSDT"),
                  ("binance-usdm", "BTCUSDT"), ("binance-usdm", "SOLUSDT")]  # fmt: skip
        wait_for(
            lambda: all(len(stored(daemon.db, s, v)) == 30 for v, s in chosen), 20, "the tapes"
        )
        assert daemon.stop() == 0, daemon.log
        assert query(daemon.db, "SELECT DISTINCT venue, symbol FROM trades ORDER BY 1, 2") == (
            chosen
        )
        assert (
            "spot:top:2: the 2 symbols of binance-spot with the highest 24 h quote volume: "
            "CCCUSDT, AAAUSDT" in daemon.log
        )
        assert "usdm:top:1: the 1 symbols of binance-usdm" in daemon.log
    finally:
        spot.stop()
        usdm.stop()


def test_a_symbol_a_market_does_not_list_exits_4_naming_the_market(spot, usdm, make):
    daemon = make(spot, usdm=usdm, words=["btcusdt", "usdm:btcusdt", "usdm:foousdt"]).start()
    assert daemon.wait(30) == EXIT_BAD_SYMBOL, daemon.log
    assert "unknown symbol(s) for binance-usdm: FOOUSDT" in daemon.log


def server_funding(server: BinanceServer, symbol: str, start_ms: int) -> list[tuple]:
    answer = requests.get(
        f"{server.rest_url}/fapi/v1/fundingRate",
        params={"symbol": symbol, "startTime": str(start_ms), "limit": "1000"},
        timeout=5,
    ).json()
    return [(r["fundingTime"], float(r["fundingRate"])) for r in answer]


def stored_funding(db: Path, symbol: str) -> list[tuple]:
    return query(
        db,
        "SELECT funding_time_ms, rate FROM funding_rates WHERE venue = 'binance-usdm' "
        "AND symbol = ? ORDER BY funding_time_ms",
        (symbol,),
    )


def test_funding_history_live_rate_and_settlement(spot, usdm, make):
    started = now_ms()
    daemon = make(spot, usdm=usdm).start()
    usdm.wait_clients(1)
    usdm.publish("BTCUSDT", 40)
    usdm.publish("ETHUSDT", 40)
    # nothing was stored at start: seven days back
    want = {s: server_funding(usdm, s, started - 7 * DAY_MS) for s in SYMBOLS}
    wait_for(lambda: all(stored_funding(daemon.db, s) == want[s] for s in SYMBOLS), 15, "history")

    def live_follows() -> bool:
        rows = query(
            daemon.db,
            "SELECT symbol, mark_price, next_funding_ms FROM funding_live ORDER BY symbol",
        )
        marks = [(s, float(usdm.tapes[s][-1].price), usdm.next_funding_ms()) for s in SYMBOLS]
        return rows == marks

    wait_for(live_follows, 10, "funding_live to follow markPrice")
    early = usdm.advance_funding(0.5)
    wait_for(
        lambda: all(early in dict(stored_funding(daemon.db, s)) for s in SYMBOLS),
        20,
        "the settlement of both symbols",
    )
    for symbol in SYMBOLS:
        rows = dict(stored_funding(daemon.db, symbol))
        assert rows[early] == float(funding_rate(symbol, early))  # settled, not the estimate
    assert daemon.stop() == 0, daemon.log
    assert "funding at" in daemon.log and "settled" in daemon.log


def all_text(db: Path) -> str:
    """Every value of every table, as text."""
    conn = connect_ro(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')
        )
    except sqlite3.Error as exc:
        raise AssertionError(f"cannot read {db}: {exc}") from exc
    finally:
        conn.close()


def test_the_key_reaches_usdm_historical_trades_only(tmp_path, make):
    spot = BinanceServer(SYMBOLS).start()
    usdm = BinanceServer(SYMBOLS, market="usdm", api_keys=[TEST_API_KEY]).start()
    try:
        daemon = make(spot, usdm=usdm, api_key=TEST_API_KEY).start()
        spot.wait_clients(1)
        usdm.wait_clients(1)
        publish_both(spot, usdm, 20)
        for server in (spot, usdm):
            server.publish("BTCUSDT", 30, live=False)  # only REST has these: a gap to fill
        publish_both(spot, usdm, 20)
        wait_complete(daemon.db, spot)
        wait_complete(daemon.db, usdm, venue="binance-usdm")
        assert daemon.stop() == 0, daemon.log
        assert_tape_complete(daemon.db, spot)
        assert_tape_complete(daemon.db, usdm, venue="binance-usdm")
    finally:
        spot.stop()
        usdm.stop()
    keyed = [(c.endpoint, c.headers.get("X-MBX-APIKEY")) for c in usdm.rest_calls]
    assert ("/historicalTrades", TEST_API_KEY) in keyed
    assert all(key == TEST_API_KEY for endpoint, key in keyed if endpoint == "/historicalTrades")
    assert all(key is None for endpoint, key in keyed if endpoint != "/historicalTrades")
    assert all("X-MBX-APIKEY" not in call.headers for call in spot.rest_calls)
    assert "API key: set" in daemon.log
    assert TEST_API_KEY not in daemon.log
    stored_text = all_text(daemon.db)
    assert TEST_API_KEY not in stored_text
    assert '"api_key": true' in stored_text  # whether it was set: that much is recorded


def has_trades(db: Path, symbol: str, count: int) -> bool:
    return len(stored(db, symbol, "binance-usdm")) == count


def test_a_large_usdm_universe_is_spread_over_connections_with_its_mark_prices(make):
    """top:300 of 320 USD-M symbols: 600 streams (trade and markPrice of each), more than
    one connection carries (its URL limit); every chosen symbol has both, on one socket."""
    symbols = [f"C{i:03d}USDT" for i in range(320)]
    usdm = BinanceServer(symbols, market="usdm").start()
    try:
        daemon = make(usdm, words=["top:300"]).start()
        chosen = set(symbols[:300])  # the server ranks its symbols in the order given
        wait_for(
            lambda: set().union(*(c.symbols for c in usdm.clients)) == chosen,
            30,
            "every chosen symbol subscribed",
        )
        assert len(usdm.clients) >= 3
        assert set().union(*(c.mark_streams for c in usdm.clients)) == chosen
        assert all(len(c.symbols) + len(c.mark_streams) <= 1024 for c in usdm.clients)
        for symbol in ("C000USDT", "C299USDT"):
            usdm.publish(symbol, 10)
        try:
            for symbol in ("C000USDT", "C299USDT"):
                wait_for(functools.partial(has_trades, daemon.db, symbol, 10), 20, symbol)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the daemon's log ends:\n{daemon.log[-4000:]}") from None
        assert daemon.stop() == 0, daemon.log
    finally:
        usdm.stop()


def test_a_dead_thread_of_one_market_ends_the_daemon_naming_that_market(spot, usdm, tmp_path):
    """Both markets run; USD-M's connection thread dies (a bug): live would never
    reconnect it, so the daemon exits 5 and says which market's thread died."""
    fault = (
        "import time\n"
        "from pairs_monitor.ingest.binance import ws\n"
        "run = ws.StreamConnection.run\n"
        "def dying(self):\n"
        "    if '/market/stream' not in self.url:\n"
        "        return run(self)\n"
        "    time.sleep(1)\n"
        "    raise OverflowError('math range error')\n"
        "ws.StreamConnection.run = dying"
    )
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    argv = [
        "--source",
        "live",
        *Daemon(db, spot, log, [], usdm=usdm).market_args(),
        "--db",
        str(db),
    ]
    code = f"import sys\n{fault}\nfrom pairs_monitor.ingest.daemon import main\n"
    code += f"sys.exit(main({argv!r}))\n"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert proc.wait(30) == EXIT_SOURCE_FAILED, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopping: the live source's thread(s) binance-usdm ws-0 died" in text
    assert "stopped cleanly" not in text
