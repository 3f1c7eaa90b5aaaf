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

Issue 16 adds two measures of the page itself (Streamlit included):

- ``--control-change``: a change of the rolling window on 24 h of 1 s bars, the whole
  page run (``app.py`` in Streamlit's AppTest, caches on; a new window each run, so never
  a cache hit) with one tab open (``PAIRS_PAGE_TABS=open``) for several tabs, and with
  every tab computed (``all``, the page before). Target < 300 ms.
- ``--live-cpu SECONDS``: the CPU a page open on the Live tab costs the Streamlit server:
  ``ingest.py --source sim`` writes a fresh database, ``streamlit run app.py`` serves it,
  headless Chromium opens the page; the server's CPU time over SECONDS with the page open,
  less its CPU over as long before the page opened. Target < 5 % of a core.
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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.stamp import ROOT, stamped
from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.settings import TABS_ENV, Leg, View
from pairs_monitor.page.tabs import TAB_NAMES
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
    ap.add_argument(
        "--control-change",
        action="store_true",
        help="also time a window change in the page run, per open tab (issue 16)",
    )
    ap.add_argument(
        "--tabs",
        nargs="+",
        choices=CHANGE_TABS,
        default=list(CHANGE_TABS),
        metavar="TAB",
        help="with --control-change: the tabs to open, one case each (default: "
        f"{' '.join(CHANGE_TABS)}, then every tab at once)",
    )
    ap.add_argument(
        "--live-cpu",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also measure a Live page's CPU over SECONDS (needs /usr/bin/chromium)",
    )
    ap.add_argument(
        "--only-page",
        action="store_true",
        help="skip the pipeline cases (with --control-change or --live-cpu)",
    )
    args = ap.parse_args(argv)
    path = Path(args.db)
    if not path.exists() and args.trades < MIN_TRADES:
        ap.error(
            f"--trades {args.trades:,} leaves seconds without trades in the 24-hour window; "
            f"give at least {MIN_TRADES:,}"
        )
    with stamped("bench_page"):
        if not args.only_page:
            measure(path, args.trades, args.repeat)
        if args.control_change:
            if not path.exists():
                build(path, args.trades)
            control_change(path, args.repeat, args.tabs)
        if args.live_cpu:
            live_cpu(args.live_cpu)
    return 0


CHANGE_TABS = TAB_NAMES  # every tab, the Watchlist first as on the page


def control_change(path: Path, repeat: int, tabs: Sequence[str] = CHANGE_TABS) -> None:
    """Time the page's run after a change of the rolling window, 24 h of 1 s bars, with
    each of ``tabs`` open, then (all of them asked for) with every tab computed."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["TICKS_DB"] = str(path)
    print(f"control change: window +1 per run, 24 h at 1s, {repeat} runs after one warm-up")
    # CPU ms: the process's CPU time over the run (the script's thread and Streamlit's),
    # which a busy machine inflates far less than the wall-clock time.
    print(f"{'open tab':44} {'median ms':>10} {'max ms':>8} {'CPU ms':>8} {'target':>8}  met")
    cases = [(tab, "open") for tab in tabs]
    if set(tabs) == set(CHANGE_TABS):
        cases.append(("every tab", "all"))
    for tab, mode in cases:
        # Each case from empty caches: the page's caches are the process's, and a case
        # would otherwise find the pair frames the one before it computed.
        st.cache_data.clear()
        os.environ[TABS_ENV] = mode
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.session_state["lookback"] = "24 h"
        if mode == "open":
            at.session_state["tab"] = tab
        at.run()
        window = 60
        out, cpu = [], []
        for _ in range(repeat + 1):
            window += 1
            at.number_input(key="window").set_value(window)
            started, cpu_started = time.perf_counter(), time.process_time()
            at.run()
            out.append(1000 * (time.perf_counter() - started))
            cpu.append(1000 * (time.process_time() - cpu_started))
            if at.exception:
                raise RuntimeError(f"{tab}: {[e.value for e in at.exception]}")
        runs = at.session_state["tab_runs"]
        if mode == "open" and set(runs) != {tab}:
            raise RuntimeError(f"computed {runs}, not {tab} alone")
        out, cpu = out[1:], cpu[1:]  # the first change warms the caches and imports
        med = statistics.median(out)
        name = f"{tab} ({mode})"
        print(
            f"{name:44} {med:10.1f} {max(out):8.1f} {statistics.median(cpu):8.1f} {300:>8}  "
            f"{'yes' if med < 300 else 'NO'}"
        )


# What scripts/run.sh (make run) starts the page with besides its address.
PAGE_FLAGS = ["--runner.postScriptGC", "false", "--server.fileWatcherType", "none"]


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_cpu(seconds: float) -> None:
    """The Streamlit server's CPU with one page open on the Live tab, less its idle CPU."""
    import socket
    import subprocess
    import tempfile
    import urllib.request

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench_live_cpu_") as tmp:
        db = Path(tmp) / "ticks.db"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        daemon_cmd = [sys.executable, str(ROOT / "ingest.py"), "--source", "sim"]
        daemon_cmd += ["--symbols", "btcusdt", "ethusdt", "--db", str(db)]
        page_cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
        page_cmd += ["--server.port", str(port), "--server.address", "127.0.0.1"]
        page_cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
        page_cmd += PAGE_FLAGS
        page_cmd += ["--", "--db", str(db)]
        env = {**os.environ, TABS_ENV: "open"}
        logs = [open(Path(tmp) / name, "wb") for name in ("ingest.log", "page.log")]  # noqa: SIM115
        daemon = subprocess.Popen(daemon_cmd, cwd=ROOT, stdout=logs[0], stderr=subprocess.STDOUT)
        server = subprocess.Popen(
            page_cmd, cwd=ROOT, env=env, stdout=logs[1], stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            time.sleep(5)  # the daemon's first bars
            idle_start = _cpu_s(server.pid)
            time.sleep(seconds)
            idle = (_cpu_s(server.pid) - idle_start) / seconds
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/")
                chart = page.locator(".st-key-live_chart [data-testid='stPlotlyChart']").first
                chart.wait_for(timeout=120_000)  # a window of 60 bars, then a z-score
                time.sleep(3)  # the first full run and imports are not the steady state
                open_start = _cpu_s(server.pid)
                time.sleep(seconds)
                busy = (_cpu_s(server.pid) - open_start) / seconds
                refreshed = page.get_by_text("Refreshed in").first.inner_text()
                browser.close()
        finally:
            for proc in (server, daemon):
                proc.terminate()
                proc.wait(timeout=20)
            for log in logs:
                log.close()
    per_page = 100 * (busy - idle)
    print(
        f"live refresh CPU, one page on Live over {seconds:.0f} s: server {100 * busy:.1f} % "
        f"of a core, {100 * idle:.1f} % before the page opened: {per_page:.1f} % per page "
        f"(target < 5 %: {'yes' if per_page < 5 else 'NO'}); the panel's last: {refreshed}"
    )


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
