"""Issue 13, findings 4-7 and 11: each statistic honest about its size and uncertainty.

Every check is against an independent computation: statsmodels called directly, or a
seeded simulation with known truth.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.signal import lfilter
from statsmodels.tsa.stattools import adfuller, coint

from pairs_monitor.quant import hedge_ratio
from pairs_monitor.quant.stationarity import (
    engle_granger,
    half_life,
    half_life_fit,
    hurst,
    hurst_fit,
    johansen,
    schwert_lag,
)


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) with unit innovations (first value from the stationary law)."""
    e = rng.standard_normal(n)
    e[0] /= math.sqrt(1 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e)


def walks(rng: np.random.Generator, n: int, k: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        100 + np.cumsum(rng.standard_normal((n, k)), axis=0), columns=list("ab")[:k]
    )


# --- finding 4: Johansen -----------------------------------------------------------------


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_johansen_default_holds_its_size_on_driftless_random_walks():
    """Independent driftless walks: rank > 0 at 5% must happen 4-6% of the time."""
    rng = np.random.default_rng(2024)
    reps = 2000
    steps = rng.standard_normal((reps, 150, 2)).cumsum(axis=1) + 100
    rejected = sum(johansen(pd.DataFrame(path)).rank > 0 for path in steps)
    # binomial sd at 5% with 2,000 draws: 0.49 points; measured 4.9%
    assert 0.04 <= rejected / reps <= 0.06, rejected / reps


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_johansen_unrestricted_constant_over_rejects_which_is_why_it_is_not_default():
    rng = np.random.default_rng(7)
    reps = 400
    steps = rng.standard_normal((reps, 150, 2)).cumsum(axis=1) + 100
    rejected = sum(johansen(pd.DataFrame(p), det_order=0).rank > 0 for p in steps)
    assert rejected / reps > 0.075  # ~10% (issue 13): the reason for the new default


def test_johansen_ci_finds_a_cointegrated_pair_and_its_vector():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal(1500))
    y = 5.0 + 2.0 * x + ar1(1500, 0.8, rng)
    res = johansen(pd.DataFrame({"y": y, "x": x}))
    assert res.rank == 1
    assert res.eigenvector[0] == 1.0
    assert abs(res.eigenvector[1] + 2.0) < 0.02  # y - 2 x is the stationary relation
    assert res.det_order == "ci"
    assert "MacKinnon-Haug-Michelis" in res.critical_values_source


def test_johansen_statsmodels_cases_still_match_coint_johansen_and_name_mhm():
    from statsmodels.tsa.vector_ar.vecm import coint_johansen

    frame = walks(np.random.default_rng(5), 400)
    for det in (-1, 0, 1):
        got = johansen(frame, det_order=det, k_ar_diff=2)
        ref = coint_johansen(frame.to_numpy(), det, 2)
        np.testing.assert_allclose(got.trace_stats, ref.lr1, rtol=1e-10)
        np.testing.assert_allclose(got.trace_crit_5, ref.cvt[:, 1])
        assert got.critical_values_source == "MacKinnon-Haug-Michelis (1999), via statsmodels"
        assert "Osterwald" not in got.verdict


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k_ar_diff": 0}, "k_ar_diff must be >= 1"),
        ({"det_order": 2}, "det_order must be 'ci'"),
        ({"det_order": "co"}, "-1 (none), 0 (unrestricted constant) or 1 (linear trend)"),
    ],
)
def test_johansen_refuses_what_it_cannot_compute(kwargs, message):
    with pytest.raises(ValueError, match=re_escape(message)):
        johansen(walks(np.random.default_rng(1), 200), **kwargs)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# --- finding 5: half-life ----------------------------------------------------------------


def test_half_life_says_no_mean_reversion_for_random_walks():
    rng = np.random.default_rng(11)
    reps = 300
    finite = [
        math.isfinite(half_life(pd.Series(np.cumsum(rng.standard_normal(1000)))))
        for _ in range(reps)
    ]
    assert 1 - np.mean(finite) >= 0.90  # measured 95.7% (the old code: 1-5%)
    res = half_life_fit(pd.Series(np.cumsum(rng.standard_normal(1000))))
    if not res.mean_reverting:
        assert res.half_life == math.inf and res.reason.startswith("no mean reversion")


def test_half_life_of_engle_granger_residuals_of_unrelated_walks_is_mostly_refused():
    rng = np.random.default_rng(12)
    reps = 200
    refused = 0
    for _ in range(reps):
        y, x = np.cumsum(rng.standard_normal((2, 1000)), axis=1)
        b = np.polyfit(x, y, 1)
        refused += half_life(pd.Series(y - np.polyval(b, x)), legs=2) == math.inf
    assert refused / reps >= 0.90


def test_half_life_decision_is_the_adf_and_engle_granger_decision_on_gap_free_data():
    rng = np.random.default_rng(13)
    s = pd.Series(ar1(1500, 0.99, rng))
    got = half_life_fit(s)
    with warnings.catch_warnings():  # statsmodels 0.15 warns about adfuller's tuple
        warnings.simplefilter("ignore", FutureWarning)
        ref = adfuller(s.to_numpy(), maxlag=schwert_lag(1500), regression="c", autolag=None)
    assert math.isclose(got.statistic, ref[0], rel_tol=1e-9)
    assert math.isclose(got.pvalue, ref[1], rel_tol=1e-9)
    y, x = np.cumsum(rng.standard_normal((2, 1500)), axis=1)
    x = x + 0.5 * y
    b = np.polyfit(x, y, 1)
    got = half_life_fit(pd.Series(y - np.polyval(b, x)), legs=2)
    stat, pvalue, _ = coint(y, x, maxlag=schwert_lag(1500), autolag=None)
    assert math.isclose(got.statistic, stat, rel_tol=1e-9)
    assert math.isclose(got.pvalue, pvalue, rel_tol=1e-9)


def test_half_life_uses_only_truly_adjacent_bars():
    """True half-life 10, 30% of bars missing: ~10 (joining across the gaps gave ~6.7)."""
    rng = np.random.default_rng(14)
    phi = 0.5 ** (1 / 10)
    idx = pd.date_range("2024-01-01", periods=4000, freq="1min", tz="UTC")
    got, joined = [], []
    for _ in range(10):
        s = pd.Series(ar1(4000, phi, rng), index=idx)
        keep = rng.random(4000) > 0.3
        dropped = s[keep]  # missing timestamps
        with_nan = s.where(keep)  # NaN rows
        res = half_life_fit(dropped, lags=1)
        assert res.mean_reverting
        assert math.isclose(half_life_fit(with_nan, lags=1).half_life, res.half_life)
        got.append(res.half_life)
        v = dropped.to_numpy()  # the old way: consecutive rows as if adjacent
        fit = sm.OLS(v[1:], sm.add_constant(v[:-1])).fit()
        joined.append(math.log(0.5) / math.log(fit.params[1]))
    assert abs(np.mean(got) - 10) < 0.6, np.mean(got)
    assert abs(np.mean(joined) - 7.0) < 0.6  # the bias this fixes


def test_half_life_interval_covers_the_truth_at_about_its_nominal_rate():
    rng = np.random.default_rng(15)
    true_hl, reps = 10.0, 400
    phi = 0.5 ** (1 / true_hl)
    covered = 0
    for _ in range(reps):
        res = half_life_fit(pd.Series(ar1(1000, phi, rng)), confidence=0.95)
        assert res.low <= res.half_life <= res.high
        covered += res.low <= true_hl <= res.high
    # measured 93%: phi-hat's small-sample bias (-(1 + 3 phi) / n) costs a little
    assert 0.90 <= covered / reps <= 0.98, covered / reps


def test_half_life_interval_is_the_phi_interval_mapped():
    rng = np.random.default_rng(16)
    s = pd.Series(ar1(2000, 0.9, rng))
    res = half_life_fit(s)
    fit = sm.OLS(s.to_numpy()[1:], sm.add_constant(s.to_numpy()[:-1])).fit()
    lo, hi = fit.conf_int(0.05)[1]  # t-based; ours is normal: equal to ~1e-3 at n = 2,000
    assert math.isclose(res.phi, fit.params[1], rel_tol=1e-12)
    assert math.isclose(res.phi_stderr, fit.bse[1], rel_tol=1e-12)
    assert math.isclose(res.low, math.log(0.5) / math.log(lo), rel_tol=2e-3)
    assert math.isclose(res.high, math.log(0.5) / math.log(hi), rel_tol=2e-3)


# --- finding 6: standard errors ----------------------------------------------------------


def test_ols_hedge_slope_stderr_is_newey_west_hac_with_an_interval():
    rng = np.random.default_rng(17)
    n = 1440
    x = np.cumsum(rng.standard_normal(n)) + 50
    y = 3 + 1.5 * x + ar1(n, 0.95, rng)
    fit = hedge_ratio(pd.Series(y), pd.Series(x))
    lags = int(4 * (n / 100) ** (2 / 9))  # Newey-West (1994): 7 here
    ref = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    assert fit.hac_lags == lags == 7
    assert math.isclose(fit.slope_stderr, ref.bse[1], rel_tol=1e-9)
    lo, hi = ref.conf_int(0.05)[1]
    assert math.isclose(fit.slope_ci[0], lo, rel_tol=1e-9)
    assert math.isclose(fit.slope_ci[1], hi, rel_tol=1e-9)
    iid = sm.OLS(y, sm.add_constant(x)).fit()
    assert math.isclose(fit.slope_stderr_iid, iid.bse[1], rel_tol=1e-9)
    assert fit.slope_stderr > 2 * fit.slope_stderr_iid  # autocorrelated residual
    assert "Newey-West HAC, 7 lags" in fit.summary


# --- finding 7: Hurst --------------------------------------------------------------------


def fbm(n: int, h: float, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` fractional Brownian motions (columns): Cholesky of fGn's covariance."""
    k = np.arange(n, dtype=float)
    gamma = 0.5 * (np.abs(k + 1) ** (2 * h) - 2 * k ** (2 * h) + np.abs(k - 1) ** (2 * h))
    cov = gamma[np.abs(np.subtract.outer(np.arange(n), np.arange(n)))]
    return np.cumsum(np.linalg.cholesky(cov) @ rng.standard_normal((n, reps)), axis=0)


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
@pytest.mark.parametrize("true_h", [0.3, 0.5, 0.7])
def test_hurst_recovers_fractional_brownian_motion(true_h):
    paths = fbm(1000, true_h, 8, np.random.default_rng(18))
    est = [hurst(pd.Series(paths[:, j])) for j in range(paths.shape[1])]
    assert abs(np.mean(est) - true_h) < 0.06, est


def test_hurst_lag_range_tied_to_the_data_and_mean_reversion_below_half():
    rng = np.random.default_rng(19)
    res = hurst_fit(pd.Series(ar1(2000, 0.9, rng)))
    assert (res.min_lag, res.max_lag, res.nobs) == (2, 500, 2000)  # 2 .. n // 4
    assert res.hurst < 0.3 and res.reason == ""


def test_hurst_refuses_small_samples():
    res = hurst_fit(pd.Series(np.cumsum(np.random.default_rng(20).standard_normal(24))))
    assert math.isnan(res.hurst)
    assert res.reason == "needs at least 100 bars, got 24"
    assert math.isnan(hurst(pd.Series(np.arange(99.0))))


# --- finding 11: Engle-Granger edge cases ------------------------------------------------


def test_engle_granger_refuses_a_flat_leg():
    x = pd.Series(np.cumsum(np.random.default_rng(21).standard_normal(200)))
    flat = pd.Series(np.full(200, 7.0))
    with pytest.raises(ValueError, match="y is flat"):
        engle_granger(flat, x)
    with pytest.raises(ValueError, match="x is flat"):
        engle_granger(x, flat)


def test_engle_granger_refuses_exactly_collinear_legs():
    x = pd.Series(np.cumsum(np.random.default_rng(22).standard_normal(200)) + 100)
    with pytest.raises(ValueError, match="exact linear function"):
        engle_granger(3 + 2 * x, x)


def test_engle_granger_verdict_agrees_with_the_p_value_shown():
    rng = np.random.default_rng(23)
    for _ in range(120):
        y, x = np.cumsum(rng.standard_normal((2, 20)), axis=1)
        x = x + rng.uniform(0, 1) * y
        res = engle_granger(pd.Series(y), pd.Series(x), lags=0)
        _stat, pvalue, _ = coint(y, x, maxlag=0, autolag=None)
        assert math.isclose(res.pvalue, pvalue, rel_tol=1e-12)
        assert res.verdict.startswith("cointegrated") == (pvalue < 0.05)


def test_huber_slope_stderr_is_the_m_estimator_hac_sandwich():
    rng = np.random.default_rng(24)
    n = 1440
    x = np.cumsum(rng.standard_normal(n)) + 50
    y = 3 + 1.5 * x + ar1(n, 0.95, rng)
    # psi(u) = u when the threshold is never reached: exactly OLS's Newey-West HAC
    wide = hedge_ratio(pd.Series(y), pd.Series(x), "huber", huber_t=1e9)
    ref = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": 7})
    assert math.isclose(wide.slope_stderr, ref.bse[1], rel_tol=1e-9)
    assert wide.hac_lags == 7 and "Newey-West HAC" in wide.stderr_kind
    # iid errors: the sandwich agrees with RLM's own (iid) standard error
    e = rng.standard_t(5, 5000)
    x2 = rng.standard_normal(5000).cumsum()
    fit = hedge_ratio(pd.Series(1 + 2 * x2 + e), pd.Series(x2), "huber")
    rlm = sm.RLM(1 + 2 * x2 + e, sm.add_constant(x2), M=sm.robust.norms.HuberT()).fit()
    assert math.isclose(fit.slope_stderr_iid, rlm.bse[1], rel_tol=1e-12)
    assert abs(fit.slope_stderr / rlm.bse[1] - 1) < 0.1
