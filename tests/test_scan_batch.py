"""The array scanner (quant/pairwise.py) against the per-pair functions it replaces.

Every number ``scan_pairs`` gives must be the one ``engle_granger``, ``half_life`` and
``out_of_sample_check`` give on that pair's common bars: statistic to 1e-7 relative and
p-value to 1e-6 (the issue's bar; in practice ~1e-12), on universes with planted
cointegrated pairs, missing bars, missing timestamps, log prices and a fixed lag; pairs
whose legs nearly cancel go through the per-pair path and still agree.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import cast

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import CollinearityWarning
from statsmodels.tsa.adfvalues import mackinnonp

import analytics as A
from pairs_monitor.quant import pairwise
from pairs_monitor.quant.scan import out_of_sample_check
from pairs_monitor.quant.stationarity import _on_grid

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def ar1(rng: np.random.Generator, n: int, phi: float, sigma: float = 1.0) -> np.ndarray:
    out, eps = np.zeros(n), rng.normal(0, sigma, n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + eps[t]
    return out


def universe(seed: int, n: int = 400, walks: int = 9) -> pd.DataFrame:
    """Random walks plus two planted pairs (spreads AR(1) with phi 0.6 and 0.8), 1-min bars."""
    rng = np.random.default_rng(seed)
    closes = 100 + np.cumsum(rng.normal(0, 0.5, (n, walks)), axis=0)
    frame = pd.DataFrame(
        closes,
        columns=[f"W{i}" for i in range(walks)],
        index=pd.date_range(T0, periods=n, freq="1min"),
    )
    frame["PY"] = 20 + 1.5 * frame["W0"] + ar1(rng, n, 0.6)
    frame["QY"] = 5 + 0.8 * frame["W1"] + ar1(rng, n, 0.8, 0.5)
    return frame


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """A late start, a leg that stops, holes, and timestamps missing from the clock."""
    out = frame.copy()
    out.iloc[:40, 2] = np.nan
    out.iloc[-25:, 3] = np.nan
    out.iloc[150:153, 9] = np.nan  # PY
    out.iloc[200, 4] = np.nan
    return out.drop(index=out.index[90:97])


def close(got: float, want: float, rel: float) -> bool:
    if math.isnan(want) or math.isinf(want):
        return bool(np.isnan(got)) if math.isnan(want) else got == want
    return abs(got - want) <= rel * max(abs(want), 1e-300)


def assert_rows_equal_the_per_pair_functions(
    closes: pd.DataFrame, table: pd.DataFrame, *, log_prices=False, lags=None
) -> None:
    data = cast(pd.DataFrame, np.log(closes)) if log_prices else closes
    for record in table.to_dict("records"):
        row = SimpleNamespace(**{str(k): v for k, v in record.items()})
        pair = data[[row.y, row.x]].dropna()
        y, x = pair[row.y], pair[row.x]
        eg = A.engle_granger(y, x, lags=lags)
        assert row.nobs == len(pair)
        assert close(row.eg_stat, eg.statistic, 1e-7), (row.y, row.x, row.eg_stat, eg.statistic)
        assert abs(row.eg_pvalue - eg.pvalue) <= 1e-6, (row.y, row.x)
        assert close(row.hedge_ratio, eg.hedge_ratio, 1e-9)
        assert close(row.intercept, eg.intercept, 1e-9)
        resid = y - eg.hedge_ratio * x - eg.intercept
        assert close(row.half_life, A.half_life(resid, legs=2), 1e-9), (row.y, row.x)
        assert close(row.spread_std, float(np.std(resid, ddof=1)), 1e-9)
        check = out_of_sample_check(y, x, lags)
        assert close(row.oos_hedge_ratio, check["oos_hedge_ratio"], 1e-9)
        assert close(row.oos_pvalue, check["oos_pvalue"], 1e-9), (row.y, row.x)
        assert row.holds_out_of_sample == check["holds_out_of_sample"]


@pytest.mark.filterwarnings("ignore:adfuller currently returns:FutureWarning")
@pytest.mark.parametrize(
    "case",
    ["plain", "gaps", "log prices, both directions", "fixed lag 3"],
)
def test_every_row_equals_engle_granger_half_life_and_the_oos_check(case: str):
    closes = universe(3)
    kwargs: dict = {}
    if case == "gaps":
        closes = with_gaps(closes)
    elif case.startswith("log"):
        kwargs = {"log_prices": True, "both_directions": True}
    elif case.startswith("fixed"):
        kwargs = {"lags": 3}
    table = A.scan_pairs(closes, **kwargs)
    n = closes.shape[1]
    assert len(table) == n * (n - 1) // 2 * (2 if kwargs.get("both_directions") else 1)
    assert_rows_equal_the_per_pair_functions(
        closes, table, log_prices=kwargs.get("log_prices", False), lags=kwargs.get("lags")
    )
    # The planted pairs are candidates, with a finite half-life (its own test ran).
    found = table[table["candidate"] & np.isfinite(table["half_life"])]
    assert {frozenset(("W0", "PY")), frozenset(("W1", "QY"))} <= set(
        map(frozenset, zip(found["y"], found["x"], strict=True))
    )


def test_a_gapped_clock_puts_the_half_life_on_the_grid_of_the_bars():
    closes = with_gaps(universe(4))
    index = closes.dropna().index
    got = pairwise.bar_grid(index)
    expected = _on_grid(pd.Series(np.arange(len(index), dtype=float), index=index), None)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).sum() >= 7  # the seven dropped minutes (at least) are holes


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # statsmodels at inf
def test_mackinnon_pvalues_are_statsmodels_mackinnonp_on_an_array():
    stats = np.r_[np.linspace(-30, 5, 701), -np.inf, np.inf, np.nan, -3.13, -2.62, -1.61]
    for regression, n_series in [("c", 1), ("c", 2), ("n", 1), ("ct", 2), ("c", 6)]:
        got = pairwise.mackinnon_pvalues(stats, regression, n_series)
        expected = [mackinnonp(stat, regression, n_series) for stat in stats]
        np.testing.assert_array_equal(got, expected)  # NaN where statsmodels says NaN


@pytest.mark.filterwarnings("ignore:adfuller currently returns:FutureWarning")
def test_many_blocks_of_legs_and_small_steps_give_the_same_table(monkeypatch):
    # The default block holds every leg of a small universe: force several blocks (pairs
    # across blocks, y in the higher one) and steps of a few pairs.
    closes = with_gaps(universe(5, walks=12))
    whole = A.scan_pairs(closes, both_directions=True)
    monkeypatch.setattr(pairwise, "MAX_BLOCK_WIDTH", 30)  # 3 legs a block at 9 regressors
    monkeypatch.setattr(pairwise, "MAX_STEP_FLOATS", 200)
    blocks = A.scan_pairs(closes, both_directions=True)
    pd.testing.assert_frame_equal(whole, blocks, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:adfuller currently returns:FutureWarning")
def test_legs_that_nearly_cancel_go_one_by_one_and_still_agree():
    closes = universe(6, walks=4)
    rng = np.random.default_rng(0)
    closes["TWIN"] = 2 * closes["W0"] + 3 + rng.normal(0, 1e-5, len(closes))  # R^2 ~ 1 - 1e-12
    closes["COPY"] = 3 * closes["W1"] + 1  # an exact linear function: not testable
    values = closes.to_numpy()
    columns = list(closes.columns)
    y = np.array([columns.index("W0"), columns.index("W1"), columns.index("W2")])
    x = np.array([columns.index("TWIN"), columns.index("COPY"), columns.index("W3")])
    stats = pairwise.pair_stats(
        values, closes.index, y, x, lags=None, min_obs=30, holdout=1 / 3, oos_min_bars=20
    )
    assert stats.fallback.tolist() == [True, True, False]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollinearityWarning)
        table = A.scan_pairs(closes)
    pairs = set(zip(table["y"], table["x"], strict=True))
    assert ("W1", "COPY") not in pairs and ("W0", "TWIN") in pairs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollinearityWarning)
        assert_rows_equal_the_per_pair_functions(closes, table)


def test_spread_volatility_against_round_trip_fees_by_hand():
    rng = np.random.default_rng(8)
    n = 600
    x = 50 + np.cumsum(rng.normal(0, 0.2, n))
    closes = pd.DataFrame(
        {"Y": 10 + 2 * x + ar1(rng, n, 0.5, 0.5), "X": x},
        index=pd.date_range(T0, periods=n, freq="1min"),
    )
    row = A.scan_pairs(closes, fee_bps={"Y": 10.0, "X": 5.0}).iloc[0]
    resid = closes["Y"] - row.hedge_ratio * closes["X"] - row.intercept
    notional = closes["Y"].iloc[-1] + abs(row.hedge_ratio) * closes["X"].iloc[-1]
    assert row.spread_std == pytest.approx(resid.std(ddof=1), rel=1e-9)
    assert row.spread_std_bps == pytest.approx(1e4 * resid.std(ddof=1) / notional, rel=1e-9)
    fees = 10.0 * closes["Y"].iloc[-1] + 5.0 * abs(row.hedge_ratio) * closes["X"].iloc[-1]
    assert row.round_trip_bps == pytest.approx(2 * fees / notional, rel=1e-12)
    assert row.candidate and row.tradable == (row.spread_std_bps >= row.round_trip_bps)
    # In logs the legs are sized in value: 1 of Y against |h| of X.
    logs = A.scan_pairs(closes, log_prices=True, fee_bps=10.0).iloc[0]
    assert logs.round_trip_bps == pytest.approx(20.0)
    resid = np.log(closes["Y"]) - logs.hedge_ratio * np.log(closes["X"]) - logs.intercept
    expected = 1e4 * resid.std(ddof=1) / (1 + abs(logs.hedge_ratio))
    assert logs.spread_std_bps == pytest.approx(expected, rel=1e-9)
    # Fees dear enough to eat the spread's swing: still a candidate, not tradable.
    dear = A.scan_pairs(closes, log_prices=True, fee_bps=logs.spread_std_bps).iloc[0]
    assert dear.candidate and not dear.tradable


def test_scan_signals_z_on_the_last_bar_and_the_last_entry():
    index = pd.date_range(T0, periods=6, freq="1min")
    closes = pd.DataFrame(
        {"Y": [10.0, 13.0, 10.0, 7.0, 10.0, 11.0], "X": [5.0] * 6},
        index=index,
    )
    table = pd.DataFrame(
        {"y": ["Y"], "x": ["X"], "hedge_ratio": [1.0], "intercept": [5.0], "spread_std": [1.5]}
    )
    got = A.scan_signals(closes, table).iloc[0]
    assert got.last_bar == index[-1]
    assert got.zscore == pytest.approx(1 / 1.5)
    assert got.signal_bar == index[3] and got.signal_z == pytest.approx(-2.0)
    quiet = A.scan_signals(closes, table, entry=3.0).iloc[0]
    assert pd.isna(quiet.signal_bar) and np.isnan(quiet.signal_z)


def test_a_negative_lag_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="lags must be >= 0"):
        A.scan_pairs(universe(1, n=60, walks=2), lags=-1)
    with pytest.raises(ValueError, match="fee_bps has no fee for"):
        A.scan_pairs(universe(1, n=60, walks=2), fee_bps={"W0": 10.0})


def test_nothing_to_pair_is_an_empty_table_with_every_column():
    one = universe(2, n=60, walks=2)[["W0"]]
    for closes in (one, one.assign(GONE=np.nan), pd.DataFrame()):
        table = A.scan_pairs(closes)
        assert table.empty and len(table.columns) == 18
    short = universe(2, n=60, walks=2)[["W0", "W1"]]
    short.iloc[:50, 1] = np.nan  # ten common bars: under the 20 any pair needs
    assert A.scan_pairs(short, min_obs=5).empty
