"""History from klines: how long 24 h of two spot symbols at 1 s takes to land, and its cost.

    .venv/bin/python -m bench.bench_history [--hours 24] [--symbols 2] [--runs 3]
                                            [--weight 2400] [--live 500]

(from the repository root).

Each run starts the local Binance server (``tests/helpers/binance_server.py``) with
``--hours`` of made-up 1-second history before a tape that begins now, a fresh database in
a temporary folder, the real :class:`~pairs_monitor.store.writer.TradeWriter`, the real
spot feed storing a live stream of ``--live`` trades a second, and a
:class:`~pairs_monitor.ingest.binance.history.HistoryBackfill` with the spot default budget
(``--weight``, of which the history spends half). It times from ``start()`` until every
page is committed (``landed``), and counts the requests and weight the server saw, the bars
stored, and the live trades the feed stored meanwhile against those the server published
(live trades never wait for history). The local server answers in about a millisecond, so
the time is this code's and the writer's; against Binance each request takes its network
round trip (100-300 ms), four in flight.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.stamp import stamped
from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed
from pairs_monitor.ingest.binance.history import SPOT_KLINES, HistoryBackfill
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import query

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]


def one_run(folder: Path, hours: int, symbols: list[str], weight: int, live: float) -> dict:
    """One landing of ``hours`` of history of ``symbols``; its figures."""
    start_ms = int(time.time() * 1000)
    server = BinanceServer(
        symbols,
        base_time_ms=start_ms - 1_000_000 // 3,  # the tape's first trade is now
        kline_history_s=hours * 3600 + 600,
    ).start()
    db = folder / "ticks.db"
    writer = TradeWriter(db)
    writer.start()
    stop = threading.Event()
    feed = BinanceFeed(MARKETS["spot"], symbols, writer, db_path=db, ws_url=server.ws_url,
                       rest_url=server.rest_url, rest_weight_per_min=weight)  # fmt: skip
    runner = threading.Thread(target=feed.run, args=(stop,), daemon=True)
    runner.start()
    server.wait_clients(1)
    server.start_stream(live)
    history = HistoryBackfill(feed.rest, writer, feed.venue, symbols, db,
                              duration_s=hours * 3600, klines=SPOT_KLINES)  # fmt: skip
    try:
        began = time.monotonic()
        history.start()
        if not history.landed.wait(600):
            raise RuntimeError("the history did not land within 10 minutes")
        landed = time.monotonic() - began
        server.stop_stream()
        published = sum(len(server.expected(s)) for s in symbols)
        time.sleep(0.5)  # the last live frames reach the feed
        writer.flush()
        stored_live = query(db, "SELECT count(*) FROM trades")[0][0]
        bars = query(db, "SELECT count(*) FROM bars_1s WHERE from_klines = 1")[0][0]
    finally:
        history.close()
        stop.set()
        runner.join(15)
        writer.close()
        server.stop()
    calls = [c for c in server.rest_calls if c.endpoint == "/klines"]
    return {
        "landed_s": landed,
        "requests": len(calls),
        "weight": sum(c.weight for c in calls),
        "bars": bars,
        "live_published": published,
        "live_stored": stored_live,
        "max_minute": max_minute_weight(calls),
    }


def max_minute_weight(calls: list) -> int:
    """The most weight the requests spent in any 60 s, as Binance counts per minute."""
    times = [c.at for c in calls]
    return max((sum(c.weight for c in calls if t <= c.at < t + 60) for t in times), default=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--symbols", type=int, default=2, choices=range(1, len(SYMBOLS) + 1))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--weight", type=int, default=2400, help="the market's budget a minute")
    ap.add_argument("--live", type=float, default=500.0, help="live trades a second, all symbols")
    args = ap.parse_args(argv)
    symbols = SYMBOLS[: args.symbols]
    with stamped("bench_history"):
        print(f"{args.hours} h of {len(symbols)} spot symbols at 1 s, budget {args.weight}/min "
              f"(history: half), live stream {args.live:g} trades/s")  # fmt: skip
        results = []
        for number in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                result = one_run(Path(folder), args.hours, symbols, args.weight, args.live)
            results.append(result)
            print(
                f"run {number + 1}: landed in {result['landed_s']:.1f} s, "
                f"{result['requests']} requests, weight {result['weight']} "
                f"(at most {result['max_minute']} in any minute; the history's budget "
                f"{args.weight // 2}/min), {result['bars']} bars; "
                f"live trades stored {result['live_stored']} of {result['live_published']}"
            )
        times = [r["landed_s"] for r in results]
        print(f"landed: median {statistics.median(times):.1f} s, worst {max(times):.1f} s "
              "(target: within 60 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
