# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""Page-side cost of a live refresh and of a full recompute, on a database of >= 5M trades.

Usage, from the repository root::

    .venv/bin/python -m bench.bench_page [--db /tmp/bench_page.db] [--trades 5000000] [--repeat 15]

The database is built once with the real TradeWriter (two symbols, ~27 h of trades, so a
24-hour window at 1 s is full) and reused on later runs whatever ``--trades`` says; keep it
under /tmp. What is timed
is what the page runs (``pairs_monitor.page.pipeline`` over the read-only connection: SQL, bars,
``analytics``), without Streamlit's caches:

- live refresh: newest bars over the live tail (``View.live``: 300 x 1 s bars), last trade
  of each leg, feed status, ``pair_frame`` -> z-score. Target < 100 ms.
- full recompute, 1 h at 1 s and 24 h at 1 s: both legs' bars for the lookback, resampled,
  aligned, ``pair_frame`` (OLS on log prices, window 60). Targets < 300 ms and < 1.5 s.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread: statsmodels' regressions run on multi-threaded OpenBLAS, whose
# threads fight over a busy 2-core machine (the same call then varies 3-10x; one thread
# is faster and steady, see docs/benchmarks.md). Set before numpy is first imported: it reads
# these once, at load. setdefault, so a value given in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.stamp import stamped
from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.settings import Leg, View
from pairs_monitor.quant import PairMethod
from pairs_monitor.store.writer import TradeWriter

SYMBOLS = ("BTCUSDT", "ETHUSDT")
VENUE = "sim"
START_S = 1_714_521_600
SPAN_S = 27 * 3600
# The 24-hour cases need a trade of each symbol in every second of the span.
MIN_TRADES = len(SYMBOLS) * SPAN_S


def build(path: Path, trades: int) -> None:
    """Write ``trades`` trades (half per symbol, evenly spaced over 27 h) with the writer."""
    per_symbol = trades // len(SYMBOLS)
    span_us = SPAN_S * 1_000_000
    step_us = span_us / per_symbol
    rng = np.random.default_rng(1)
    w = TradeWriter(path)
    w.start()
    chunk = 250_000
    log_x = np.log(60_000.0)
    ou = 0.0
    started = time.perf_counter()
    for lo in range(0, per_symbol, chunk):
        n = min(chunk, per_symbol - lo)
        ids = np.arange(lo, lo + n) + 1
        t_us = (START_S * 1_000_000 + ids * step_us).astype(np.int64)
        lx = log_x + np.cumsum(rng.normal(0, 1e-4, n))
        noise = rng.normal(0, 5e-5, n)
        path_ou = np.empty(n)
        for i in range(n):  # an OU spread keeps the pair cointegrated
            ou = 0.995 * ou + noise[i]
            path_ou[i] = ou
        log_x = float(lx[-1])
        ly = -5.0 + 1.5 * lx + path_ou
        for symbol, logs in zip(SYMBOLS, (lx, ly), strict=True):
            prices = np.exp(logs).round(2).tolist()
            qty = rng.uniform(0.001, 1.0, n).round(5).tolist()
            maker = rng.integers(0, 2, n).tolist()
            rows = list(
                zip(
                    [VENUE] * n,
                    [symbol] * n,
                    ids.tolist(),
                    t_us.tolist(),
                    prices,
                    qty,
                    maker,
                    strict=True,
                )
            )
            w.put_trades(rows)
        print(f"  queued {2 * (lo + n):,} trades ({time.perf_counter() - started:.0f} s)")
    w.flush()
    w.close()
    print(f"built {path} in {time.perf_counter() - started:.0f} s")


def timed(fn: Callable[[], None], repeat: int) -> list[float]:
    fn()  # warm the page cache and SQLite's
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="/tmp/bench_page.db")
    ap.add_argument(
        "--trades",
        type=int,
        default=5_000_000,
        help=f"trades in a database built now (at least {MIN_TRADES:,})",
    )
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    path = Path(args.db)
    if not path.exists() and args.trades < MIN_TRADES:
        ap.error(
            f"--trades {args.trades:,} leaves seconds without trades in the 24-hour window; "
            f"give at least {MIN_TRADES:,}"
        )
    with stamped("bench_page"):
        measure(path, args.trades, args.repeat)
    return 0


def measure(path: Path, trades: int, repeat: int) -> None:
    """Build the database unless it exists, then time each case and print the table."""
    if not path.exists():
        build(path, trades)
    db = pipeline.ReadOnlyDB(path)
    stored = db.conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    bars = db.conn.execute("SELECT count(*) FROM bars_1s").fetchone()[0]
    source = pipeline.DbSource(db)
    base = View(venue=VENUE, y=SYMBOLS[1], x=SYMBOLS[0], timeframe="1s", window=60)

    def live() -> None:
        view = base.live()
        pair = pipeline.compute_pair(source, view)
        for s in SYMBOLS:
            source.last_price(Leg(VENUE, s))
        db.run(queries.feed_status, VENUE)
        assert not np.isnan(pair.latest("zscore"))

    def full(lookback_s: int, method: PairMethod = "ols") -> Callable[[], None]:
        view = View(venue=VENUE, y=SYMBOLS[1], x=SYMBOLS[0], lookback_s=lookback_s, method=method)

        def run() -> None:
            pair = pipeline.compute_pair(source, view)
            assert pair.frame is not None and len(pair.frame) >= lookback_s - 1

        return run

    def every_tab(lookback_s: int) -> Callable[[], None]:
        view = View(venue=VENUE, y=SYMBOLS[1], x=SYMBOLS[0], lookback_s=lookback_s)

        def run() -> None:
            pair = pipeline.compute_pair(source, view)
            pipeline.hedge_paths(pair)
            pipeline.stats_table(pair)
            pipeline.run_backtest(pair, 2.0, 0.5, 2.0)
            assert pair.end_s is not None, "the database has no bars in the window"
            pipeline.correlation(source, view, pair.end_s)

        return run

    cases: list[tuple[str, Callable[[], None], int | None]] = [
        ("live refresh (300 x 1s bars)", live, 100),
        ("full recompute 1 h at 1s (OLS)", full(3600), 300),
        ("full recompute 24 h at 1s (OLS)", full(86400), 1500),
        ("full recompute 1 h at 1s (Kalman)", full(3600, "kalman"), 300),
        ("full recompute 24 h at 1s (rolling OLS)", full(86400, "rolling"), 1500),
        ("every tab's analytics, 1 h at 1s (info)", every_tab(3600), None),
        ("every tab's analytics, 24 h at 1s (info)", every_tab(86400), None),
    ]
    print(f"database: {path} ({stored:,} trades, {bars:,} one-second bars), {repeat} runs each")
    print(f"{'case':44} {'median ms':>10} {'max ms':>8} {'target':>8}  met")
    for name, fn, target in cases:
        t = timed(fn, repeat)
        med = statistics.median(t)
        met = "-" if target is None else ("yes" if med < target else "NO")
        print(f"{name:44} {med:10.1f} {max(t):8.1f} {target or '-':>8}  {met}")
    db.close()


if __name__ == "__main__":
    sys.exit(main())
