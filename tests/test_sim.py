"""The simulated feed: what it stores (through the real daemon) and that its true
parameters are what the page's analytics recover."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import analytics
from pairs_monitor.ingest import sim
from pairs_monitor.store.writer import TradeWriter

ROOT = Path(__file__).resolve().parent.parent
PAIR = ("BTCUSDT", "ETHUSDT")
TRUE_BETA = 0.8
TRUE_HALF_LIFE_S = 60.0


def make_params(seed: int = 1, **overrides: Any) -> sim.SimParams:
    values: dict[str, Any] = {
        "symbols": PAIR,
        "hedge_leg": "ETHUSDT",
        "hedge_ratios": {"BTCUSDT": TRUE_BETA},
        "start_prices": {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0},
        "half_life_s": TRUE_HALF_LIFE_S,
        "seed": seed,
    }
    values.update(overrides)
    return sim.SimParams(**values)


def run_daemon(db: Path, seconds: float, *extra: str) -> subprocess.CompletedProcess:
    """Run ``ingest.py --source sim`` for about ``seconds``, then stop it with SIGINT."""
    cmd = [sys.executable, "ingest.py", "--source", "sim", "--symbols", "btcusdt", "ethusdt"]
    cmd += ["--db", str(db), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    # Wait for the banner, so the seconds count from the first emitted trades.
    lines = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.append(raw.decode())
        if "first ids" in lines[-1] or time.monotonic() > deadline:
            break
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines) + rest.decode())


def stored(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query("SELECT * FROM trades ORDER BY venue, symbol, trade_id", conn)


# ---------------------------------------------------------------- the daemon


@pytest.mark.daemon
def test_daemon_stores_sim_trades_and_resumes_ids(tmp_path):
    db = tmp_path / "sim.db"
    # A faster market than the default, so two seconds hold bursts and shared milliseconds.
    first = run_daemon(db, 2.0, "--sim-rate", "60", "--sim-seed", "5")
    assert first.returncode == 0, first.stdout
    assert "SIMULATED DATA" in first.stdout
    assert "log BTCUSDT = +4.597006 + 0.8 * log ETHUSDT" in first.stdout
    tape1 = stored(db)
    assert set(tape1.venue) == {"sim"}
    counts1 = tape1.groupby("symbol").trade_id.agg(["min", "max", "count"])
    assert set(counts1.index) == set(PAIR)
    assert (counts1["min"] == 1).all() and (counts1["max"] == counts1["count"]).all()
    first_counts = {str(s): int(n) for s, n in counts1["count"].items()}
    last_ids = {str(s): int(last) for s, last in counts1["max"].items()}
    assert (counts1["count"] > 100).all()

    second = run_daemon(db, 1.0, "--sim-rate", "60")
    assert second.returncode == 0, second.stdout
    tape = stored(db)
    assert set(tape.venue) == {"sim"}
    for symbol, trades in tape.groupby("symbol"):
        ids = trades.trade_id.to_numpy()
        # Consecutive from 1 across both runs: the restart resumed after the stored max.
        assert np.array_equal(ids, np.arange(1, len(ids) + 1)), symbol
        assert len(ids) > first_counts[str(symbol)]
        assert trades.trade_time_us.is_monotonic_increasing
        assert trades.trade_time_us.duplicated().any(), "no two trades share a millisecond"
        assert (trades.trade_time_us % 1000 == 0).all()  # millisecond times, like Binance
        assert set(trades.buyer_is_maker) == {0, 1}
        assert (trades.price > 0).all() and (trades.qty > 0).all()
    # The restart continued the stored price path instead of jumping back to the start.
    assert "restarts on the cointegration line" not in second.stdout

    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT venue, source, params_json FROM ingest_runs").fetchall()
        status = conn.execute("SELECT DISTINCT venue, source FROM feed_status").fetchall()
    assert [(v, s) for v, s, _ in runs] == [("sim", "sim"), ("sim", "sim")]
    params = json.loads(runs[0][2])
    assert params["simulated"] is True
    assert params["legs"]["BTCUSDT"]["hedge_ratio"] == TRUE_BETA
    assert params["half_life_s"] == TRUE_HALF_LIFE_S
    assert params["seed"] == 5
    assert json.loads(runs[1][2])["first_trade_ids"] == {s: last_ids[s] + 1 for s in PAIR}
    assert status == [("sim", "sim")]


def test_from_args_with_only_symbols():
    """The auto source's fallback builds the sim from a bare namespace."""
    import argparse

    unstarted = TradeWriter(":memory:")
    feed = sim.from_args(argparse.Namespace(symbols=["btcusdt", "ethusdt"]), writer=unstarted)
    assert feed.venue == "sim" and feed.symbols == list(PAIR)
    assert feed.model.hedge_leg == "ETHUSDT"
    assert feed.params["legs"]["BTCUSDT"]["hedge_ratio"] == 0.8
    assert feed.params["half_life_s"] == 60.0
    assert [st.venue for st in feed.stats] == ["sim", "sim"]


# ---------------------------------------------------------------- the engine


def run_engine(params: sim.SimParams, seconds: int, start_ms: int = 1_700_000_000_000):
    """The engine driven by a fake clock in one-second steps; columns per symbol."""
    engine = sim.SimEngine(params, start_ms)
    parts: dict[str, list[sim.Tape]] = {s: [] for s in params.symbols}
    for k in range(1, seconds + 1):
        for symbol, tape in engine.advance(start_ms + 1000 * k).items():
            parts[symbol].append(tape)
    return {
        s: sim.Tape(*(np.concatenate(cols) for cols in zip(*tapes, strict=True)))
        for s, tapes in parts.items()
    }


def test_engine_tape_shape():
    params = make_params(seed=3)
    tapes = run_engine(params, 120)
    for symbol, tape in tapes.items():
        n = len(tape.trade_id)
        rate = n / 120
        # 10 orders/s x 1.5 fills, x8 about 6% of the time: ~21.6 trades/s on average.
        assert 12 < rate < 35, (symbol, rate)
        assert np.array_equal(tape.trade_id, np.arange(1, n + 1))
        assert np.all(np.diff(tape.time_us) >= 0)
        shared = np.mean(np.diff(tape.time_us) == 0)
        assert 0.1 < shared < 0.6  # the real BTCUSDT sample has 31%
        tick = sim.tick_size(params.start_prices[symbol])
        assert np.allclose(tape.price / tick, np.round(tape.price / tick))
        step = sim.qty_step(params.start_prices[symbol])
        assert (tape.qty >= step - 1e-12).all()


def test_taker_side_sets_the_price():
    """With the prices frozen, a taker buy pays the ask or above (a sweep walks up a tick
    per fill), a taker sell gets the bid or below."""
    params = make_params(
        vol_annual=0.0, spread_sd=0.0, start_prices={"BTCUSDT": 60_000.005, "ETHUSDT": 3_000.0}
    )
    tape = run_engine(params, 30)["BTCUSDT"]
    buys = tape.buyer_is_maker == 0
    assert buys.any() and (~buys).any()
    assert (tape.price[buys] >= 60_000.01 - 1e-9).all()
    assert (tape.price[~buys] <= 60_000.00 + 1e-9).all()
    assert (tape.price[buys] > 60_000.01 + 1e-9).any()  # some orders swept two levels


def test_bursts_cluster_arrivals():
    params = make_params(seed=4, burst_factor=20.0, burst_every_s=10.0, burst_seconds=2.0)
    tape = run_engine(params, 300)["ETHUSDT"]
    per_second = np.bincount((tape.time_us - tape.time_us[0]) // 1_000_000)
    # A Poisson count of mean ~22 has variance ~22 (x fills); bursts make it far larger.
    assert per_second.var() > 5 * per_second.mean()


def test_resumed_engine_continues_ids_and_prices():
    params = make_params(seed=6)
    engine = sim.SimEngine(
        params,
        0,
        next_ids={"BTCUSDT": 1001, "ETHUSDT": 7},
        last_prices={"BTCUSDT": 61_000.0, "ETHUSDT": 3_060.0},
    )
    tapes = engine.advance(5_000)
    assert tapes["BTCUSDT"].trade_id[0] == 1001 and tapes["ETHUSDT"].trade_id[0] == 7
    assert abs(tapes["ETHUSDT"].price[0] / 3_060.0 - 1) < 0.001


def test_a_restart_with_a_fixed_seed_draws_fresh_shocks_reproducibly():
    """--sim-seed N and a daemon restart: the new process (stream 1 again) continues the
    stored ids, and its random stream depends on them, so it does not replay the first
    run's shocks; the same seed and stored state still give the same trades."""
    params = make_params(seed=7)
    first = sim.SimEngine(params, 0, stream=1)
    tapes = first.advance(5_000)
    resumed = {s: float(t.price[-1]) for s, t in tapes.items()}

    def restart():
        return sim.SimEngine(params, 0, dict(first.next_ids), resumed, stream=1).advance(5_000)

    again, twin = restart(), restart()
    for symbol in PAIR:
        assert again[symbol].trade_id[0] == tapes[symbol].trade_id[-1] + 1
        for field in sim.Tape._fields:
            assert np.array_equal(getattr(again[symbol], field), getattr(twin[symbol], field))
    # The same shocks would give the same order arrivals and the same relative moves.
    n = min(len(again["ETHUSDT"].time_us), len(tapes["ETHUSDT"].time_us))
    assert not np.array_equal(again["ETHUSDT"].time_us[:n], tapes["ETHUSDT"].time_us[:n])
    moves = [np.diff(np.log(t["ETHUSDT"].price[:n])) for t in (tapes, again)]
    assert not np.allclose(*moves)


# ---------------------------------------------------------------- recovering the truth


def ar1_phi(half_life_s: float, bar_s: float = 1.0) -> float:
    return 0.5 ** (bar_s / half_life_s)


def tolerances(n: int, phi: float, fit: analytics.HedgeFit) -> tuple[float, float, float]:
    """(slope tolerance, expected half-life bias, half-life tolerance), in 4 sigma.

    * Slope: OLS's own standard error assumes independent residuals. Here the residual is
      AR(1) with coefficient phi and the regressor a random walk (its autocorrelation ~1),
      so the variance of the slope is inflated by (1 + phi) / (1 - phi) (the long-run
      variance factor of the product x_t s_t; Hamilton, Time Series Analysis, 10.2).
    * Half-life: the AR(1) estimate has sd(phi) = sqrt((1 - phi^2) / n) and a downward
      bias of about (1 + 3 phi) / n (Kendall 1954); the delta method through
      HL = ln 0.5 / ln phi turns both into bars: dHL = HL dphi / (phi |ln phi|).

    Four standard deviations leave a chance of ~6e-5 that a correct simulator fails a
    given draw. Checked by Monte Carlo: over 100 three-day and 300 two-hour paths the
    standardised slope errors had sd 1.03 and the half-life sd was within 10% of the
    formula.
    """
    slope_tol = 4 * fit.slope_stderr * math.sqrt((1 + phi) / (1 - phi))
    hl = math.log(0.5) / math.log(phi)
    scale = hl / (phi * abs(math.log(phi)))
    hl_bias = -scale * (1 + 3 * phi) / n
    hl_tol = 4 * scale * math.sqrt((1 - phi**2) / n)
    return slope_tol, hl_bias, hl_tol


def check_recovery(log_y: pd.Series, log_x: pd.Series, bar_s: float = 1.0) -> dict:
    fit = analytics.hedge_ratio(log_y, log_x, method="ols")
    hl_bars = analytics.half_life(log_y - fit.slope * log_x - fit.intercept)
    phi = ar1_phi(TRUE_HALF_LIFE_S, bar_s)
    slope_tol, hl_bias, hl_tol = tolerances(fit.nobs, phi, fit)
    true_hl_bars = TRUE_HALF_LIFE_S / bar_s
    assert abs(fit.slope - TRUE_BETA) <= slope_tol, (fit.slope, slope_tol)
    assert abs(hl_bars - (true_hl_bars + hl_bias)) <= hl_tol, (hl_bars, hl_bias, hl_tol)
    return {"slope": fit.slope, "slope_tol": slope_tol, "hl": hl_bars, "hl_tol": hl_tol}


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_analytics_recover_true_parameters_from_the_model():
    """Three days of the model sampled each second (exact transitions, no real-time wait):
    the tolerance is tight, about 0.003 on the slope and 6 s on the half-life."""
    params = make_params(seed=11)
    path = sim.LatentState(params, np.random.default_rng(11)).step(3 * 86_400, 1.0)
    got = check_recovery(pd.Series(path["BTCUSDT"]), pd.Series(path["ETHUSDT"]))
    assert got["slope_tol"] < 0.01 and got["hl_tol"] < 8


@pytest.mark.soak
def test_analytics_recover_true_parameters_from_trades():
    """Six hours of simulated trades -> 1 s bars (analytics.resample_trades) -> log closes:
    what the page does. Tick rounding, bid/ask and trade timing add little noise."""
    params = make_params(seed=12)
    tapes = run_engine(params, 6 * 3600)
    closes = {}
    for symbol, tape in tapes.items():
        trades = pd.DataFrame(
            {"price": tape.price, "qty": tape.qty, "buyer_is_maker": tape.buyer_is_maker},
            index=pd.to_datetime(tape.time_us, unit="us", utc=True),
        )
        closes[symbol] = analytics.resample_trades(trades, "1s")["close"]
    frame = analytics.align_closes(closes, log=True)
    got = check_recovery(frame["BTCUSDT"], frame["ETHUSDT"])
    assert got["hl_tol"] < 25


@pytest.mark.parametrize("bad", [{"half_life_s": 0}, {"fills_mean": 0.5}, {"rate": -1}])
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(ValueError, match="invalid simulation parameter"):
        make_params(**bad)


@pytest.mark.parametrize(("a", "n"), [(math.exp(-math.log(2) / 60), 20_000), (0.5, 300), (0.0, 5)])
def test_ar1_path_matches_the_recursion(a, n):
    shocks = np.random.default_rng(0).standard_normal(n)
    expected, s = np.empty(n), 0.3
    for k in range(n):
        s = a * s + shocks[k]
        expected[k] = s
    assert np.allclose(sim.ar1_path(0.3, a, shocks), expected, rtol=0, atol=1e-12)


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_feed_runs_again_where_it_stopped(tmp_path):
    """auto's fallback may run the same feed object again after live was back a while:
    ids and prices continue (venue sim, real writer, in this process)."""
    import threading

    db = tmp_path / "sim.db"
    writer = TradeWriter(db)
    writer.start()
    try:
        import argparse

        args = argparse.Namespace(symbols=["BTCUSDT", "ETHUSDT"], sim_rate=100.0, db=db)
        feed = sim.from_args(args, writer)
        ends = []
        for _ in range(2):
            stop = threading.Event()
            thread = threading.Thread(target=feed.run, args=(stop,))
            thread.start()
            time.sleep(0.5)
            stop.set()
            thread.join(5)
            writer.flush()
            ends.append(dict(feed.last_prices))
    finally:
        writer.close()
    tape = stored(db)
    for symbol, trades in tape.groupby("symbol"):
        assert np.array_equal(trades.trade_id, np.arange(1, len(trades) + 1))
        # The price 0.5 s later is within a few sd of a half-second move, not a reset.
        assert abs(ends[1][str(symbol)] / ends[0][str(symbol)] - 1) < 0.005


def test_saw_trades_counts_a_batch_as_saw_trade_counts_each():
    """Feeds that emit blocks (sim, replay) count them with one call, to the same effect."""
    from pairs_monitor.ingest.status import FeedStats

    one, batch = FeedStats("sim", "BTCUSDT", "sim"), FeedStats("sim", "BTCUSDT", "sim")
    for trade_id, time_us in ((5, 50), (9, 90), (7, 70)):
        one.saw_trade(trade_id, time_us)
    batch.saw_trades(2, 9, 90)
    batch.saw_trades(1, 7, 70)  # an older id does not move the last trade back
    batch.saw_trades(0, 99, 990)  # nothing seen: nothing changes
    assert (batch.trades_total, batch.last_trade_id, batch.last_trade_time_us) == (3, 9, 90)
    assert (one.trades_total, one.last_trade_id, one.last_trade_time_us) == (3, 9, 90)
    assert batch.last_message_ms is not None
