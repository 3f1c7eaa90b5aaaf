"""Live-view analytics: bars, alignment, hedge ratios, spread, z-score, correlation.

Every expected value is computed independently (by hand, numpy least squares, pandas or
statsmodels called directly), never copied from the function under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.regression.rolling import RollingOLS

import analytics as A

FIXTURES = Path(__file__).parent / "fixtures" / "klines"
T0 = pd.Timestamp("2024-03-01", tz="UTC")


def trades_frame(times_ms, prices, qtys, taker_sold) -> pd.DataFrame:
    index = T0 + pd.to_timedelta(np.asarray(times_ms, dtype=np.int64), unit="ms")
    return pd.DataFrame(
        {"price": prices, "qty": qtys, "buyer_is_maker": np.asarray(taker_sold, dtype=bool)},
        index=index,
    )


def random_trades(n: int, seconds: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, seconds * 1000, n))
    prices = 100 + np.cumsum(rng.normal(0, 0.05, n))
    return trades_frame(times, prices, rng.exponential(1.0, n), rng.random(n) < 0.5)


def load_klines(name: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / name, parse_dates=["timestamp"], index_col="timestamp")
    return frame


def bars_from_klines(k: pd.DataFrame) -> pd.DataFrame:
    """Klines lack quote volume and trade counts; fill them so resample_bars accepts them."""
    return k.assign(quote_volume=k["close"] * k["volume"], taker_buy_volume=0.0, trades=1)


# ------------------------------------------------------------------------ bars


def test_resample_trades_hand_worked():
    trades = trades_frame(
        [100, 500, 500, 2300],
        [10.0, 12.0, 11.0, 9.0],
        [1.0, 2.0, 1.0, 3.0],
        [False, True, False, False],
    )
    bars = A.resample_trades(trades, "1s")
    assert list(bars.columns) == list(A.BAR_COLUMNS)
    assert list(bars.index) == [T0, T0 + pd.Timedelta("1s"), T0 + pd.Timedelta("2s")]
    first, gap, last = (bars.iloc[i] for i in range(3))
    # Two trades share 00:00:00.500: input (trade-id) order decides the close.
    assert (first.open, first.high, first.low, first.close) == (10.0, 12.0, 10.0, 11.0)
    assert (first.volume, first.quote_volume, first.taker_buy_volume) == (4.0, 45.0, 2.0)
    assert first.trades == 3 and first.vwap == 45.0 / 4.0 and not first["empty"]
    assert gap["empty"] and gap.trades == 0 and gap.volume == 0.0 and math.isnan(gap.vwap)
    assert (gap.open, gap.high, gap.low, gap.close) == (11.0, 11.0, 11.0, 11.0)
    assert (last.open, last.close, last.volume, last.taker_buy_volume, last.vwap) == (
        9.0,
        9.0,
        3.0,
        3.0,
        9.0,
    )
    assert bars["trades"].dtype == np.int64 and bars["empty"].dtype == bool


def test_resample_trades_sorts_unsorted_input():
    trades = random_trades(500, 60, seed=1)
    shuffled = trades.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        A.resample_trades(shuffled, "5s"), A.resample_trades(trades, "5s"), rtol=1e-12
    )


@pytest.mark.parametrize("freq", ["1s", "7s", "1min", "1h", "1D"])
def test_resample_trades_matches_pandas_resample(freq):
    trades = random_trades(3000, 3 * 86_400, seed=2)
    bars = A.resample_trades(trades, freq)
    # Epoch-aligned bins; for a 1-day bar on UTC that is midnight, pandas' default.
    origin = "start_day" if freq == "1D" else "epoch"
    r = trades.resample(freq, origin=origin, closed="left", label="left")
    px = r["price"]
    expected = pd.DataFrame(
        {
            "open": px.first(),
            "high": px.max(),
            "low": px.min(),
            "close": px.last(),
            "volume": r["qty"].sum(),
            "trades": px.count(),
        }
    )
    traded = expected[expected["trades"] > 0]
    got = bars.loc[traded.index]
    for col in ["open", "high", "low", "close", "volume"]:
        np.testing.assert_allclose(got[col], traded[col], rtol=1e-12)
    np.testing.assert_array_equal(got["trades"], traded["trades"])
    assert bars["trades"].sum() == len(trades)
    # Every empty bar between trades is present and carries the previous close.
    assert len(bars) == len(expected)
    np.testing.assert_allclose(bars["close"], expected["close"].ffill(), rtol=1e-12)


def test_resample_trades_calendar_frequency():
    trades = trades_frame(
        [0, 86_400_000 * 10, 86_400_000 * 40], [1.0, 2.0, 3.0], [1, 1, 1], [0, 0, 0]
    )
    bars = A.resample_trades(trades, "MS")  # T0 is 1 March: bars for March and April
    assert list(bars.index) == [
        pd.Timestamp("2024-03-01", tz="UTC"),
        pd.Timestamp("2024-04-01", tz="UTC"),
    ]
    assert list(bars["trades"]) == [2, 1] and list(bars["close"]) == [2.0, 3.0]


def test_resample_rejects_bad_input():
    trades = random_trades(10, 10, seed=0)
    with pytest.raises(ValueError, match="tz_localize"):
        A.resample_trades(trades.tz_localize(None), "1s")
    with pytest.raises(ValueError, match="buyer_is_maker"):
        A.resample_trades(trades.drop(columns="buyer_is_maker"), "1s")
    with pytest.raises(ValueError, match="quote_volume"):
        A.resample_bars(A.resample_trades(trades, "1s").drop(columns="quote_volume"), "1min")
    assert A.resample_trades(trades.iloc[:0], "1s").empty


@pytest.mark.parametrize("freq", ["1min", "5min", "7s", "1h"])
def test_resample_bars_equals_resample_trades(freq):
    trades = random_trades(4000, 4 * 3600, seed=4)  # sparse enough to leave empty seconds
    one_second = A.resample_trades(trades, "1s")
    assert one_second["empty"].any()
    direct = A.resample_trades(trades, freq)
    pd.testing.assert_frame_equal(A.resample_bars(one_second, freq), direct, rtol=1e-12)
    # As the database stores them: only seconds with trades, trade_count, no empty flag.
    stored = one_second[~one_second["empty"]].drop(columns=["empty", "vwap"])
    stored = stored.rename(columns={"trades": "trade_count"})
    pd.testing.assert_frame_equal(A.resample_bars(stored, freq), direct, rtol=1e-12)


def test_resample_bars_real_1m_klines_match_binance_5m():
    for symbol in ("ETHBTC", "XLMBTC"):
        one = load_klines(f"{symbol}-1m-2018-01-21.csv")
        five = load_klines(f"{symbol}-5m-2018-01-21.csv")
        got = A.resample_bars(bars_from_klines(one), "5min")
        assert len(got) == len(five) == 84
        assert (got.index == five.index).all()
        for col in ["open", "high", "low", "close"]:
            np.testing.assert_array_equal(got[col].to_numpy(), five[col].to_numpy())
        np.testing.assert_allclose(got["volume"], five["volume"], rtol=1e-12)
    # XLMBTC has real minutes without trades; they become explicit empty 1m bars.
    xlm = A.resample_bars(bars_from_klines(load_klines("XLMBTC-1m-2018-01-21.csv")), "1min")
    assert len(xlm) == 420 and int(xlm["empty"].sum()) == 7


trade_lists = st.lists(
    st.tuples(
        st.integers(0, 180_000),
        st.floats(0.01, 1000, allow_nan=False),
        st.floats(0.0001, 100, allow_nan=False),
        st.booleans(),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(trade_lists, st.sampled_from(["1s", "3s", "1min"]))
def test_bar_invariants(rows, freq):
    rows.sort(key=lambda r: r[0])
    times, prices, qtys, sold = zip(*rows, strict=True)
    trades = trades_frame(times, prices, qtys, sold)
    bars = A.resample_trades(trades, freq)
    assert math.isclose(bars["volume"].sum(), sum(qtys), rel_tol=1e-9)
    assert bars["trades"].sum() == len(rows)
    taker_buy = sum(q for q, s in zip(qtys, sold, strict=True) if not s)
    assert math.isclose(bars["taker_buy_volume"].sum(), taker_buy, rel_tol=1e-9, abs_tol=1e-12)
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars[["open", "close"]].min(axis=1) >= bars["low"]).all()
    traded = bars[~bars["empty"]]
    tol = 1e-9 * traded["high"]
    assert (traded["vwap"] <= traded["high"] + tol).all()
    assert (traded["vwap"] >= traded["low"] - tol).all()
    assert (bars["empty"] == (bars["trades"] == 0)).all()
    assert bars["close"].iloc[-1] == prices[-1]
    # Re-aggregating 1-second bars gives the same bars as the trades.
    pd.testing.assert_frame_equal(
        A.resample_bars(A.resample_trades(trades, "1s"), freq), bars, rtol=1e-9
    )


def test_liquidity_mask():
    bars = A.resample_trades(
        trades_frame([0, 100, 1000, 3000], [1, 1, 1, 1], [5, 5, 0.5, 2], [0, 0, 0, 0]), "1s"
    )
    # seconds: 0 (2 trades, vol 10), 1 (1 trade, 0.5), 2 (empty), 3 (1 trade, 2)
    assert list(A.liquidity_mask(bars)) == [True, True, True, True]
    assert list(A.liquidity_mask(bars, min_trades=1)) == [True, True, False, True]
    assert list(A.liquidity_mask(bars, min_volume=1, min_trades=1)) == [True, False, False, True]
    assert list(A.liquidity_mask(bars, min_trades=2)) == [True, False, False, False]


def test_price_stats_hand_worked():
    index = pd.date_range(T0, periods=3, freq="1min")
    bars = pd.DataFrame(
        {
            "open": [95.0, 100.0, 110.0],
            "high": [101.0, 111.0, 112.0],
            "low": [94.0, 99.0, 98.0],
            "close": [100.0, 110.0, 99.0],
            "volume": [1.0, 2.0, 1.0],
            "quote_volume": [98.0, 210.0, 100.0],
            "trades": [3, 4, 5],
        },
        index=index,
    )
    got = A.price_stats(bars)
    per_year = 365 * 24 * 60
    r = [math.log(110 / 100), math.log(99 / 110)]
    assert got["last"] == 99.0 and got["change"] == 4.0
    assert math.isclose(got["change_pct"], 100 * (99 / 95 - 1))
    assert math.isclose(got["realised_vol"], math.sqrt(per_year * (r[0] ** 2 + r[1] ** 2) / 2))
    assert math.isclose(got["vwap"], 408.0 / 4.0)
    assert (got["volume"], got["trades"], got["high"], got["low"]) == (4.0, 12, 112.0, 94.0)
    half = A.price_stats(bars, periods_per_year=per_year / 2)["realised_vol"]
    assert math.isclose(half, got["realised_vol"] / math.sqrt(2))


# ------------------------------------------------------------------- alignment


def test_align_closes_staleness_hand_worked():
    s = pd.Timedelta("1s")
    a = pd.Series([1.0, 2.0, 3.0], index=[T0, T0 + 2 * s, T0 + 10 * s])
    b = pd.Series([10.0, 30.0], index=[T0 + s, T0 + 3 * s])
    got = A.align_closes({"a": a, "b": b}, max_staleness="2s")
    assert list(got.index) == [T0 + s, T0 + 2 * s, T0 + 3 * s]
    assert got["a"].tolist() == [1.0, 2.0, 2.0] and got["b"].tolist() == [10.0, 10.0, 30.0]
    unlimited = A.align_closes(pd.DataFrame({"a": a, "b": b}))
    assert unlimited.index[-1] == T0 + 10 * s and unlimited["b"].iloc[-1] == 30.0
    exact = A.align_closes({"a": a, "b": b}, max_staleness=pd.Timedelta(0))
    assert exact.empty
    logged = A.align_closes({"a": a, "b": b}, max_staleness="2s", log=True)
    np.testing.assert_allclose(logged.to_numpy(), np.log(got.to_numpy()))
    # how="all": a row stays while one leg is fresh; the stale one is NaN there.
    each = A.align_closes({"a": a, "b": b}, max_staleness="2s", how="all")
    assert list(each.index) == [T0, T0 + s, T0 + 2 * s, T0 + 3 * s, T0 + 10 * s]
    assert each["b"].isna().tolist() == [True, False, False, False, True]
    assert each["a"].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]


def test_align_closes_real_klines_with_missing_minutes():
    eth = load_klines("ETHBTC-1m-2018-01-21.csv")["close"]
    xlm = load_klines("XLMBTC-1m-2018-01-21.csv")["close"]
    strict = A.align_closes({"ETH": eth, "XLM": xlm}, max_staleness="0s")
    assert len(strict) == len(xlm) == 413  # XLM's 7 minutes without trades dropped
    carried = A.align_closes({"ETH": eth, "XLM": xlm}, max_staleness="1min")
    assert len(carried) == 420


# ---------------------------------------------------------------- hedge ratios


def simulated_pair(n: int, slope: float, intercept: float, half_life: float, seed: int):
    """x a random walk, y = intercept + slope x + AR(1) noise with the given half-life."""
    rng = np.random.default_rng(seed)
    x = 50 + np.cumsum(rng.normal(0, 0.5, n))
    phi = 0.5 ** (1 / half_life)
    eps = rng.normal(0, 1.0, n)
    noise = np.empty(n)
    noise[0] = eps[0]
    for t in range(1, n):
        noise[t] = phi * noise[t - 1] + eps[t]
    index = pd.date_range(T0, periods=n, freq="1s")
    return pd.Series(intercept + slope * x + noise, index), pd.Series(x, index)


def test_hedge_ratio_ols_matches_numpy_lstsq():
    y, x = simulated_pair(2000, 1.7, 3.0, 20, seed=5)
    fit = A.hedge_ratio(y, x, "ols")
    design = np.column_stack([np.ones(len(x)), x])
    (b0, b1), ssr, *_ = np.linalg.lstsq(design, y.to_numpy(), rcond=None)
    assert math.isclose(fit.slope, b1, rel_tol=1e-9) and math.isclose(
        fit.intercept, b0, rel_tol=1e-9
    )
    s2 = ssr[0] / (len(x) - 2)
    xc = x - x.mean()
    assert math.isclose(fit.slope_stderr_iid, math.sqrt(s2 / (xc @ xc)), rel_tol=1e-9)
    assert math.isclose(fit.residual_std, math.sqrt(s2), rel_tol=1e-9)
    assert math.isclose(fit.r_squared, 1 - ssr[0] / ((y - y.mean()) ** 2).sum(), rel_tol=1e-9)
    assert fit.nobs == 2000 and fit.method == "ols"
    assert "OLS" in fit.summary and "n = 2,000" in str(fit)


def test_hedge_ratio_recovers_known_slope():
    # The noise is AR(1), so OLS is consistent but its nominal stderr understates the
    # error; 0.02 on 1.7 is ~10 nominal stderrs yet tiny relative to the slope.
    y, x = simulated_pair(5000, 1.7, 3.0, 20, seed=6)
    for method in ("ols", "huber", "theil-sen"):
        assert abs(A.hedge_ratio(y, x, method).slope - 1.7) < 0.02, method


def test_hedge_ratio_huber_and_theil_sen_resist_outliers():
    rng = np.random.default_rng(7)
    x = pd.Series(rng.uniform(0, 10, 400))
    y = 2.0 * x + 1.0 + rng.normal(0, 0.1, 400)
    y[x > 9.5] += 30.0  # ~4% bad prints at one end drag OLS
    ols = A.hedge_ratio(y, x, "ols").slope
    assert abs(ols - 2.0) > 0.5
    assert abs(A.hedge_ratio(y, x, "huber").slope - 2.0) < 0.05
    assert abs(A.hedge_ratio(y, x, "theil-sen").slope - 2.0) < 0.1


def test_hedge_ratio_robust_methods_match_libraries_called_directly():
    y, x = simulated_pair(800, 1.2, 0.0, 10, seed=8)
    design = sm.add_constant(x.to_numpy())
    rlm = sm.RLM(y.to_numpy(), design, M=sm.robust.norms.HuberT()).fit()
    huber = A.hedge_ratio(y, x, "huber")
    assert math.isclose(huber.slope, rlm.params[1], rel_tol=1e-9)
    assert math.isclose(huber.slope_stderr_iid, rlm.bse[1], rel_tol=1e-9)
    ts = stats.theilslopes(y.to_numpy(), x.to_numpy())
    theil = A.hedge_ratio(y, x, "theil-sen", max_points=1000)
    assert math.isclose(theil.slope, ts.slope) and math.isclose(theil.intercept, ts.intercept)
    with pytest.raises(ValueError, match="unknown hedge method"):
        A.hedge_ratio(y, x, "lasso")  # type: ignore[arg-type]  # the wrong method is the test
    flat = pd.Series(1.0, index=pd.date_range(T0, periods=50, freq="1s"))
    with pytest.raises(ValueError, match="x is flat"):  # was slope 0 +- 0, silently
        A.hedge_ratio(flat * np.arange(50), flat)
    with pytest.raises(ValueError, match="at least 3"):
        A.hedge_ratio(y.iloc[:2], x.iloc[:2])


def test_rolling_hedge_ratio_matches_lstsq_and_rolling_ols():
    # BTC-like level with small moves: the case where naive rolling moments cancel.
    rng = np.random.default_rng(9)
    n, w = 400, 30
    x = 40_000 + np.cumsum(rng.normal(0, 2, n))
    y = 0.8 * x + 5 + rng.normal(0, 1, n)
    index = pd.date_range(T0, periods=n, freq="1s")
    got = A.rolling_hedge_ratio(pd.Series(y, index), pd.Series(x, index), w)
    assert got.iloc[: w - 1].isna().all().all()
    for t in range(w - 1, n, 37):
        design = np.column_stack([np.ones(w), x[t - w + 1 : t + 1]])
        b0, b1 = np.linalg.lstsq(design, y[t - w + 1 : t + 1], rcond=None)[0]
        assert math.isclose(got["slope"].iloc[t], b1, rel_tol=1e-6)
        assert math.isclose(got["intercept"].iloc[t], b0, rel_tol=1e-6, abs_tol=1e-6 * 40_000)
    ref = RollingOLS(y, sm.add_constant(x), window=w).fit(params_only=True).params
    np.testing.assert_allclose(got["slope"].to_numpy()[w - 1 :], ref[w - 1 :, 1], rtol=1e-6)


def test_rolling_hedge_ratio_flat_window_is_nan():
    index = pd.date_range(T0, periods=10, freq="1s")
    x = pd.Series([5.0] * 6 + [6.0, 7.0, 8.0, 9.0], index)
    y = 2 * x
    got = A.rolling_hedge_ratio(y, x, 4)["slope"]
    assert got.iloc[3:6].isna().all()  # windows of a constant x
    assert math.isclose(got.iloc[9], 2.0)


def kalman_by_hand(y, x, delta, obs_var, p0=1e8):
    """Textbook Kalman recursion, approximately diffuse start (independent of statsmodels)."""
    beta = np.zeros(2)
    P = np.eye(2) * p0
    Q = np.eye(2) * delta / (1 - delta)
    filt: list[np.ndarray] = []
    pred: list[np.ndarray] = []
    for yt, xt in zip(y, x, strict=True):
        P = P + Q if filt else P  # predict (the first prior is P0 itself)
        pred.append(beta.copy())
        F = np.array([xt, 1.0])
        S = F @ P @ F + obs_var
        K = P @ F / S
        beta = beta + K * (yt - F @ beta)
        P = P - np.outer(K, F @ P)
        filt.append(beta.copy())
    return np.array(filt), np.array(pred)


def test_kalman_matches_textbook_recursion():
    rng = np.random.default_rng(10)
    x = pd.Series(np.cumsum(rng.normal(0, 0.3, 300)))
    y = 0.9 * x + 0.5 + pd.Series(rng.normal(0, 0.05, 300))
    got = A.kalman_hedge_ratio(y, x, delta=1e-4, obs_var=0.0025)
    # The hand recursion starts from a wide but finite prior (P0 = 1e8 I) where
    # statsmodels starts exactly diffuse; after a few bars the two agree to ~1e-8.
    filt, pred = kalman_by_hand(y.to_numpy(), x.to_numpy(), 1e-4, 0.0025)
    np.testing.assert_allclose(got[["slope", "intercept"]].to_numpy()[10:], filt[10:], rtol=1e-6)
    np.testing.assert_allclose(
        got[["slope_pred", "intercept_pred"]].to_numpy()[10:], pred[10:], rtol=1e-6
    )
    err = y.to_numpy() - pred[:, 0] * x.to_numpy() - pred[:, 1]
    np.testing.assert_allclose(got["spread"].to_numpy()[10:], err[10:], rtol=1e-6, atol=1e-9)
    assert got.iloc[:2][["slope_pred", "spread"]].isna().all().all()  # still diffuse


def test_kalman_with_no_state_noise_is_expanding_ols():
    y, x = simulated_pair(200, 1.3, 2.0, 10, seed=11)
    got = A.kalman_hedge_ratio(y, x, delta=0.0, obs_var=1.0)
    for t in (5, 50, 199):
        design = np.column_stack([np.ones(t + 1), x.to_numpy()[: t + 1]])
        b0, b1 = np.linalg.lstsq(design, y.to_numpy()[: t + 1], rcond=None)[0]
        assert math.isclose(got["slope"].iloc[t], b1, rel_tol=1e-6)
        assert math.isclose(got["intercept"].iloc[t], b0, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(
            got["slope_pred"].iloc[t + 1 if t < 199 else t],
            got["slope"].iloc[t if t < 199 else t - 1],
            rel_tol=1e-12,
        )


def test_kalman_tracks_a_slope_that_moves():
    rng = np.random.default_rng(12)
    n = 3000
    x = 10 + np.cumsum(rng.normal(0, 0.3, n))
    slope = np.where(np.arange(n) < n // 2, 1.0, 1.5)
    y = slope * x + rng.normal(0, 0.01, n)
    got = A.kalman_hedge_ratio(pd.Series(y), pd.Series(x), delta=1e-4, obs_var=1e-4)
    # Slope and intercept are only told apart by the range x covers after the change,
    # hence 0.03 rather than the ~0.002 bar-to-bar noise of the estimate.
    assert abs(got["slope"].iloc[n // 2 - 1] - 1.0) < 0.03
    assert abs(got["slope"].iloc[-1] - 1.5) < 0.03
    # Without state noise the filter is expanding OLS over both regimes: no tracking.
    frozen = A.kalman_hedge_ratio(pd.Series(y), pd.Series(x), delta=0.0, obs_var=1e-4)
    assert abs(frozen["slope"].iloc[-1] - 1.5) > 0.1


# ------------------------------------------------------- spread, z-score, corr


def test_spread_scalar_and_series():
    index = pd.date_range(T0, periods=3, freq="1s")
    y, x = pd.Series([10.0, 11.0, 12.0], index), pd.Series([4.0, 5.0, 5.0], index)
    assert A.spread(y, x, 2.0, 1.0).tolist() == [1.0, 0.0, 1.0]
    slope = pd.Series([1.0, 2.0, 3.0], index)
    assert A.spread(y, x, slope).tolist() == [6.0, 1.0, -3.0]
    assert A.spread(y, x, 2.0).name == "spread"


def test_rolling_corr_is_of_log_returns():
    rng = np.random.default_rng(14)
    n, w = 300, 40
    common = rng.normal(0, 0.01, n)
    y = pd.Series(100 * np.exp(np.cumsum(common + rng.normal(0, 0.01, n))))
    x = pd.Series(50 * np.exp(np.cumsum(common + rng.normal(0, 0.01, n))))
    got = A.rolling_corr(y, x, w)
    ry, rx = np.diff(np.log(y.to_numpy())), np.diff(np.log(x.to_numpy()))
    assert got.iloc[:w].isna().all()
    for t in range(w, n, 23):
        expected = np.corrcoef(ry[t - w : t], rx[t - w : t])[0, 1]
        assert math.isclose(got.iloc[t], expected, rel_tol=1e-9)
    with pytest.raises(ValueError, match="price <= 0"):
        A.rolling_corr(y - 200, x, w)


# ---------------------------------------------------------------- look-ahead


def perturbed_after(series: pd.Series, t: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    out = series.copy()
    out.iloc[t + 1 :] *= np.exp(rng.normal(0, 0.05, len(series) - t - 1))
    return out


@pytest.mark.parametrize("method", ["rolling", "kalman"])
def test_no_look_ahead(method):
    y, x = simulated_pair(600, 1.4, 2.0, 15, seed=15)
    t = 400
    y2, x2 = perturbed_after(y, t, 1), perturbed_after(x, t, 2)
    head = slice(None, y.index[t])
    pd.testing.assert_frame_equal(
        A.rolling_hedge_ratio(y, x, 50)[head], A.rolling_hedge_ratio(y2, x2, 50)[head]
    )
    pd.testing.assert_frame_equal(
        A.kalman_hedge_ratio(y, x, 1e-4, 1.0)[head], A.kalman_hedge_ratio(y2, x2, 1e-4, 1.0)[head]
    )
    s = y - 1.4 * x
    pd.testing.assert_series_equal(A.zscore(s, 30)[head], A.zscore(y2 - 1.4 * x2, 30)[head])
    full, changed = A.pair_frame(y, x, 30, method), A.pair_frame(y2, x2, 30, method)
    pd.testing.assert_frame_equal(full[head], changed[head])
    assert not full.iloc[t + 1 :].equals(changed.iloc[t + 1 :])  # the change did land


def test_static_fit_does_see_the_whole_window():
    # The counterpart of the look-ahead test: a static fit is a fit on the window, and
    # the test above would catch it.
    y, x = simulated_pair(600, 1.4, 2.0, 15, seed=15)
    t = 400
    y2 = perturbed_after(y, t, 1)
    head = slice(None, y.index[t])
    assert not A.pair_frame(y, x, 30, "ols")[head].equals(A.pair_frame(y2, x, 30, "ols")[head])


# ------------------------------------------------------------------ pair_frame


def test_pair_frame_rolling_applies_previous_window():
    y, x = simulated_pair(300, 1.1, 1.0, 10, seed=16)
    pf = A.pair_frame(y, x, 40, "rolling", hedge_window=50)
    coef = A.rolling_hedge_ratio(y, x, 50)
    assert pf["hedge_ratio"].iloc[50] == coef["slope"].iloc[49]
    assert pf["hedge_ratio"].iloc[:50].isna().all()
    expected = y.iloc[120] - coef["slope"].iloc[119] * x.iloc[120] - coef["intercept"].iloc[119]
    assert math.isclose(pf["spread"].iloc[120], expected, rel_tol=1e-12)


def test_pair_frame_simulated_recovers_known_parameters():
    y, x = simulated_pair(5000, 1.5, 2.0, 20, seed=17)
    pf = A.pair_frame(y, x, 100, "ols")
    assert list(pf.columns) == ["y", "x", "hedge_ratio", "intercept", "spread", "zscore", "corr"]
    assert abs(pf["hedge_ratio"].iloc[0] - 1.5) < 0.02
    assert isinstance(pf.attrs["hedge_fit"], A.HedgeFit)
    kal = A.pair_frame(y, x, 100, "kalman", delta=1e-6, obs_var=1.0)
    assert abs(kal["hedge_ratio"].iloc[-1] - 1.5) < 0.05
    # A z-score of a stationary spread has roughly unit spread.
    assert 0.7 < pf["zscore"].std() < 1.3


def test_pair_frame_log_prices_and_bad_method():
    y, x = simulated_pair(500, 1.0, 0.0, 10, seed=18)
    pf = A.pair_frame(y, x, 30, "ols", log_prices=True)
    np.testing.assert_allclose(pf["y"], np.log(y))
    fit = A.hedge_ratio(np.log(y), np.log(x))
    assert math.isclose(pf["hedge_ratio"].iloc[0], fit.slope, rel_tol=1e-12)
    with pytest.raises(ValueError, match="unknown method"):
        A.pair_frame(y, x, 30, "magic")  # type: ignore[arg-type]  # the wrong method is the test


def test_pair_frame_on_real_klines():
    eth = load_klines("ETHBTC-1m-2018-01-21.csv")["close"]
    xlm = load_klines("XLMBTC-1m-2018-01-21.csv")["close"]
    legs = A.align_closes({"ETH": eth, "XLM": xlm}, max_staleness="1min", log=True)
    pf = A.pair_frame(np.exp(legs["ETH"]), np.exp(legs["XLM"]), 60, "ols", log_prices=True)
    design = np.column_stack([np.ones(len(legs)), legs["XLM"]])
    _, b1 = np.linalg.lstsq(design, legs["ETH"].to_numpy(), rcond=None)[0]
    assert math.isclose(pf["hedge_ratio"].iloc[0], b1, rel_tol=1e-8)
    assert pf[["spread", "zscore", "corr"]].iloc[60:].notna().all().all()
    assert (pf["corr"].dropna().abs() <= 1).all()
    rolling = A.pair_frame(np.exp(legs["ETH"]), np.exp(legs["XLM"]), 60, "rolling", True)
    assert rolling["zscore"].iloc[130:].notna().all()
