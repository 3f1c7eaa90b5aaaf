# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""The pair scanner at market scale: 200 symbols x 1,440 one-minute bars (19,900 pairs).

Usage, from the repository root::

    .venv/bin/python -m bench.bench_scan [--symbols 200] [--bars 1440] [--runs 5]
                                         [--coint-pairs 400] [--memory-symbols 500]

A seeded universe of one-minute log prices: random walks sharing a market factor (so
returns correlate as crypto's do), with ten cointegrated pairs planted among them.

1. ``scan_pairs(closes, log_prices=True)`` over every pair, ``--runs`` times: the median
   wall time and its cost per pair.
2. In the same run, statsmodels' ``coint`` with the same fixed lag (Schwert's, 7 at
   1,440 bars; ``autolag=None``) on ``--coint-pairs`` pairs of the same universe: its
   cost per pair. Target: the scanner's cost per pair at most 1/20 of it.
3. The per-pair path the scanner replaced (``screen_pair`` and ``out_of_sample_check``,
   what ``scan_pairs`` called per pair before) on 100 pairs: its cost per pair.
4. Equality on a sample of 200 pairs: the scanner's statistic and p-value against
   ``engle_granger`` on each (target: 1e-7 relative, 1e-6).
5. Memory: ``--memory-symbols`` symbols x ``--bars`` bars scanned once, the peak of what
   Python and numpy allocated meanwhile (``tracemalloc``) and the process's peak RSS.
6. Beside ingestion (``--beside-seconds``, 0 skips it): a database holding the universe's
   day of 1-minute bars (one trade a minute per symbol, through the real writer), then a
   feed of ``--feed-per-s`` trades a second through the same writer for
   ``--beside-seconds``, first alone, then with the daemon's ``ScanService`` scanning the
   200 legs back to back (its child process at nice 19, one BLAS thread). Figures: the
   commit latency of the feed's batches (put to committed, median and p99), how late the
   feed's thread ran against its schedule (the daemon's threads waiting for the
   interpreter or a core), and the child's CPU per scan.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread, as the daemon's scanner runs (docs/benchmarks.md).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import resource
import statistics
import time
import tracemalloc
import warnings
from typing import cast

import numpy as np
import pandas as pd

from bench.stamp import stamped

TARGET_RATIO = 1 / 20


def universe(symbols: int, bars: int, seed: int = 7) -> pd.DataFrame:
    """Closes of ``symbols`` legs: a shared market factor plus each leg's own walk, and
    ten planted pairs (a leg's twin with an AR(1) spread, phi 0.9)."""
    rng = np.random.default_rng(seed)
    market = np.cumsum(rng.normal(0, 8e-4, bars))
    beta = rng.uniform(0.5, 1.5, symbols)
    own = np.cumsum(rng.normal(0, 6e-4, (bars, symbols)), axis=0)
    logs = np.log(rng.uniform(0.1, 50_000, symbols)) + market[:, None] * beta + own
    for k in range(10):
        spread = np.zeros(bars)
        shocks = rng.normal(0, 3e-4, bars)
        for t in range(1, bars):
            spread[t] = 0.9 * spread[t - 1] + shocks[t]
        logs[:, 2 * k + 1] = 1.2 * logs[:, 2 * k] + 0.3 + spread
    return pd.DataFrame(
        np.exp(logs),
        columns=[f"S{i:03d}USDT" for i in range(symbols)],
        index=pd.date_range("2026-11-01", periods=bars, freq="1min", tz="UTC"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--bars", type=int, default=1440)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--coint-pairs", type=int, default=400)
    parser.add_argument("--memory-symbols", type=int, default=500)
    parser.add_argument("--beside-seconds", type=float, default=20.0)
    parser.add_argument("--feed-per-s", type=int, default=5_000)
    args = parser.parse_args(argv)
    with stamped("bench_scan"):
        run(args)
    return 0


def run(args: argparse.Namespace) -> None:
    from statsmodels.tsa.stattools import coint

    import analytics as A
    from pairs_monitor.quant.scan import out_of_sample_check, screen_pair

    closes = universe(args.symbols, args.bars)
    pairs = args.symbols * (args.symbols - 1) // 2
    lag = A.schwert_lag(args.bars)
    print(f"{args.symbols} symbols x {args.bars} one-minute bars: {pairs:,} pairs, lag {lag}")

    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        table = A.scan_pairs(closes, log_prices=True)
        times.append(time.perf_counter() - started)
    scan_s = statistics.median(times)
    scan_us = 1e6 * scan_s / pairs
    print(
        f"scan_pairs: median {scan_s:.3f} s over {args.runs} runs "
        f"(min {min(times):.3f}, max {max(times):.3f}); {scan_us:.1f} us a pair; "
        f"{len(table):,} rows, {int(table['candidate'].sum())} candidates, "
        f"{int(table['tradable'].sum())} tradable"
    )

    logs = np.log(closes.to_numpy())
    rng = np.random.default_rng(1)
    sample = [tuple(rng.choice(args.symbols, 2, replace=False)) for _ in range(args.coint_pairs)]
    started = time.perf_counter()
    for a, b in sample:
        coint(logs[:, a], logs[:, b], maxlag=lag, autolag=None)
    coint_us = 1e6 * (time.perf_counter() - started) / len(sample)
    ratio = scan_us / coint_us
    print(
        f"statsmodels coint (maxlag={lag}, autolag=None): {coint_us:.0f} us a pair "
        f"over {len(sample)} pairs"
    )
    print(
        f"scanner / coint, cost per pair: {ratio:.4f} = 1/{1 / ratio:.0f} "
        f"(target <= 1/{1 / TARGET_RATIO:.0f}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )

    data = cast(pd.DataFrame, np.log(closes))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for a, b in sample[:100]:
            y, x = data.iloc[:, a], data.iloc[:, b]
            screen_pair(y, x, None)
            out_of_sample_check(y, x, None)
    loop_us = 1e6 * (time.perf_counter() - started) / 100
    print(
        f"the per-pair path it replaced (screen_pair, out_of_sample_check): {loop_us:.0f} us a pair"
    )

    by_pair = table.set_index(["y", "x"])
    worst_stat = worst_p = 0.0
    for a, b in sample[:200]:
        y, x = sorted((a, b))
        names = closes.columns[y], closes.columns[x]
        eg = A.engle_granger(data[names[0]], data[names[1]])
        row = by_pair.loc[names]
        worst_stat = max(worst_stat, abs(row["eg_stat"] / eg.statistic - 1))
        worst_p = max(worst_p, abs(row["eg_pvalue"] - eg.pvalue))
    print(
        f"against engle_granger on {len(sample[:200])} pairs: statistic within "
        f"{worst_stat:.1e} relative "
        f"(target 1e-7), p-value within {worst_p:.1e} (target 1e-6)"
    )

    wide = universe(args.memory_symbols, args.bars, seed=8)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    started = time.perf_counter()
    A.scan_pairs(wide, log_prices=True)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wide_pairs = args.memory_symbols * (args.memory_symbols - 1) // 2
    print(
        f"memory, {args.memory_symbols} symbols ({wide_pairs:,} pairs) in {elapsed:.2f} s: "
        f"peak allocated during the scan {peak:.0f} MiB; process peak RSS "
        f"{rss_before:.0f} MiB before, {rss_after:.0f} MiB after"
    )
    if args.beside_seconds > 0:
        beside_ingestion(closes, args.beside_seconds, args.feed_per_s)


def beside_ingestion(closes: pd.DataFrame, seconds: float, per_s: int) -> None:
    """Phase 6 (see the module doc)."""
    import sqlite3
    import tempfile
    import threading
    from pathlib import Path

    from pairs_monitor.scan.service import ScanService
    from pairs_monitor.store.writer import TradeWriter

    end_m = time.time_ns() // 60_000_000_000
    minutes = np.arange(end_m - len(closes), end_m) * 60
    symbols = list(closes.columns)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "ticks.db"
        writer = TradeWriter(db)
        writer.start()
        try:
            for symbol in symbols:
                prices = closes[symbol].to_numpy()
                writer.put_trades(
                    [
                        ("binance-spot", symbol, i + 1, (int(m) + 30) * 1_000_000, float(p), 1.0, 0)
                        for i, (m, p) in enumerate(zip(minutes, prices, strict=True))
                    ],
                    block=True,
                )
            now = time.time_ns() // 1_000_000

            def status(conn: sqlite3.Connection) -> None:
                conn.executemany(
                    "INSERT INTO feed_status (venue, symbol, source, source_since_ms, "
                    "updated_ms) VALUES ('binance-spot', ?, 'live', 0, ?)",
                    [(symbol, now + 3_600_000) for symbol in symbols],  # fresh for the run
                )

            writer.submit(status).result(30)
            writer.flush(60)
            alone = feed(writer, seconds, per_s)
            stop = threading.Event()
            scans = ScanService(db, writer, stop, every_s=0.5, window_s=86_400, first_s=0.0)
            scans.start()
            while scans.scans < 1:  # the first scan reads the day whole: not the steady state
                time.sleep(0.2)
            first = scans.scans
            with_scans = feed(writer, seconds, per_s)
            done = scans.scans - first
            scans.close(30)
            with sqlite3.connect(db) as conn:
                cpu = [row[0] for row in conn.execute("SELECT cpu_s FROM scan_runs")][first:]
        finally:
            writer.close(30)
    print(f"beside ingestion: a feed of {per_s:,} trades/s for {seconds:.0f} s, twice")
    for name, (latency, lag) in (("alone", alone), ("with scans back to back", with_scans)):
        print(
            f"  {name}: commit latency median {latency[0]:.1f} ms, p99 {latency[1]:.1f} ms; "
            f"feed thread late median {lag[0]:.2f} ms, p99 {lag[1]:.2f} ms"
        )
    cpu_text = f"median {statistics.median(cpu):.2f} s of CPU" if cpu else "none finished"
    print(f"  scans finished during the second feed: {done} ({cpu_text} each, in the child)")


def feed(writer, seconds: float, per_s: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Trades of one symbol at ``per_s`` a second in batches every 10 ms through the writer:
    each batch's put-to-commit latency and how late it was put (ms: median, p99)."""
    batch = max(1, per_s // 100)
    latencies: list[float] = []
    late: list[float] = []
    trade_id = 1
    started = time.monotonic()
    due = started
    while due - started < seconds:
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        put = time.monotonic()
        late.append(1000 * (put - due))
        stamp = time.time_ns() // 1000
        rows = [("feed", "XUSDT", trade_id + k, stamp, 100.0, 1.0, k % 2) for k in range(batch)]
        trade_id += batch
        writer.put_trades(rows, block=True)
        # Called in the writer's thread once the batch's transaction has committed.
        writer.submit(lambda conn: None).add_done_callback(
            lambda _, put=put: latencies.append(1000 * (time.monotonic() - put))
        )
        due += 0.01
    writer.flush(30)

    def spread(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]

    return spread(latencies), spread(late)


if __name__ == "__main__":
    raise SystemExit(main())
