"""The z-score judges each bar against the window of bars before it (issue 13, finding 8).

With the current bar inside its own mean and deviation, Samuelson's inequality bounds
``|z|`` by ``(w - 1) / sqrt(w)``: 1.79 at the page's minimum window of 5, so an entry at
2.0 could never fire. References here: a loop over numpy windows, pandas on shifted
windows, Samuelson's bound itself, and the Student t law of a new draw against a sample.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analytics as A

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def series(values) -> pd.Series:
    return pd.Series(values, pd.date_range(T0, periods=len(values), freq="1min"), dtype=float)


@pytest.mark.parametrize("w", [2, 5, 20])
def test_zscore_against_the_bars_before(w):
    rng = np.random.default_rng(41)
    s = series(rng.normal(size=300).cumsum())
    z = A.zscore(s, w)
    assert z.name == "zscore"
    assert z.iloc[:w].isna().all()  # w earlier bars needed
    v = s.to_numpy()
    by_hand = np.full(len(v), np.nan)
    for t in range(w, len(v)):
        prev = v[t - w : t]
        by_hand[t] = (v[t] - prev.mean()) / prev.std(ddof=1)
    np.testing.assert_allclose(z.to_numpy(), by_hand, rtol=1e-9, atol=1e-12)
    shifted = s.shift(1).rolling(w)
    np.testing.assert_allclose(z, (s - shifted.mean()) / shifted.std(), rtol=1e-12)


def test_a_jump_is_no_longer_capped_by_samuelsons_bound():
    w = 5
    bound = (w - 1) / math.sqrt(w)  # 1.789: below an entry of 2.0
    rng = np.random.default_rng(42)
    s = series(rng.normal(0, 1.0, 200))
    s.iloc[150] += 8.0  # a jump of 8 sd
    # The old definition, the window ending at t: never beyond the bound, whatever the data.
    inclusive = (s - s.rolling(w).mean()) / s.rolling(w).std()
    assert inclusive.abs().max() <= bound + 1e-12
    assert inclusive.iloc[150] > 1.7  # the jump is squeezed just under it
    z = A.zscore(s, w)
    assert z.iloc[150] > 2.0 > bound
    prev = s.iloc[145:150]
    assert math.isclose(z.iloc[150], (s.iloc[150] - prev.mean()) / prev.std(), rel_tol=1e-12)
    assert (z.abs() > bound).sum() > 10  # ordinary noise crosses it too (t tails, w = 5)


def test_an_entry_of_2_opens_trades_with_the_smallest_window():
    # The page's minimum window (5) and default entry (2.0) on a mean-reverting spread.
    rng = np.random.default_rng(43)
    n = 2000
    x = series(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))))
    s = np.zeros(n)
    for t in range(1, n):
        s[t] = 0.5 * s[t - 1] + rng.normal(0, 0.05)
    y = 1.5 * x + 3.0 + s
    pf = A.pair_frame(y, x, 5, "ols")
    result = A.backtest(y, x, pf["zscore"], pf["hedge_ratio"], entry=2.0, exit=0.0)
    assert result.n_trades > 10


def test_new_draw_against_a_sample_is_a_scaled_student_t():
    # For i.i.d. normal s: (s_t - mean) / sd = sqrt(1 + 1/w) t_{w-1} exactly. Windows
    # taken every w + 1 bars do not overlap, so the draws are independent.
    w, k = 5, 20_000
    rng = np.random.default_rng(44)
    z = A.zscore(series(rng.normal(3.0, 2.0, (w + 1) * k)), w).to_numpy()[w :: w + 1]
    assert len(z) == k and np.isfinite(z).all()
    for level in (1.0, 2.0, 3.0):
        expected = 2 * stats.t.sf(level / math.sqrt(1 + 1 / w), w - 1)
        seen = float(np.mean(np.abs(z) > level))
        # 4 standard errors of a proportion over 20,000 independent draws.
        assert abs(seen - expected) < 4 * math.sqrt(expected * (1 - expected) / k)


def test_no_future_bar_moves_a_past_z():
    rng = np.random.default_rng(45)
    s = series(rng.normal(size=400).cumsum())
    t = 250
    changed = s.copy()
    changed.iloc[t + 1 :] += rng.normal(0, 5.0, len(s) - t - 1)
    full, after = A.zscore(s, 30), A.zscore(changed, 30)
    pd.testing.assert_series_equal(full.iloc[: t + 1], after.iloc[: t + 1], check_exact=True)
    assert not full.iloc[t + 1 :].equals(after.iloc[t + 1 :])
    # Nor does the bar itself move its own yardstick: only z_t changes when s_t does.
    bumped = s.copy()
    bumped.iloc[t] += 3.0
    bumped_z = A.zscore(bumped, 30)
    pd.testing.assert_series_equal(bumped_z.iloc[:t], full.iloc[:t], check_exact=True)
    assert math.isclose(bumped_z.iloc[t] - full.iloc[t], 3.0 / s.iloc[t - 30 : t].std())


def test_flat_windows_and_gaps_are_nan_not_inf():
    z = A.zscore(series([1.0] * 10), 5)
    assert z.isna().all()
    # A move off a flat window has no yardstick: NaN, not an infinite z.
    assert math.isnan(A.zscore(series([2.0, 2.0, 2.0, 2.0, 2.0, 7.0]), 5).iloc[5])
    # A flat window reached after movement is recognised as flat too.
    s = series([1.0, 3.0, 2.0, 5.0] + [4.0] * 5 + [6.0])
    assert math.isnan(A.zscore(s, 5).iloc[9])
    gappy = series(np.arange(12.0) ** 1.5)
    gappy.iloc[6] = np.nan
    got = A.zscore(gappy, 3)
    assert got.iloc[6:10].isna().all()  # its own NaN, then three windows holding it
    assert np.isfinite(got.iloc[10])
    with pytest.raises(ValueError, match="at least 2"):
        A.zscore(gappy, 1)
