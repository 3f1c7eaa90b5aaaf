"""Stationarity tests, half-life, Hurst, the pair scanner, stats_table and the backtest.

Expected values come from statsmodels called directly, hand-worked cases, or simulated
data whose parameters are known.
"""

from __future__ import annotations

import inspect
import math
import statistics

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import adfuller, coint
from statsmodels.tsa.vector_ar.vecm import coint_johansen

import analytics as A
from pairs_monitor.quant.backtest import fill_fee, leg_quantities, next_position, summary

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    eps = rng.normal(0, sigma, n)
    out = np.empty(n)
    out[0] = eps[0]
    for t in range(1, n):
        out[t] = phi * out[t - 1] + eps[t]
    return out


def adfuller_direct(
    values: np.ndarray, maxlag: int, autolag: str | None, regression: str = "c"
) -> dict:
    """statsmodels' adfuller called directly, on 0.14 (a tuple) and 0.15+ (a result object)."""
    kw = {"maxlag": maxlag, "autolag": autolag, "regression": regression}
    if "result_object" in inspect.signature(adfuller).parameters:
        res = adfuller(values, **kw, result_object=True)
        stat, p, used, nobs, crit = (
            res.statistic,
            res.pvalue,
            res.lags,
            res.nobs,
            res.critical_values,
        )
    else:
        stat, p, used, nobs, crit = adfuller(values, **kw)[:5]
    return {"statistic": stat, "pvalue": p, "lags": used, "nobs": nobs, "critical_values": crit}


def random_walk(n: int, seed: int, start: float = 100.0) -> np.ndarray:
    return start + np.cumsum(np.random.default_rng(seed).normal(0, 0.5, n))


def series(values, freq: str = "1min") -> pd.Series:
    return pd.Series(values, index=pd.date_range(T0, periods=len(values), freq=freq))


# ------------------------------------------------------------------ stationarity


def test_schwert_lag_by_hand():
    assert A.schwert_lag(86_400) == 21  # 4 * 864 ** 0.25 = 21.56
    assert A.schwert_lag(1_440) == 7  # 4 * 14.4 ** 0.25 = 7.79
    assert A.schwert_lag(100, k=12) == 12


def test_adf_matches_adfuller_called_directly():
    s = series(ar1(1000, 0.9, seed=1))
    got = A.adf_test(s)
    lag = int(4 * (1000 / 100) ** 0.25)
    ref = adfuller_direct(s.to_numpy(), maxlag=lag, autolag=None)
    assert (got.statistic, got.pvalue, got.lags, got.nobs) == (
        ref["statistic"],
        ref["pvalue"],
        ref["lags"],
        ref["nobs"],
    )
    assert got.critical_values == {k: float(v) for k, v in ref["critical_values"].items()}
    assert got.verdict.startswith("stationary")
    searched = A.adf_test(s, lags=10, autolag="AIC")
    direct = adfuller_direct(s.to_numpy(), maxlag=10, autolag="AIC")
    assert searched.statistic == direct["statistic"] and searched.lags == direct["lags"]


def test_adf_random_walk_not_stationary():
    got = A.adf_test(series(random_walk(2000, seed=2)))
    assert got.pvalue > 0.05 and got.verdict.startswith("not shown stationary")
    with pytest.raises(ValueError, match="at least 20"):
        A.adf_test(series([1.0, 2.0, 3.0]))


def test_engle_granger_matches_coint_and_uses_its_critical_values():
    x = random_walk(1500, seed=3)
    y = 1.5 * x + 2 + ar1(1500, 0.9, seed=4)
    got = A.engle_granger(series(y), series(x))
    lag = A.schwert_lag(1500)
    stat, p, crit = coint(y, x, trend="c", maxlag=lag, autolag=None)
    assert (got.statistic, got.pvalue) == (stat, p)
    assert list(got.critical_values.values()) == list(crit)
    (b0, b1), *_ = np.linalg.lstsq(np.column_stack([np.ones(1500), x]), y, rcond=None)
    assert math.isclose(got.hedge_ratio, b1, rel_tol=1e-9)
    assert math.isclose(got.intercept, b0, rel_tol=1e-9)
    assert got.pvalue < 0.01 and got.verdict.startswith("cointegrated")
    # Plain ADF values on the fitted residual would be too lenient: EG's are stricter.
    plain = adfuller_direct(y - b1 * x - b0, maxlag=lag, autolag=None)
    assert got.critical_values["5%"] < plain["critical_values"]["5%"]
    assert got.lags == lag and got.nobs == 1500 - lag - 1


def test_engle_granger_autolag_reports_the_lag_the_search_chose():
    x = random_walk(1500, seed=3)
    y = 1.5 * x + 2 + ar1(1500, 0.9, seed=4)
    got = A.engle_granger(series(y), series(x), lags=12, autolag="AIC")
    stat, p, _ = coint(y, x, trend="c", maxlag=12, autolag="AIC")
    assert (got.statistic, got.pvalue) == (stat, p)
    # coint does not say which lag it chose: the same AIC search on the OLS residual does.
    (b0, b1), *_ = np.linalg.lstsq(np.column_stack([np.ones(1500), x]), y, rcond=None)
    chosen = adfuller_direct(y - b1 * x - b0, maxlag=12, autolag="AIC", regression="n")["lags"]
    assert got.lags == chosen and got.nobs == 1500 - chosen - 1


def test_engle_granger_independent_walks_not_cointegrated():
    got = A.engle_granger(series(random_walk(1500, 5)), series(random_walk(1500, 6)))
    assert got.pvalue > 0.05 and got.verdict.startswith("not shown cointegrated")


def test_johansen_matches_coint_johansen():
    # The trace test of r <= 1 falsely rejects 5% of the time (x's seed 7 is such a
    # draw: its ADF p-value is 0.14); seed 17 is an ordinary walk.
    x = random_walk(1000, seed=17)
    frame = pd.DataFrame({"y": 0.8 * x + ar1(1000, 0.8, seed=8), "x": x})
    got = A.johansen(frame, det_order=0)  # statsmodels' case; the default is 'ci'
    ref = coint_johansen(frame.to_numpy(), 0, 1)
    assert np.allclose(got.trace_stats, ref.lr1, rtol=1e-12, atol=0)
    assert np.allclose(got.max_eig_stats, ref.lr2, rtol=1e-12, atol=0)
    assert got.critical_values == {
        "10%": ref.cvt[0, 0],
        "5%": ref.cvt[0, 1],
        "1%": ref.cvt[0, 2],
    }
    assert got.rank == 1 and got.pvalue is None
    # The cointegrating vector, normalised on y, is (1, -0.8) up to an O(1/n) error scaled
    # by long-run noise / step size (1 / (1 - 0.8) / 0.5 = 10): a few hundredths at n=1000.
    assert got.eigenvector[0] == 1.0 and abs(got.eigenvector[1] + 0.8) < 0.05
    # Independent walks, in the default case (the constant restricted to the relation,
    # whose size holds on driftless prices; with det_order=0 statsmodels rejects r = 0 for
    # ~10% of such pairs at a nominal 5%: docs/analytics.md, Methodology).
    apart = pd.DataFrame({"a": random_walk(1000, 0), "b": random_walk(1000, 500)})
    assert A.johansen(apart).rank == 0
    assert "rank 0" in A.johansen(apart).verdict


def test_half_life_hand_worked_and_edge_cases():
    assert math.isclose(A.half_life(series(0.5 ** np.arange(30.0))), 1.0)
    assert math.isclose(
        A.half_life(series(2 + 0.8 ** np.arange(40.0))), math.log(0.5) / math.log(0.8)
    )
    assert A.half_life(series(1.01 ** np.arange(50.0))) == math.inf
    assert A.half_life(series([1.0, -1.0] * 20)) == math.inf  # phi = -1
    assert math.isnan(A.half_life(series([3.0] * 10)))
    assert math.isnan(A.half_life(series([1.0, 2.0])))


def test_half_life_recovers_simulated_value_and_matches_ols():
    true_hl = 20.0
    s = series(ar1(20_000, 0.5 ** (1 / true_hl), seed=11))
    got = A.half_life(s)
    # sd(phi_hat) ~ sqrt((1 - phi^2) / n) = 0.0018, i.e. ~1.1 bars of half-life here.
    assert abs(got - true_hl) < 4.0
    lagged = s.shift(1).iloc[1:]
    fit = sm.OLS(s.diff().iloc[1:].to_numpy(), sm.add_constant(lagged.to_numpy())).fit()
    assert math.isclose(got, -math.log(2) / math.log(1 + fit.params[1]), rel_tol=1e-9)


def test_hurst_known_cases():
    assert math.isclose(A.hurst(series(np.arange(500.0))), 1.0, rel_tol=1e-9)
    walk = A.hurst(series(np.cumsum(np.random.default_rng(12).normal(size=20_000))))
    assert abs(walk - 0.5) < 0.05
    assert A.hurst(series(ar1(20_000, 0.5, seed=13))) < 0.2
    assert math.isnan(A.hurst(series([1.0] * 30)))


# ------------------------------------------------------------ scanner, tables


def test_correlation_matrix_of_log_returns():
    rng = np.random.default_rng(14)
    closes = pd.DataFrame(
        np.exp(np.cumsum(rng.normal(0, 0.01, (500, 3)), axis=0)), columns=["A", "B", "C"]
    )
    got = A.correlation_matrix(closes)
    expected = np.corrcoef(np.diff(np.log(closes.to_numpy()), axis=0).T)
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12)


def test_scan_pairs_finds_the_planted_pair():
    n, hl = 1440, 15.0
    b = random_walk(n, 20, start=200)
    closes = pd.DataFrame(
        {
            "A": 0.5 * b + 10 + ar1(n, 0.5 ** (1 / hl), seed=21, sigma=0.3),
            "B": b,
            "C": random_walk(n, 22),
            "D": random_walk(n, 23),
            "E": random_walk(n, 24),
        },
        index=pd.date_range(T0, periods=n, freq="1min"),
    )
    table = A.scan_pairs(closes)
    assert len(table) == 10
    assert {"y", "x", "hedge_ratio", "eg_pvalue", "half_life", "corr"} <= set(table.columns)
    assert table["eg_pvalue"].is_monotonic_increasing
    top = table.iloc[0]
    assert (top["y"], top["x"]) == ("A", "B")
    assert abs(top["hedge_ratio"] - 0.5) < 0.02
    lag = A.schwert_lag(n)
    # The array scanner sums in another order than coint: equal to rounding, not bit for bit.
    assert top["eg_pvalue"] == pytest.approx(
        coint(closes["A"], closes["B"], maxlag=lag, autolag=None)[1], rel=1e-9
    )
    assert abs(top["half_life"] - hl) < 6  # 1,440 bars: sd of the estimate ~2.5 bars
    assert table.iloc[1]["eg_pvalue"] > 0.01
    both = A.scan_pairs(closes, both_directions=True)
    assert len(both) == 20 and {"B", "A"} <= set(both.iloc[:2][["y", "x"]].to_numpy().ravel())


def test_stats_table_columns_and_values():
    rng = np.random.default_rng(25)
    n = 600  # ten minutes of 1-second bars
    index = pd.date_range(T0, periods=n, freq="1s")

    def bars(prices):
        trades = pd.DataFrame(
            {"price": prices, "qty": rng.uniform(0.1, 1, n), "buyer_is_maker": rng.random(n) < 0.5},
            index=index,
        )
        return A.resample_trades(trades, "1s")

    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    y = 2 * x + rng.normal(0, 0.01, n)
    one_second = {"Y": bars(y), "X": bars(x)}
    table = A.stats_table(one_second, window=30, pair=("Y", "X"))
    assert table.index.name == "time" and len(table) == n
    assert {"Y_close", "X_vol", "zscore", "hedge_ratio", "corr"} <= set(table.columns)
    r = np.diff(np.log(y))
    per_year = 365 * 86_400
    expected_vol = math.sqrt(per_year * np.mean(r[-30:] ** 2))
    assert math.isclose(table["Y_vol"].iloc[-1], expected_vol, rel_tol=1e-9)
    pf = A.pair_frame(one_second["Y"]["close"], one_second["X"]["close"], 30, "rolling")
    pd.testing.assert_series_equal(table["zscore"], pf["zscore"], check_names=False)
    minutes = A.stats_table(one_second, freq="1min", window=3)
    assert len(minutes) == 10 and minutes["Y_volume"].sum() == pytest.approx(
        one_second["Y"]["volume"].sum()
    )
    with pytest.raises(ValueError, match="names a symbol"):
        A.stats_table(one_second, pair=("Y", "Z"))


# ------------------------------------------------------------------- backtest


@pytest.mark.parametrize(
    ("want", "z", "hedge_known", "expected"),
    [
        (0, 2.5, True, -1),  # flat, above entry: short the spread
        (0, -2.5, True, 1),  # below -entry: long
        (0, 2.5, False, 0),  # no hedge ratio at this bar: no entry
        (0, 1.9, True, 0),
        (1, -0.6, True, 1),  # long, not yet back within 0.5 of the mean
        (1, -0.5, True, 0),  # back within 0.5: exit
        (1, 2.5, True, -1),  # exit and the short entry on the same bar
        (1, 2.5, False, 0),  # exit, but no entry without a hedge ratio
        (-1, 0.6, True, -1),
        (-1, 0.5, True, 0),
        (-1, -3.0, True, 1),
        (1, math.nan, True, 1),  # no signal: nothing changes
        (0, math.nan, True, 0),
    ],
)
def test_backtest_signal_step_by_hand(want, z, hedge_known, expected):
    assert next_position(want, z, hedge_known, entry=2.0, exit=0.5) == expected


def test_backtest_sizing_and_fee_steps_by_hand():
    # Price hedge 2 at y = 10, x = 4: one unit of y costs 10 + 2 * 4 = 18 gross.
    assert leg_quantities(1, 2.0, 10.0, 4.0, 1.0, False) == pytest.approx((1 / 18, -2 / 18))
    assert leg_quantities(-1, 2.0, 10.0, 4.0, 1.0, False) == pytest.approx((-1 / 18, 2 / 18))
    # A negative hedge is long both legs; the gross is still the capital: 10/12 + 2/12.
    assert leg_quantities(1, -0.5, 10.0, 4.0, 1.0, False) == pytest.approx((1 / 12, 0.5 / 12))
    # Log hedge 0.5, capital 3: $2 of y against $1 of x, short the spread.
    assert leg_quantities(-1, 0.5, 20.0, 5.0, 3.0, True) == pytest.approx((-0.1, 0.2))
    # 10 bps of 1/16 unit at 10 and 1/16 at 6: 0.001 * 16 / 16.
    assert fill_fee(0.001, 1 / 16, -1 / 16, 10.0, 6.0) == pytest.approx(0.001)


def test_backtest_summary_step_by_hand():
    index = pd.date_range(T0, periods=4, freq="1min")
    equity = pd.Series([1.0, 1.1, 0.99, 1.0], index)
    trades = pd.DataFrame({"closed": [True, True, False], "net_pnl": [0.1, -0.05, 0.2]})
    got = summary(equity, trades, capital=1.0, periods_per_year=525_600)
    returns = [0.1, 0.99 / 1.1 - 1, 1.0 / 0.99 - 1]
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(525_600)
    assert got["n_trades"] == 2 and got["hit_rate"] == 0.5  # the open trade is not counted
    assert got["total_return"] == pytest.approx(0.0, abs=1e-15)
    assert got["max_drawdown"] == pytest.approx(0.99 / 1.1 - 1)
    assert got["sharpe"] == pytest.approx(sharpe, rel=1e-12)


def test_backtest_hand_worked_short_trade():
    index = pd.date_range(T0, periods=6, freq="1min")
    y = pd.Series([10, 10, 11, 10.5, 10, 10], index, dtype=float)
    x = pd.Series([5, 5, 5, 5.5, 6, 6], index, dtype=float)
    z = pd.Series([0, 2.5, 1.0, -0.5, 0.3, 0], index)
    res = A.backtest(y, x, z, hedge=1.0, entry=2.0, exit=0.0, fee_bps=10)
    # Signal on bar 1 (z > 2: short the spread), filled at bar 2: 1/16 unit each leg
    # (gross notional 11 + 5 = 16 per unit = capital 1). Fee 0.1% of 1 on entry.
    # Bar 3: P&L -1/16 * (10.5 - 11) + 1/16 * (5.5 - 5) = 1/16; z <= 0: exit signal.
    # Bar 4: P&L 1/16 again, exit filled at (10, 6): fee 0.001 * (10 + 6) / 16 = 0.001.
    expected = [1.0, 1.0, 0.999, 0.999 + 0.0625, 0.999 + 0.125 - 0.001, 1.123]
    np.testing.assert_allclose(res.equity.to_numpy(), expected, rtol=1e-12)
    assert res.positions.tolist() == [0, 0, -1, -1, 0, 0]
    assert res.n_trades == 1 and res.hit_rate == 1.0
    assert math.isclose(res.total_return, 0.123, rel_tol=1e-12)
    assert math.isclose(res.max_drawdown, 0.999 - 1.0, rel_tol=1e-9)
    trade = res.trades.iloc[0]
    assert (trade.side, trade.signal_time, trade.entry_time) == (-1, index[1], index[2])
    assert (trade.exit_signal_time, trade.exit_time, trade.bars_held) == (index[3], index[4], 2)
    assert (trade.entry_y, trade.entry_x, trade.exit_y, trade.exit_x) == (11, 5, 10, 6)
    assert math.isclose(trade.pnl, 0.125) and math.isclose(trade.net_pnl, 0.123)
    # Six minutes of bars: no annualised Sharpe (it would read as a number it is not).
    assert res.sharpe is None and "less than 1 d" in res.sharpe_note


def test_backtest_trade_still_open_has_its_entry_times_and_no_exit():
    index = pd.date_range(T0, periods=5, freq="1min", tz="UTC")
    y = pd.Series([10, 10, 11, 10.5, 10], index, dtype=float)
    x = pd.Series([5, 5, 5, 5.5, 6], index, dtype=float)
    z = pd.Series([0, 0, 2.5, 1.0, 1.0], index)  # short signalled on bar 2, never exited
    res = A.backtest(y, x, z, hedge=1.0, entry=2.0, exit=0.0, fee_bps=0)
    (trade,) = res.trades.itertuples()
    assert (trade.signal_time, trade.entry_time, trade.closed) == (index[2], index[3], False)
    assert res.trades[["exit_signal_time", "exit_time"]].isna().all(axis=None)
    assert res.trades["entry_time"].dtype == index.dtype
    assert res.trades["exit_time"].dtype == index.dtype
    assert res.n_trades == 0  # an open trade is marked, not counted


def test_backtest_long_then_flip_and_hedge_known_at_signal():
    index = pd.date_range(T0, periods=6, freq="1min")
    y = pd.Series([10.0] * 6, index)
    x = pd.Series([4.0] * 6, index)
    z = pd.Series([-2.5, -1.0, 2.5, 1.0, 1.0, 1.0], index)
    hedge = pd.Series([2.0, 9.0, 3.0, 9.0, 9.0, 9.0], index)
    res = A.backtest(y, x, z, hedge, fee_bps=0)
    assert res.positions.tolist() == [0, 1, 1, -1, -1, -1]
    first, second = res.trades.iloc[0], res.trades.iloc[1]
    # Sized with the hedge at the signal bar (2.0, then 3.0), not at the fill bar (9.0).
    assert (first.side, first.hedge, first.exit_time) == (1, 2.0, index[3])
    assert math.isclose(first.qty_y, 1 / 18) and math.isclose(first.qty_x, -2 / 18)
    assert (second.side, second.hedge, second.entry_time) == (-1, 3.0, index[3])
    assert bool(first.closed) and not bool(second.closed)
    assert res.n_trades == 1  # the open trade is marked, not counted
    assert (res.equity == 1.0).all()  # flat prices, no fees


@pytest.mark.parametrize(
    ("exit_level", "expected"),
    [
        # Long entered at z = -2.5 (bar 1, filled bar 2). Exit at 0.5 means "back within
        # 0.5 of the mean": z >= -0.5 first at bar 3 (-0.4), filled at bar 4.
        (0.5, [0, 0, 1, 1, 0, 0, 0, 0]),
        # Exit 0: the mean itself, first reached at bar 5 (0.3), filled at bar 6.
        (0.0, [0, 0, 1, 1, 1, 1, 0, 0]),
        # Exit -0.5: hold past the mean until z >= +0.5 (bar 6), filled at bar 7.
        (-0.5, [0, 0, 1, 1, 1, 1, 1, 0]),
    ],
)
def test_backtest_exit_level_is_symmetric_about_the_mean(exit_level, expected):
    index = pd.date_range(T0, periods=8, freq="1min")
    y, x = pd.Series(100.0, index), pd.Series(50.0, index)
    z = pd.Series([0, -2.5, -1, -0.4, -0.1, 0.3, 0.6, 0.0], index)
    long = A.backtest(y, x, z, 1.0, entry=2.0, exit=exit_level, fee_bps=0)
    assert long.positions.tolist() == expected
    # Mirror image: the mirrored z path gives the mirrored positions, bar for bar.
    short = A.backtest(y, x, -z, 1.0, entry=2.0, exit=exit_level, fee_bps=0)
    assert short.positions.tolist() == [-p for p in expected]


def test_backtest_log_hedge_sizes_legs_in_notional():
    index = pd.date_range(T0, periods=4, freq="1min")
    y = pd.Series([10.0, 10.0, 20.0, 22.0], index)
    x = pd.Series([4.0, 4.0, 5.0, 5.0], index)
    z = pd.Series([-3.0, -1.0, -1.0, -1.0], index)
    res = A.backtest(y, x, z, 0.5, fee_bps=0, log_prices=True)
    trade = res.trades.iloc[0]
    # Filled at bar 1: gross 1 split 1 / (1 + 0.5) of y and 0.5 / 1.5 of x, in value.
    assert math.isclose(trade.qty_y * 10.0, 2 / 3) and math.isclose(trade.qty_x * 4.0, -1 / 3)
    pnl = (2 / 3) / 10 * (22 - 10) - (1 / 3) / 4 * (5 - 4)
    assert math.isclose(res.equity.iloc[-1], 1.0 + pnl)


def test_backtest_no_signal_and_bad_levels():
    y, x = series(random_walk(100, 30)), series(random_walk(100, 31))
    z = pd.Series(0.5, index=y.index)
    res = A.backtest(y, x, z, 1.0)
    assert res.n_trades == 0 and math.isnan(res.hit_rate) and (res.equity == 1.0).all()
    with pytest.raises(ValueError, match="entry"):
        A.backtest(y, x, z, 1.0, entry=1.0, exit=1.5)


def test_backtest_no_look_ahead():
    n, t = 2000, 1200
    xv = random_walk(n, 40)
    yv = 1.3 * xv + ar1(n, 0.9, seed=41)
    y, x = series(yv), series(xv)
    rng = np.random.default_rng(42)
    y2, x2 = y.copy(), x.copy()
    y2.iloc[t + 1 :] += rng.normal(0, 3, n - t - 1)
    x2.iloc[t + 1 :] += rng.normal(0, 3, n - t - 1)

    def run(yy, xx):
        pf = A.pair_frame(yy, xx, 60, "rolling")
        return A.backtest(yy, xx, pf["zscore"], pf["hedge_ratio"], entry=1.5, fee_bps=5)

    a, b = run(y, x), run(y2, x2)
    assert a.n_trades > 5
    pd.testing.assert_series_equal(a.positions.iloc[: t + 1], b.positions.iloc[: t + 1])
    pd.testing.assert_series_equal(a.equity.iloc[: t + 1], b.equity.iloc[: t + 1])
    cols = ["side", "signal_time", "entry_time", "entry_y", "entry_x", "hedge", "qty_y"]
    early_a = a.trades[a.trades["signal_time"] <= y.index[t]][cols].reset_index(drop=True)
    early_b = b.trades[b.trades["signal_time"] <= y.index[t]][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(early_a, early_b)
    assert not a.equity.equals(b.equity)
