"""Writer alone: trades/s from the queue into SQLite (trades + bars_1s), against the raw limit.

    .venv/bin/python bench/bench_writer.py [--trades 1000000] [--runs 5]

Each run starts a fresh database in a temporary folder, queues pre-built trades of two
symbols (as 1,000-row chunks like replay and backfill, or one trade per item like the live
feed) and times from the first put until ``flush()`` returns, i.e. until everything is
committed. The raw figure is a bare ``executemany`` of the same rows into the same
``trades`` table in 50,000-row transactions, with nothing else: the ceiling on this machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import db_setup
from writer import TradeWriter


def make_trades(n: int) -> list[tuple]:
    rng = random.Random(42)
    start_us = 1_700_000_000_000_000
    return [
        (
            "binance-spot",
            "BTCUSDT" if i % 2 else "ETHUSDT",
            i // 2,
            start_us + i * 400,
            30_000 + rng.random(),
            rng.random(),
            i % 3 == 0,
        )
        for i in range(n)
    ]


def time_writer(rows: list[tuple], chunk: int, folder: Path) -> float:
    writer = TradeWriter(folder / f"w{chunk}-{time.monotonic_ns()}.db")
    writer.start()
    started = time.perf_counter()
    for i in range(0, len(rows), chunk):
        writer.put_trades(rows[i : i + chunk])
    writer.flush()
    elapsed = time.perf_counter() - started
    assert writer.stats.trades_stored == len(rows), writer.stats
    writer.close()
    return len(rows) / elapsed


def time_raw(rows: list[tuple], folder: Path) -> float:
    path = folder / f"raw-{time.monotonic_ns()}.db"
    db_setup.setup(path)
    conn = db_setup.connect_for_writing(path)
    started = time.perf_counter()
    for i in range(0, len(rows), 50_000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i : i + 50_000])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = make_trades(args.trades)
    results: dict[str, list[float]] = {"raw executemany": [], "writer, 1000-row chunks": []}
    live_rows = rows[: args.trades // 5]
    results["writer, 1 trade per item"] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.runs):  # interleaved, so machine load hits every case alike
            results["raw executemany"].append(time_raw(rows, folder))
            results["writer, 1000-row chunks"].append(time_writer(rows, 1000, folder))
            results["writer, 1 trade per item"].append(time_writer(live_rows, 1, folder))
    print(f"{args.trades:,} trades, {args.runs} runs (1-per-item case: {len(live_rows):,})")
    for name, rates in results.items():
        print(
            f"{name:28s} median {statistics.median(rates):>9,.0f}/s  "
            f"min {min(rates):>9,.0f}  max {max(rates):>9,.0f}"
        )


if __name__ == "__main__":
    main()
