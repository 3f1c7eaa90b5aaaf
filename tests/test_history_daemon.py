"""``ingest.py --history`` end to end: the daemon fills the time before its tape from
klines while it records live trades, and a restart asks for nothing it already has.

The local spot server's tape begins about ten seconds ago, after an hour of made-up
klines; the daemon (``--history 20m``) must store the 1-second klines of those twenty
minutes as ``bars_1s`` rows marked ``from_klines``, equal to what ``/api/v3/klines``
serves, and every live trade as usual.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import (
    SYMBOLS,
    Daemon,
    assert_tape_complete,
    query,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon

SPOT = "binance-spot"
KLINE_BARS = (
    "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume, "
    "trade_count FROM bars_1s WHERE venue = ? AND symbol = ? AND from_klines = 1 "
    "ORDER BY bar_time_s"
)


@pytest.fixture
def spot() -> Iterator[BinanceServer]:
    start_ms = int(time.time() * 1000) - 10_000
    # make_trade spaces ids a third of a millisecond apart from base_time_ms + id // 3.
    server = BinanceServer(
        SYMBOLS, base_time_ms=start_ms - 1_000_000 // 3, kline_history_s=3600
    ).start()
    yield server
    server.stop()


def klines_asked(server: BinanceServer) -> int:
    return sum(1 for call in server.rest_calls if call.endpoint == "/klines")


def test_the_daemon_fills_history_from_klines_and_a_restart_asks_nothing_again(
    spot: BinanceServer, tmp_path: Path
):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    first = Daemon(db, spot, log, []).start("--history", "20m")
    spot.wait_clients(1)
    spot.publish("BTCUSDT", 30)
    spot.publish("ETHUSDT", 30)
    wait_complete(db, spot)
    wait_for(lambda: "history in:" in first.log, 60, "the history landed")
    assert first.stop() == 0
    assert_tape_complete(db, spot, SPOT)

    ((spans,),) = query(db, "SELECT count(*) FROM kline_spans WHERE origin = 'rest'")
    assert spans >= len(SYMBOLS)
    for symbol in SYMBOLS:
        stored = query(db, KLINE_BARS, (SPOT, symbol))
        first_s, last_s = stored[0][0], stored[-1][0]
        assert last_s - first_s > 19 * 60  # twenty minutes (seconds of no trade: no bar)
        served = [
            (k[0] // 1000, *map(float, k[1:6]), float(k[7]), float(k[9]), k[8])
            for k in spot.expected_klines(symbol, "1s", first_s * 1000, last_s * 1000)
            if k[8] > 0
        ]
        assert [b[0] for b in stored] == [b[0] for b in served]
        for got, want in zip(stored, served, strict=True):
            assert got[:5] == want[:5] and got[8] == want[8], (got, want)
            for a, b in zip(got[5:8], want[5:8], strict=True):
                assert math.isclose(a, b, rel_tol=1e-12), (got, want)
        # The klines end where the trades begin: no second holds both.
        ((first_trade_s,),) = query(
            db,
            "SELECT min(trade_time_us) / 1000000 FROM trades WHERE venue = ? AND symbol = ?",
            (SPOT, symbol),
        )
        assert last_s < first_trade_s

    asked = klines_asked(spot)
    second = Daemon(db, spot, log, []).start("--history", "20m")
    spot.wait_clients(1, total=2)
    spot.publish("BTCUSDT", 10)
    spot.publish("ETHUSDT", 10)
    wait_complete(db, spot)
    time.sleep(1.0)  # time for a history pass, were it to ask for anything
    assert second.stop() == 0
    assert klines_asked(spot) == asked
    assert_tape_complete(db, spot, SPOT)
