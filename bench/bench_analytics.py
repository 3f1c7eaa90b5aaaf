# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""Speed of the analytics against the targets of issue 5.

Usage, from the repository root: ``.venv/bin/python -m bench.bench_analytics [--repeat 7]``.
Prints a Markdown table (median, min and max of the repeats, in ms) ready for
docs/benchmarks.md, between the stamp (commit, versions, machine, load average) and the
load average at the end. Inputs are simulated with a fixed seed: a cointegrated pair
(y = 1.5 x + AR(1) noise) and random walks for the scanner.
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
from functools import partial

import numpy as np
import pandas as pd

from bench.stamp import stamped
from pairs_monitor import quant as A

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def simulated_trades(n: int, seconds: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, seconds * 1_000_000, n))
    return pd.DataFrame(
        {
            "price": 100 + np.cumsum(rng.normal(0, 0.01, n)),
            "qty": rng.exponential(1.0, n),
            "buyer_is_maker": rng.random(n) < 0.5,
        },
        index=T0 + pd.to_timedelta(offsets, unit="us"),
    )


def simulated_pair(n: int, seed: int) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    noise = np.zeros(n)
    eps = rng.normal(0, 0.02, n)
    for t in range(1, n):
        noise[t] = 0.97 * noise[t - 1] + eps[t]
    index = pd.date_range(T0, periods=n, freq="1s")
    return pd.Series(1.5 * x + 3 + noise, index), pd.Series(x, index)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    fn()  # warm-up: imports, caches
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs), min(runs), max(runs)


def live_view(y: pd.Series, x: pd.Series) -> None:
    """What the live panel computes on a refresh: static and rolling hedge, spread, z, corr."""
    A.pair_frame(y, x, 60, "ols")
    A.pair_frame(y, x, 60, "rolling")


def stationarity(y: pd.Series, x: pd.Series) -> None:
    """The on-demand tests panel: ADF on the spread, Engle-Granger, Johansen, HL, Hurst."""
    fit = A.hedge_ratio(y, x)
    s = A.spread(y, x, fit.slope, fit.intercept)
    A.adf_test(s)
    A.engle_granger(y, x)
    A.johansen(pd.DataFrame({"y": y, "x": x}))
    A.half_life(s)
    A.hurst(s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case")
    args = parser.parse_args(argv)
    with stamped("bench_analytics"):
        run(args.repeat)
    return 0


def run(r: int) -> None:
    """Build the inputs, then time each case ``r`` times and print the table."""
    trades = simulated_trades(1_000_000, 86_400, seed=1)
    bars_1s = A.resample_trades(trades, "1s")
    y_day, x_day = simulated_pair(86_400, seed=2)
    y_hour, x_hour = y_day.iloc[:3600], x_day.iloc[:3600]
    rng = np.random.default_rng(3)
    closes = pd.DataFrame(
        100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (1440, 20)), axis=0)),
        index=pd.date_range(T0, periods=1440, freq="1min"),
        columns=[f"S{i:02d}" for i in range(20)],
    )

    pf = A.pair_frame(y_day, x_day, 60, "rolling")
    zs, hs = pf["zscore"], pf["hedge_ratio"]

    cases: list[tuple[str, Callable[[], object], float | None]] = [
        (
            "resample_trades: 1,000,000 ticks -> 1s bars",
            lambda: A.resample_trades(trades, "1s"),
            100,
        ),
        ("resample_bars: 86,400 1s bars -> 1min", lambda: A.resample_bars(bars_1s, "1min"), None),
        (
            "live view (static + rolling hedge, spread, z, corr), 3,600 bars",
            lambda: live_view(y_hour, x_hour),
            30,
        ),
        (
            "live view (static + rolling hedge, spread, z, corr), 86,400 bars",
            lambda: live_view(y_day, x_day),
            300,
        ),
    ]
    for method in ("huber", "theil-sen", "kalman"):
        cases.append(
            (
                f"pair_frame {method}, 86,400 bars",
                partial(A.pair_frame, y_day, x_day, 60, method),
                None,
            )
        )
    cases += [
        (
            "stationarity (ADF + EG + Johansen + half-life + Hurst), 86,400 bars",
            lambda: stationarity(y_day, x_day),
            1000,
        ),
        (
            "  of which adf_test (Schwert lag 21), 86,400 bars",
            lambda: A.adf_test(y_day - 1.5 * x_day),
            None,
        ),
        (
            "  of which engle_granger (lag 21), 86,400 bars",
            lambda: A.engle_granger(y_day, x_day),
            None,
        ),
        ("scan_pairs: 20 symbols (190 pairs) x 1,440 bars", lambda: A.scan_pairs(closes), 2000),
        ("backtest (rolling z, 86,400 bars)", lambda: A.backtest(y_day, x_day, zs, hs), None),
    ]

    print(f"{r} timed runs per case, after one warm-up")
    print("| case | median ms | min | max | target ms | met |")
    print("|---|---:|---:|---:|---:|---|")
    for name, fn, target in cases:
        med, lo, hi = timed(fn, r)
        met = "" if target is None else ("yes" if med < target else "NO")
        tgt = "" if target is None else f"{target:,.0f}"
        print(f"| {name} | {med:,.1f} | {lo:,.1f} | {hi:,.1f} | {tgt} | {met} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
