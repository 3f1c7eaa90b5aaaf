# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""What the daemon's alert evaluator costs: 100 rules on 20 pairs at 1-second bars.

Usage, from the repository root::

    .venv/bin/python -m bench.bench_alerts [--seconds 60] [--pairs 20] [--trades-per-s 5]

A database in a temporary folder gets 40 symbols (20 pairs), each with 10 minutes of
trades before the run (the views are full: 300 one-second bars) and ``--trades-per-s``
trades a second during it, written by the real ``TradeWriter`` from a feeder thread.
Each pair has five rules: z-score above and below (OLS, log prices, window 60, 1 s
bars), correlation breakdown (window 60), a volume spike on Y (window 60) and a price
level on X, all at levels they never reach, so the cost is the evaluation, not delivery.

Two phases of ``--seconds`` each, with the same feed:

1. feed only: the process's CPU time (the feeder, the writer);
2. feed and the evaluator, one pass a second as the daemon runs it: the process's CPU
   time again, and each pass's own CPU time (``time.thread_time``) and wall time.

Figures: the evaluator's CPU share of one core (its passes' CPU over the phase's wall
time; target < 5 %), the process's extra CPU share in phase 2 over phase 1 (the passes
plus their writes in the writer thread), and the passes' median and worst wall time.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread, as the daemon and the other benchmarks run (docs/benchmarks.md).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.stamp import stamped
from pairs_monitor.alerts.delivery import Deliverer
from pairs_monitor.alerts.evaluator import Evaluator
from pairs_monitor.store.writer import TradeWriter

VENUE = "sim"
PREFILL_S = 600


class Feed:
    """Random-walk trades for every symbol, ``per_s`` a second each, through the writer."""

    def __init__(self, writer: TradeWriter, symbols: list[str], per_s: int) -> None:
        self.writer = writer
        self.symbols = symbols
        self.per_s = per_s
        self.rng = np.random.default_rng(3)
        self.log_price = {s: np.log(100.0 + 10 * i) for i, s in enumerate(symbols)}
        self.next_id = dict.fromkeys(symbols, 1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feed", daemon=True)

    def second(self, second: int) -> None:
        """Queue one second of trades of every symbol, stamped in ``second``."""
        rows = []
        common = self.rng.normal(0, 2e-4)  # every symbol moves with one driver, plus its own
        for symbol in self.symbols:
            for k in range(self.per_s):
                self.log_price[symbol] += common / self.per_s + self.rng.normal(0, 1e-4)
                trade_id = self.next_id[symbol]
                self.next_id[symbol] = trade_id + 1
                when_us = second * 1_000_000 + k * (1_000_000 // self.per_s)
                price = round(float(np.exp(self.log_price[symbol])), 4)
                rows.append((VENUE, symbol, trade_id, when_us, price, 0.1 + 0.01 * k, k % 2))
        self.writer.put_trades(rows, block=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            self.second(int(now))
            self.stop.wait(1.0 - (now % 1.0))

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def add_rules(writer: TradeWriter, symbols: list[str]) -> int:
    """Five rules per pair (see the module doc), through the writer; return how many."""
    made = []
    for y, x in zip(symbols[0::2], symbols[1::2], strict=True):
        view = ("1s", 60, "ols", 1)
        made += [
            ("zscore_above", y, x, 50.0, 40.0, *view),
            ("zscore_below", y, x, -50.0, -40.0, *view),
            ("corr_breakdown", y, x, -1.0, 0.5, "1s", 60, None, None),
            ("volume_spike", y, None, 1e9, 1.0, "1s", 60, None, None),
            ("price_above", x, None, 1e9, 1.0, None, None, None, None),
        ]

    def write(conn) -> None:
        conn.executemany(
            "INSERT INTO alert_rules (kind, venue, symbol, symbol_x, threshold, rearm,"
            " timeframe, window_bars, hedge_method, log_prices, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            [(kind, VENUE, *rest) for kind, *rest in made],
        )

    writer.submit(write).result(30)
    return len(made)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of each phase")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--trades-per-s", type=int, default=5, help="per symbol")
    args = ap.parse_args(argv)
    with stamped("bench_alerts"), tempfile.TemporaryDirectory() as folder:
        run(Path(folder) / "ticks.db", args.pairs, args.trades_per_s, args.seconds)
    return 0


def run(db: Path, pairs: int, per_s: int, seconds: int) -> None:
    symbols = [f"S{i:02d}USDT" for i in range(2 * pairs)]
    writer = TradeWriter(db)
    writer.start()
    try:
        feed = Feed(writer, symbols, per_s)
        start = int(time.time()) - PREFILL_S
        for second in range(start, start + PREFILL_S):
            feed.second(second)
        writer.flush(60)
        count = add_rules(writer, symbols)
        print(f"{count} rules on {pairs} pairs ({len(symbols)} symbols), {per_s} trades/s each")

        with feed:
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(seconds)
            feed_only = (time.process_time() - cpu) / (time.monotonic() - wall)

            stop = threading.Event()
            evaluator = Evaluator(db, writer, [], Deliverer(db, writer, [], stop), stop)
            evaluator.run_pass()  # the first pass reads every view whole: not the steady state
            writer.flush(10)
            pass_cpu, pass_wall = [], []
            cpu, wall = time.process_time(), time.monotonic()
            next_pass = wall
            while time.monotonic() - wall < seconds:
                next_pass += 1.0
                time.sleep(max(0.0, next_pass - time.monotonic()))
                started_cpu, started = time.thread_time(), time.perf_counter()
                evaluator.run_pass()
                pass_cpu.append(time.thread_time() - started_cpu)
                pass_wall.append(time.perf_counter() - started)
            elapsed = time.monotonic() - wall
            with_alerts = (time.process_time() - cpu) / elapsed
        judged = sum(1 for s in evaluator.states.values() if s.reading.note is None)
        print(f"rules with a value at the end: {judged} of {count}")
        print(f"passes: {len(pass_cpu)} in {elapsed:.1f} s")
        print(
            f"evaluator CPU share of one core: {100 * sum(pass_cpu) / elapsed:.2f} % (target < 5 %)"
        )
        print(
            f"process CPU share: feed only {100 * feed_only:.1f} %, "
            f"feed + evaluator {100 * with_alerts:.1f} % "
            f"(+{100 * (with_alerts - feed_only):.1f} points)"
        )
        ms = sorted(1000 * w for w in pass_wall)
        print(
            f"pass wall time: median {statistics.median(ms):.1f} ms, "
            f"p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, worst {ms[-1]:.1f} ms; "
            f"pass CPU median {1000 * statistics.median(pass_cpu):.1f} ms"
        )
        reloads = sum(c.reloads for c in evaluator.caches.values())
        print(f"bar caches: {len(evaluator.caches)}, whole reads {reloads}")
    finally:
        writer.close(30)


if __name__ == "__main__":
    raise SystemExit(main())
