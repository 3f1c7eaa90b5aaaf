"""Volume-spike ratio and the scale-free ("auto") Kalman hedge.

Expected values are worked by hand or computed independently (numpy least squares);
the simulated pairs have known parameters the functions must recover.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import analytics as A

T0 = pd.Timestamp("2024-03-01", tz="UTC")


# ---------------------------------------------------------------- volume_ratio


def test_volume_ratio_hand_worked():
    index = pd.date_range(T0, periods=6, freq="1s")
    bars = pd.DataFrame({"volume": [1.0, 3.0, 2.0, 8.0, 0.0, 5.0]}, index)
    got = A.volume_ratio(bars, 2)
    # t=2: 2 / mean(1, 3) = 1; t=3: 8 / mean(3, 2) = 3.2; t=4: 0 / mean(2, 8) = 0;
    # t=5: 5 / mean(8, 0) = 1.25. The first two rows have no full baseline.
    assert got.name == "volume_ratio"
    assert got.iloc[:2].isna().all()
    np.testing.assert_allclose(got.iloc[2:].to_numpy(), [1.0, 3.2, 0.0, 1.25])
    # A Series works the same as the frame's column.
    pd.testing.assert_series_equal(A.volume_ratio(bars["volume"], 2), got)


def test_volume_ratio_zero_baseline_and_bad_window():
    index = pd.date_range(T0, periods=4, freq="1s")
    got = A.volume_ratio(pd.Series([0.0, 0.0, 4.0, 0.0], index), 2)
    assert math.isinf(got.iloc[2])  # trades after two empty bars: an unbounded spike
    assert math.isnan(got.iloc[3]) is False and got.iloc[3] == 0.0  # 0 / mean(0, 4)
    assert math.isnan(A.volume_ratio(pd.Series([0.0, 0.0, 0.0], index[:3]), 2).iloc[2])
    with pytest.raises(ValueError, match="at least 1 bar"):
        A.volume_ratio(pd.Series([1.0], index[:1]), 0)


def test_volume_ratio_no_look_ahead_and_excludes_the_current_bar():
    rng = np.random.default_rng(3)
    index = pd.date_range(T0, periods=300, freq="1s")
    volume = pd.Series(rng.exponential(2.0, 300), index)
    t = 200
    changed = volume.copy()
    changed.iloc[t + 1 :] = pd.Series(rng.exponential(50.0, 300 - t - 1), index[t + 1 :])
    full, after = A.volume_ratio(volume, 30), A.volume_ratio(changed, 30)
    pd.testing.assert_series_equal(full.iloc[: t + 1], after.iloc[: t + 1])
    assert not full.iloc[t + 1 :].equals(after.iloc[t + 1 :])
    # The current bar is not in its own baseline: a spike is judged against the bars before.
    spiked = volume.copy()
    spiked.iloc[t] = 1000.0
    expected = 1000.0 / volume.iloc[t - 30 : t].mean()
    assert math.isclose(A.volume_ratio(spiked, 30).iloc[t], expected, rel_tol=1e-12)


# ------------------------------------------------------------ Kalman, auto mode


def raw_pair(n: int, slope, seed: int, level: float = 30_000.0, vol: float = 1e-3):
    """x a BTC-like price (geometric random walk at ``level``), y = slope x + noise (sd 50)."""
    rng = np.random.default_rng(seed)
    x = level * np.exp(np.cumsum(rng.normal(0, vol, n)))
    y = np.asarray(slope) * x + rng.normal(0, 50.0, n)
    index = pd.date_range(T0, periods=n, freq="1s")
    return pd.Series(y, index), pd.Series(x, index)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_kalman_converges_on_raw_prices_with_a_constant_hedge(seed):
    y, x = raw_pair(4000, 2.5, seed)
    got = A.kalman_hedge_ratio(y, x)
    assert got.attrs["auto"] and got.attrs["delta"] == A.AUTO_DELTA
    # R was estimated from the first 100 bars: the residual sd of y is 50.
    assert 35**2 < got.attrs["obs_var"] < 65**2
    assert abs(got["slope_pred"].iloc[-1] - 2.5) < 0.03
    assert abs(got["slope_pred"].iloc[-1000:] - 2.5).max() < 0.05
    # The forecast errors are calibrated: standardised, their sd is about 1.
    standardised = (got["spread"] / got["spread_std"]).iloc[200:]
    assert 0.85 < standardised.std() < 1.15


def test_auto_kalman_tracks_a_slope_that_changes_mid_series():
    n = 4000
    ramp = np.clip((np.arange(n) - 1500) / 1000, 0.0, 1.0)  # 2.5 until 1500, 3.0 from 2500
    slope = 2.5 + 0.5 * ramp
    for seed in range(3):
        y, x = raw_pair(n, slope, seed)
        got = A.kalman_hedge_ratio(y, x)["slope_pred"]
        assert abs(got.iloc[1499] - 2.5) < 0.05
        assert abs(got.iloc[2000] - 2.75) < 0.1  # half-way: it lags a moving slope a little
        assert abs(got.iloc[-1] - 3.0) < 0.06
        # Without state noise the filter is expanding OLS over both regimes: it lags far.
        frozen = A.kalman_hedge_ratio(y, x, delta=0.0)["slope_pred"]
        assert abs(frozen.iloc[-1] - 3.0) > 0.1


def test_auto_kalman_is_free_of_units_and_level():
    y, x = raw_pair(1500, 2.5, seed=4)
    base = A.kalman_hedge_ratio(y, x)
    scaled = A.kalman_hedge_ratio(y * 1000.0, x * 0.01)
    np.testing.assert_allclose(scaled["slope_pred"], base["slope_pred"] * 1e5, rtol=1e-6)
    np.testing.assert_allclose(scaled["spread"], base["spread"] * 1000.0, rtol=1e-6, atol=1e-6)
    # Chan's fixed noise (obs_var 1e-3, delta 1e-4) is far too small an observation noise
    # for y near 75,000: the filter trusts every print and its slope wanders off the truth.
    assert abs(base["slope_pred"].iloc[-1] - 2.5) < 0.04
    chan = A.kalman_hedge_ratio(y, x, obs_var=1e-3)["slope_pred"]
    assert abs(chan.iloc[-1] - 2.5) > 0.05


def test_auto_kalman_with_no_state_noise_is_expanding_ols():
    y, x = raw_pair(400, 2.5, seed=5)
    got = A.kalman_hedge_ratio(y, x, delta=0.0, init_window=50)
    for t in (49, 150, 399):
        design = np.column_stack([np.ones(t + 1), x.to_numpy()[: t + 1]])
        b0, b1 = np.linalg.lstsq(design, y.to_numpy()[: t + 1], rcond=None)[0]
        assert math.isclose(got["slope"].iloc[t], b1, rel_tol=1e-6)
        assert math.isclose(got["intercept"].iloc[t], b0, rel_tol=1e-5, abs_tol=1e-3)


def test_auto_kalman_has_no_look_ahead_and_hides_rows_before_its_noise_estimate():
    y, x = raw_pair(600, 2.5, seed=6)
    got = A.kalman_hedge_ratio(y, x, init_window=80)
    assert got.iloc[:79].isna().all().all()  # R comes from bars 0..79
    assert got.iloc[79:].notna().all().all()
    t = 300
    rng = np.random.default_rng(9)
    y2, x2 = y.copy(), x.copy()
    y2.iloc[t + 1 :] *= np.exp(rng.normal(0, 0.05, len(y) - t - 1))
    x2.iloc[t + 1 :] *= np.exp(rng.normal(0, 0.05, len(x) - t - 1))
    changed = A.kalman_hedge_ratio(y2, x2, init_window=80)
    pd.testing.assert_frame_equal(got.iloc[: t + 1], changed.iloc[: t + 1])
    # Too few bars to estimate the noise: all NaN, said by the rows, not raised.
    assert A.kalman_hedge_ratio(y.iloc[:50], x.iloc[:50], init_window=80).isna().all().all()


def test_kalman_parameter_checks():
    y, x = raw_pair(200, 2.5, seed=7)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        A.kalman_hedge_ratio(y, x, delta=1.5, obs_var=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        A.kalman_hedge_ratio(y, x, delta=-1.0)
    with pytest.raises(ValueError, match="init_window"):
        A.kalman_hedge_ratio(y, x, init_window=2)
    with pytest.raises(ValueError, match="x is 0 over the first"):
        A.kalman_hedge_ratio(x, pd.Series(0.0, x.index))  # no level for the slope noise


def test_auto_kalman_floors_the_noise_of_an_exact_first_window():
    # Y did not trade over the first window (flat), then follows 2.5 x + noise: the OLS
    # fit on that window is exact, R would be 0. It is floored and the filter runs.
    y, x = raw_pair(1500, 2.5, seed=8)
    y.iloc[:100] = y.iloc[0]
    got = A.kalman_hedge_ratio(y, x)
    assert got.attrs["obs_var_floored"]
    assert got.attrs["obs_var"] == pytest.approx((1e-8 * y.iloc[0]) ** 2)
    assert got.iloc[99:].notna().all().all()
    # Its forecast errors after the flat start are of the order of y's noise (sd 50).
    assert got["spread"].iloc[300:].std() < 1.5 * 50
    # With no state noise it is exactly expanding OLS, flat start included (numpy lstsq).
    frozen = A.kalman_hedge_ratio(y, x, delta=0.0)
    design = np.column_stack([np.ones(len(x)), x.to_numpy()])
    _b0, b1 = np.linalg.lstsq(design, y.to_numpy(), rcond=None)[0]
    assert math.isclose(frozen["slope"].iloc[-1], b1, rel_tol=1e-6)
    # R's level does not move the hedge (W is proportional to R): an exact fit over the
    # whole series recovers the slope exactly, and its forecast errors are ~0.
    exact = A.kalman_hedge_ratio(2.0 * x, x)
    assert exact.attrs["obs_var_floored"]
    np.testing.assert_allclose(exact["slope_pred"].iloc[100:], 2.0, rtol=1e-6)
    assert (exact["spread"].iloc[100:].abs() < 1e-6 * x.iloc[100:]).all()
    # Not floored when the first window has noise.
    assert not A.kalman_hedge_ratio(*raw_pair(300, 2.5, seed=9)).attrs["obs_var_floored"]
