"""Hedge ratios of ``y`` on ``x``: static fits (OLS, Huber, Theil-Sen), rolling OLS, Kalman.

Every function here takes two price series (raw or log), inner-joins them on time with
:func:`join_legs` and fits ``y = intercept + slope * x``. The static fits use all the rows
they are given; the rolling and Kalman fits use, at each bar, only the bars up to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

__all__ = [
    "AUTO_DELTA",
    "CHAN_DELTA",
    "HedgeFit",
    "HedgeMethod",
    "hedge_ratio",
    "kalman_hedge_ratio",
    "rolling_hedge_ratio",
]

HedgeMethod = Literal["ols", "huber", "theil-sen"]


def join_legs(y: pd.Series, x: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Inner-join two series on their index and drop the rows where either is NaN.

    A non-Series ``y`` gets a range index, a non-Series ``x`` ``y``'s index.
    :return: both legs as float64 on the common index.
    """
    if not isinstance(y, pd.Series):
        y = pd.Series(np.asarray(y, dtype=np.float64))
    if not isinstance(x, pd.Series):
        x = pd.Series(np.asarray(x, dtype=np.float64), index=y.index)
    if not y.index.equals(x.index):
        y, x = y.align(x, join="inner")
    ok = y.notna().to_numpy() & x.notna().to_numpy()
    if not ok.all():
        y, x = y[ok], x[ok]
    return y.astype(np.float64), x.astype(np.float64)


@dataclass(frozen=True)
class HedgeFit:
    """A static fit ``y = intercept + slope * x + e``.

    ``r_squared`` and ``residual_std`` (``sqrt(SSR / (n - 2))``) are computed the same way
    for every method from the fit's residuals; for the robust fits they describe, they
    are not what the estimator minimised.
    """

    slope: float
    intercept: float
    method: str
    r_squared: float
    slope_stderr: float
    residual_std: float
    nobs: int

    @property
    def summary(self) -> str:
        """One line for the page, e.g. ``OLS: y = 1.5021 x + 3.2 (slope ± 0.0012) ...``."""
        return (
            f"{self.method.upper()}: y = {self.slope:.6g} x {self.intercept:+.6g} "
            f"(slope ± {self.slope_stderr:.2g}), R² {self.r_squared:.4f}, "
            f"residual σ {self.residual_std:.4g}, n = {self.nobs:,}"
        )

    def __str__(self) -> str:
        return self.summary


def hedge_ratio(
    y: pd.Series,
    x: pd.Series,
    method: HedgeMethod = "ols",
    *,
    max_points: int = 1000,
) -> HedgeFit:
    """Static hedge ratio of ``y`` on ``x`` with an intercept, over all the data given.

    ``ols``: statsmodels OLS. ``huber``: statsmodels RLM with Huber's T norm (IRLS, robust
    scale by MAD). ``theil-sen``: scipy ``theilslopes`` (median of pairwise slopes); it is
    O(n^2) in time and memory, so above ``max_points`` it runs on ``max_points`` evenly
    spaced points (deterministic). Its ``slope_stderr`` is the 95% confidence interval's
    half-width / 1.96.

    :param y: the leg bought when the spread is bought.
    :param x: the hedge leg; rows are inner-joined with ``y`` and NaNs dropped.
    :param method: ``"ols"``, ``"huber"`` or ``"theil-sen"``.
    :param max_points: cap on the Theil-Sen sample.
    :raises ValueError: fewer than 3 common points, a flat ``x`` (relative std below 1e-10,
        as in :func:`rolling_hedge_ratio`: no slope to fit), or an unknown method.
    """
    ys, xs = join_legs(y, x)
    n = len(ys)
    if n < 3:
        raise ValueError(f"hedge_ratio needs at least 3 common points, got {n}")
    yv, xv = ys.to_numpy(), xs.to_numpy()
    if float(np.std(xv - xv[0])) <= 1e-10 * max(abs(float(xv[0])), 1e-300):
        raise ValueError(
            f"x is flat over the {n} points (it did not move): a hedge ratio on it is undefined"
        )
    design = np.column_stack([np.ones(n), xv])
    if method == "ols":
        res = sm.OLS(yv, design).fit()
        intercept, slope = (float(v) for v in res.params)
        stderr = float(res.bse[1])
    elif method == "huber":
        res = sm.RLM(yv, design, M=sm.robust.norms.HuberT()).fit()
        intercept, slope = (float(v) for v in res.params)
        stderr = float(res.bse[1])
    elif method == "theil-sen":
        idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(np.int64))
        res = stats.theilslopes(yv[idx], xv[idx], alpha=0.95)
        slope, intercept = float(res.slope), float(res.intercept)
        stderr = float(res.high_slope - res.low_slope) / (2 * 1.959963984540054)
    else:
        raise ValueError(f"unknown hedge method {method!r}; use 'ols', 'huber' or 'theil-sen'")
    resid = yv - intercept - slope * xv
    ssr = float(resid @ resid)
    sst = float(((yv - yv.mean()) ** 2).sum())
    return HedgeFit(
        slope=slope,
        intercept=intercept,
        method=method,
        r_squared=1.0 - ssr / sst if sst > 0 else float("nan"),
        slope_stderr=stderr,
        residual_std=math.sqrt(ssr / (n - 2)),
        nobs=n,
    )


def rolling_hedge_ratio(y: pd.Series, x: pd.Series, window: int) -> pd.DataFrame:
    """Trailing-window OLS of ``y`` on ``x`` with intercept: the row at t uses bars t-w+1..t.

    ``slope = cov_w(y, x) / var_w(x)``, ``intercept = mean_w(y) - slope * mean_w(x)``:
    the same numbers as statsmodels RollingOLS, computed from rolling moments in
    milliseconds. The first ``window - 1`` rows, and windows where ``x`` is flat (relative
    std below 1e-10), are NaN.

    :param y: dependent leg. :param x: hedge leg (inner-joined with ``y``, NaNs dropped).
    :param window: number of bars in the trailing window (>= 3).
    :return: DataFrame with columns ``slope, intercept`` on the joined index.
    """
    if window < 3:
        raise ValueError(f"window must be at least 3 bars, got {window}")
    ys, xs = join_legs(y, x)
    if ys.empty:
        return pd.DataFrame({"slope": [], "intercept": []}, index=ys.index, dtype="float64")
    # Shifting by the first value (known at the start, so causal) keeps the rolling sums
    # small relative to the variances: no cancellation on high-priced symbols.
    y0, x0 = float(ys.iloc[0]), float(xs.iloc[0])
    yc, xc = ys - y0, xs - x0
    rx = xc.rolling(window, min_periods=window)
    var_x = rx.var()
    cov = xc.rolling(window, min_periods=window).cov(yc)
    mean_x = rx.mean()
    mean_y = yc.rolling(window, min_periods=window).mean()
    flat = var_x <= (1e-10 * max(abs(x0), 1e-300)) ** 2
    slope = (cov / var_x).mask(flat)
    intercept = (mean_y + y0) - slope * (mean_x + x0)
    return pd.DataFrame({"slope": slope, "intercept": intercept})


CHAN_DELTA = 1e-4  # default state noise when obs_var is given (Chan's parameterisation)
AUTO_DELTA = 0.1  # default state noise of the scale-free ("auto") filter
KALMAN_INIT_WINDOW = 100
KALMAN_OBS_FLOOR_REL = 1e-8  # auto mode: R >= (this x mean |y| of the first window)^2


def kalman_hedge_ratio(
    y: pd.Series,
    x: pd.Series,
    delta: float | None = None,
    obs_var: float | None = None,
    *,
    init_window: int = KALMAN_INIT_WINDOW,
) -> pd.DataFrame:
    """Dynamic slope and intercept from a Kalman filter (statsmodels' state-space filter).

    Model: ``y_t = slope_t x_t + intercept_t + e_t``, ``e_t ~ N(0, R)``, the state
    ``(slope, intercept)`` a random walk of covariance ``W``, started exactly diffuse (the
    first rows, until the data pin down both coefficients, are NaN). Two ways to set
    ``R`` and ``W``:

    * ``obs_var=None`` (default, *auto*, scale-free): ``R`` is the residual variance
      ``SSR / (w - 2)`` of an OLS fit of y on x over the first ``w = init_window`` bars, and
      ``W = delta * R * diag(1 / xbar^2, 0)`` with ``xbar`` the mean |x| of those bars: per
      bar, the slope's random step moves ``y`` (at x's level) by a variance ``delta`` times
      the observation noise; the intercept is constant (learned as in least squares).
      When x moves little relative to its level a slope change and an intercept change
      look alike; letting both drift makes the split arbitrary, so the slope alone drifts.
      Nothing depends on the units or level of the prices (tested: raw BTC-like prices
      and log prices behave alike). Rows before bar ``w - 1`` are NaN in every column:
      their ``R`` was estimated from bars after them. ``delta`` defaults to 0.1. When
      those bars fit exactly (y flat there), ``R`` is floored at ``(1e-8 * mean |y|)^2``
      (``attrs["obs_var_floored"]``); as ``W`` is proportional to ``R`` this changes
      only ``spread_std``, not the slope, intercept or spread.
    * ``obs_var`` given: Chan's parameterisation, ``R = obs_var`` and ``W = delta / (1 -
      delta) * I`` in the units of y and x (``0 <= delta < 1``, default 1e-4). Both are
      then in the units of y, so they suit only data of the scale they were chosen for.

    ``delta -> 0`` gives expanding-window OLS in both modes (tested).

    Columns, all using data up to t only:

    * ``slope``, ``intercept``: the *filtered* state, estimated from bars up to and
      including t.
    * ``slope_pred``, ``intercept_pred``: the *predicted* state, from bars up to t-1.
    * ``spread``: the one-step forecast error ``y_t - slope_pred x_t - intercept_pred``;
      ``spread_std``: its standard deviation. Use these (the predicted state) to judge bar
      t: the filtered state has already seen y_t and pulls the spread towards zero.

    ``attrs["obs_var"]`` and ``attrs["delta"]`` hold the values used.

    :raises ValueError: bad parameters, or (auto) x is 0 over the first window.

    :param y: dependent leg. :param x: hedge leg (inner-joined, NaNs dropped).
    :param delta: state noise (see above); None for the mode's default.
    :param obs_var: observation noise variance, or None to estimate it (auto mode).
    :param init_window: bars the auto mode estimates ``R`` and ``xbar`` on (>= 3).
    """
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    auto = obs_var is None
    if delta is None:
        delta = AUTO_DELTA if auto else CHAN_DELTA
    if auto and delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if not auto and not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) with a given obs_var, got {delta}")
    if obs_var is not None and obs_var <= 0:
        raise ValueError(f"obs_var must be positive, got {obs_var}")
    if init_window < 3:
        raise ValueError(f"init_window must be at least 3 bars, got {init_window}")
    ys, xs = join_legs(y, x)
    n = len(ys)
    cols = ["slope", "intercept", "slope_pred", "intercept_pred", "spread", "spread_std"]
    if n == 0 or (auto and n < init_window):
        empty = pd.DataFrame({c: np.nan for c in cols}, index=ys.index, dtype="float64")
        return empty
    yv, xv = ys.to_numpy(), xs.to_numpy()
    if auto:
        head = np.column_stack([np.ones(init_window), xv[:init_window]])
        coef = np.linalg.lstsq(head, yv[:init_window], rcond=None)[0]
        resid = yv[:init_window] - head @ coef
        obs_var = float(resid @ resid) / (init_window - 2)
        xbar = float(np.mean(np.abs(xv[:init_window])))
        if not xbar > 0:
            raise ValueError(
                f"x is 0 over the first {init_window} bars (log of a price of exactly 1?): "
                "the slope noise is relative to x's level; fit raw prices or give obs_var"
            )
        # An exact fit over the first window (y flat there: a thin symbol at 1 s, a
        # stablecoin) leaves R = 0. Floor it at (1e-8 of y's level)^2, far below any
        # tick. Since W is proportional to R, R's level cancels out of the gain: the
        # slope, intercept and spread do not depend on it, only spread_std does.
        level = float(np.mean(np.abs(yv[:init_window])))
        floor = (KALMAN_OBS_FLOOR_REL * (level if level > 0 else 1.0)) ** 2
        floored = not obs_var > floor
        obs_var = max(obs_var, floor)
        # The filter runs on x - x0 (x0 the first price: known at the start) with the
        # state (slope, level = intercept + slope x0): the same model, but a design of
        # O(price moves) instead of O(price level) keeps the diffuse start well conditioned.
        x0 = float(xv[0])
        q = delta * obs_var / xbar**2
        state_cov = q * np.array([[1.0, x0], [x0, x0 * x0]])
    else:
        x0, floored = 0.0, False
        state_cov = np.eye(2) * (delta / (1 - delta))
    kf = KalmanFilter(k_endog=1, k_states=2)
    kf.bind(yv.reshape(-1, 1).copy())
    design = np.empty((1, 2, n))
    design[0, 0], design[0, 1] = xv - x0, 1.0
    kf["design"] = design
    kf["obs_cov"] = np.array([[obs_var]])
    kf["transition"] = np.eye(2)
    kf["selection"] = np.eye(2)
    kf["state_cov"] = state_cov
    kf.initialize_diffuse()
    res = kf.filter()
    filtered = res.filtered_state.copy()
    pred = res.predicted_state[:, :n].copy()
    err = res.forecasts_error[0].copy()
    err_std = np.sqrt(res.forecasts_error_cov[0, 0].copy())
    filtered[1] -= filtered[0] * x0  # back from (slope, level) to (slope, intercept)
    pred[1] -= pred[0] * x0
    d = int(res.nobs_diffuse)
    first_filtered, first_pred = max(d - 1, 0), d
    if auto:  # R was estimated on bars 0..w-1: rows before w-1 must not use it
        first_filtered = max(first_filtered, init_window - 1)
        first_pred = max(first_pred, init_window - 1)
    filtered[:, :first_filtered] = np.nan
    pred[:, :first_pred] = np.nan
    err[:first_pred] = np.nan
    err_std[:first_pred] = np.nan
    frame = pd.DataFrame(
        {
            "slope": filtered[0],
            "intercept": filtered[1],
            "slope_pred": pred[0],
            "intercept_pred": pred[1],
            "spread": err,
            "spread_std": err_std,
        },
        index=ys.index,
    )
    frame.attrs.update(obs_var=obs_var, delta=delta, auto=auto, obs_var_floored=floored)
    return frame
