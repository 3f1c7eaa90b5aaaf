"""Every number the page shows, as pure functions of pandas objects.

No Streamlit, no SQL, no globals: the page reads bars from SQLite and passes them here;
tests call the same functions with numbers worked out independently. README.md (section
"Analytics") documents the method behind each statistic.

Conventions
-----------
* Time series are indexed by a tz-aware UTC ``DatetimeIndex`` (nanosecond unit on output).
* A *bars* frame has index = bar start (UTC, bins closed on the left) and the columns
  ``open, high, low, close, volume, quote_volume, taker_buy_volume, trades, vwap, empty``.
  ``empty`` is True for a bar with no trade: its close is carried forward from the last
  bar that traded, ``open = high = low = close``, the volumes and ``trades`` are 0 and
  ``vwap`` is NaN (no trade, no volume-weighted price).
* Nothing reported for time t uses data after t, except the static hedge fits, which are
  by definition a fit on the whole window they are given (see :func:`pair_frame`).

Bars live in ``bars.py``, the stationarity tests in ``stationarity.py`` and the backtest
in ``backtest.py``; all are re-exported here, so ``analytics`` stays the one public API:
the page imports from ``analytics`` only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from pairs_monitor.quant.backtest import BacktestResult, backtest
from pairs_monitor.quant.bars import (
    BAR_COLUMNS,
    _periods_per_year,
    _utc_ns,
    empty_bars,
    liquidity_mask,
    periods_per_year,
    price_stats,
    resample_bars,
    resample_trades,
    volume_ratio,
)
from pairs_monitor.quant.stationarity import (
    ADFResult,
    EngleGrangerResult,
    JohansenResult,
    adf_test,
    engle_granger,
    half_life,
    hurst,
    johansen,
    schwert_lag,
)

__all__ = [
    "AUTO_DELTA",
    "BAR_COLUMNS",
    "CHAN_DELTA",
    "ADFResult",
    "BacktestResult",
    "EngleGrangerResult",
    "HedgeFit",
    "JohansenResult",
    "adf_test",
    "align_closes",
    "backtest",
    "correlation_matrix",
    "empty_bars",
    "engle_granger",
    "half_life",
    "hedge_ratio",
    "hurst",
    "johansen",
    "kalman_hedge_ratio",
    "liquidity_mask",
    "pair_frame",
    "periods_per_year",
    "price_stats",
    "resample_bars",
    "resample_trades",
    "rolling_corr",
    "rolling_hedge_ratio",
    "scan_pairs",
    "schwert_lag",
    "spread",
    "stats_table",
    "volume_ratio",
    "zscore",
]

HedgeMethod = Literal["ols", "huber", "theil-sen"]
PairMethod = Literal["ols", "huber", "theil-sen", "rolling", "kalman"]

# ---------------------------------------------------------------- alignment, pairs


def align_closes(
    closes: Mapping[str, pd.Series] | pd.DataFrame,
    max_staleness: str | pd.Timedelta | None = None,
    log: bool = False,
    how: Literal["any", "all"] = "any",
) -> pd.DataFrame:
    """Put two or more legs on one clock: the union of their timestamps.

    Each leg is carried forward from its last observation only while that observation is
    at most ``max_staleness`` old; a row where any leg has no observation yet, or only a
    stale one, is dropped (``how="all"``: dropped only when every leg has none; the others
    are NaN there, for pairwise statistics over many legs). NaN values count as missing
    observations.

    :param closes: a mapping name -> price Series, or a DataFrame with one column per leg.
    :param max_staleness: how old a carried price may be (``"5s"``, a Timedelta); None
        carries forward without limit, ``0`` keeps only timestamps where all legs traded.
    :param log: return log prices.
    :param how: ``"any"`` drops a row with any leg missing, ``"all"`` only one with all.
    :return: DataFrame with one column per leg, sorted by time.
    """
    legs = dict(closes.items())
    if not legs:
        raise ValueError("align_closes needs at least one leg")
    clean = {}
    for name, s in legs.items():
        s = s.dropna()
        s.index = _utc_ns(s.index, f"leg {name!r}")
        s = s.sort_index()
        clean[name] = s[~s.index.duplicated(keep="last")]
    union = clean[next(iter(clean))].index
    for s in itertools.islice(clean.values(), 1, None):
        union = union.union(s.index)
    limit = None if max_staleness is None else pd.Timedelta(max_staleness)
    out = {}
    for name, s in clean.items():
        carried = s.reindex(union).ffill()
        if limit is not None:
            seen = pd.Series(s.index, index=s.index).reindex(union).ffill()
            carried = carried.where((union - pd.DatetimeIndex(seen)) <= limit)
        out[name] = carried
    if how not in ("any", "all"):
        raise ValueError(f"how must be 'any' or 'all', got {how!r}")
    frame = pd.DataFrame(out, index=union).dropna(how=how)
    if log:
        if (frame <= 0).any().any():
            raise ValueError("log prices need positive prices; found a price <= 0")
        frame = np.log(frame)
    return frame


def _pair(y: pd.Series, x: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Inner-join two series and drop rows where either is NaN."""
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
    ys, xs = _pair(y, x)
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
    ys, xs = _pair(y, x)
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
    if not auto and obs_var <= 0:
        raise ValueError(f"obs_var must be positive, got {obs_var}")
    if init_window < 3:
        raise ValueError(f"init_window must be at least 3 bars, got {init_window}")
    ys, xs = _pair(y, x)
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


def spread(
    y: pd.Series,
    x: pd.Series,
    slope: float | pd.Series,
    intercept: float | pd.Series = 0.0,
) -> pd.Series:
    """``y - slope * x - intercept``; Series coefficients are matched to ``y`` by time.

    :param y: dependent leg. :param x: hedge leg (aligned to ``y``'s index).
    :param slope: hedge ratio, scalar or Series (the value applied at each bar).
    :param intercept: scalar or Series.
    :return: Series named ``spread`` on ``y``'s index.
    """
    idx = y.index
    xs = x.reindex(idx) if isinstance(x, pd.Series) and not x.index.equals(idx) else x
    b = slope.reindex(idx) if isinstance(slope, pd.Series) else slope
    a = intercept.reindex(idx) if isinstance(intercept, pd.Series) else intercept
    return (y - b * xs - a).rename("spread")


def zscore(spread: pd.Series, window: int) -> pd.Series:
    """Trailing z-score: ``(s_t - mean(s_{t-w+1..t})) / std(s_{t-w+1..t})`` (ddof=1).

    The window includes bar t and nothing after it; the first ``window - 1`` rows, windows
    holding a NaN, and flat windows are NaN.

    :param spread: the series to normalise. :param window: bars in the window (>= 2).
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 bars, got {window}")
    roll = spread.rolling(window, min_periods=window)
    std = roll.std()
    z = (spread - roll.mean()) / std.mask(std <= 0)
    return z.rename("zscore")


def _log_returns(prices: pd.Series, name: str) -> pd.Series:
    if (prices <= 0).any():
        raise ValueError(f"{name} has a price <= 0; returns need positive prices")
    return np.log(prices).diff()


def rolling_corr(y: pd.Series, x: pd.Series, window: int) -> pd.Series:
    """Trailing correlation of one-bar log returns (not price levels) over ``window`` bars.

    :param y: prices (positive, not log). :param x: prices, inner-joined with ``y``.
    :param window: returns in the window (>= 3); the first ``window`` rows are NaN.
    """
    if window < 3:
        raise ValueError(f"window must be at least 3 bars, got {window}")
    ys, xs = _pair(y, x)
    ry, rx = _log_returns(ys, "y"), _log_returns(xs, "x")
    return ry.rolling(window, min_periods=window).corr(rx).rename("corr")


def pair_frame(
    y: pd.Series,
    x: pd.Series,
    window: int,
    method: PairMethod = "ols",
    log_prices: bool = False,
    *,
    hedge_window: int | None = None,
    delta: float | None = None,
    obs_var: float | None = None,
    init_window: int | None = None,
) -> pd.DataFrame:
    """Everything the live view and the Pair tab draw for one pair, in one call.

    Columns: ``y, x`` (the prices the hedge is fitted on: log prices when ``log_prices``),
    ``hedge_ratio, intercept`` (the coefficients applied at that bar), ``spread =
    y - hedge_ratio x - intercept``, ``zscore`` (trailing ``window``), ``corr`` (trailing
    ``window`` correlation of log returns of the raw prices).

    Look-ahead stance, by method:

    * ``ols``, ``huber``, ``theil-sen``: ONE static fit on all rows given, so every row's
      spread and z-score use a hedge ratio that has seen the whole displayed window. That
      describes the window; it is not what a trader could have known at each bar.
    * ``rolling``: strictly causal. The coefficients applied at bar t come from the
      trailing window ending at t-1 (``hedge_window`` bars, default ``window``), carried
      forward over flat windows, so the hedge never saw the bar it is judged on.
    * ``kalman``: strictly causal; the predicted state (data up to t-1) and its forecast
      error as the spread. ``delta``, ``obs_var`` and ``init_window`` (default ``window``)
      are passed to :func:`kalman_hedge_ratio` (``obs_var=None``: scale-free auto mode).

    :param y: dependent leg prices. :param x: hedge leg prices (inner-joined with ``y``).
    :param window: bars for the z-score and correlation windows.
    :param method: ``"ols" | "huber" | "theil-sen" | "rolling" | "kalman"``.
    :param log_prices: fit on log prices (the spread is then a log-price spread).
    :return: DataFrame with the columns above; ``attrs["hedge_fit"]`` holds the
        :class:`HedgeFit` of a static method.
    """
    ys, xs = _pair(y, x)
    fy, fx = ys, xs
    if log_prices:
        fy, fx = np.log(ys), np.log(xs)
    fit = None
    if method in ("ols", "huber", "theil-sen"):
        fit = hedge_ratio(fy, fx, method)
        slope = pd.Series(fit.slope, index=fy.index)
        intercept = pd.Series(fit.intercept, index=fy.index)
    elif method == "rolling":
        coef = rolling_hedge_ratio(fy, fx, hedge_window or window).shift(1).ffill()
        slope, intercept = coef["slope"], coef["intercept"]
    elif method == "kalman":
        coef = kalman_hedge_ratio(
            fy, fx, delta=delta, obs_var=obs_var, init_window=init_window or window
        )
        slope, intercept = coef["slope_pred"], coef["intercept_pred"]
    else:
        raise ValueError(
            f"unknown method {method!r}; use 'ols', 'huber', 'theil-sen', 'rolling' or 'kalman'"
        )
    s = (fy - slope * fx - intercept).rename("spread")
    frame = pd.DataFrame(
        {
            "y": fy,
            "x": fx,
            "hedge_ratio": slope,
            "intercept": intercept,
            "spread": s,
            "zscore": zscore(s, window),
            "corr": rolling_corr(ys, xs, window),
        }
    )
    frame.attrs["method"] = method
    if fit is not None:
        frame.attrs["hedge_fit"] = fit
    return frame


# ------------------------------------------------------------ many symbols, export


def _closes_frame(closes: Mapping[str, pd.Series] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(closes, pd.DataFrame):
        return closes
    return pd.DataFrame(dict(closes.items()))


def correlation_matrix(closes: Mapping[str, pd.Series] | pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of one-bar log returns between every pair of symbols.

    :param closes: one price column per symbol on a shared clock (e.g. from
        :func:`align_closes`); each pair uses the bars where both have a return.
    """
    frame = _closes_frame(closes)
    if (frame <= 0).any().any():
        raise ValueError("correlation_matrix needs positive prices")
    return np.log(frame).diff().corr()


def scan_pairs(
    closes: Mapping[str, pd.Series] | pd.DataFrame,
    log_prices: bool = False,
    lags: int | None = None,
    min_obs: int = 30,
    both_directions: bool = False,
) -> pd.DataFrame:
    """Test every pair of symbols for cointegration; best candidates first.

    For each pair (y = the earlier column, x = the later one; both orders with
    ``both_directions``): Engle-Granger (:func:`engle_granger`, fixed Schwert lag unless
    ``lags``), its OLS hedge ratio, the half-life of that OLS residual and the
    correlation of log returns. Rows are sorted by ``eg_pvalue`` then ``half_life``.
    The hedge is fitted on the same bars it is tested on: a screen, not a tradable
    signal. With n symbols this runs n(n-1)/2 tests, so expect a few false positives at
    5% (about 10 of 190 pairs under no cointegration at all).

    :param closes: one price column per symbol (e.g. from :func:`align_closes`).
    :param log_prices: test log prices instead of prices.
    :param lags: fixed ADF lag for the residual test.
    :param min_obs: pairs with fewer common bars are skipped.
    :param both_directions: also test x on y.
    :return: columns ``y, x, hedge_ratio, intercept, eg_stat, eg_pvalue, half_life, corr,
        nobs``.
    """
    frame = _closes_frame(closes).astype(np.float64)
    corr = correlation_matrix(frame)
    data = np.log(frame) if log_prices else frame
    pairs = list(itertools.combinations(frame.columns, 2))
    if both_directions:
        pairs += [(b, a) for a, b in pairs]
    rows = []
    for a, b in pairs:
        pair = data[[a, b]].dropna()
        if len(pair) < max(min_obs, 20):
            continue
        yv, xv = pair[a], pair[b]
        eg = engle_granger(yv, xv, lags=lags)
        resid = yv - eg.hedge_ratio * xv - eg.intercept
        rows.append(
            {
                "y": a,
                "x": b,
                "hedge_ratio": eg.hedge_ratio,
                "intercept": eg.intercept,
                "eg_stat": eg.statistic,
                "eg_pvalue": eg.pvalue,
                "half_life": half_life(resid),
                "corr": float(corr.loc[a, b]),
                "nobs": len(pair),
            }
        )
    columns = ["y", "x", "hedge_ratio", "intercept", "eg_stat", "eg_pvalue", "half_life"]
    table = pd.DataFrame(rows, columns=[*columns, "corr", "nobs"])
    return table.sort_values(["eg_pvalue", "half_life"], kind="stable").reset_index(drop=True)


def stats_table(
    bars: Mapping[str, pd.DataFrame],
    freq: str | None = None,
    window: int = 60,
    pair: tuple[str, str] | None = None,
    method: PairMethod = "rolling",
    log_prices: bool = False,
    periods_per_year: float | None = None,
    kalman: Mapping[str, float | int | None] | None = None,
) -> pd.DataFrame:
    """Per-bar rolling statistics for one or more symbols, flat and ready for CSV export.

    For each symbol ``S`` (bars re-aggregated to ``freq`` first when given):
    ``S_close, S_volume, S_trades, S_vwap, S_return`` (one-bar log return) and ``S_vol``
    (trailing realised volatility over ``window`` bars, annualised on 365 days, like
    :func:`price_stats`). With ``pair = (y, x)`` also the :func:`pair_frame` columns
    ``hedge_ratio, intercept, spread, zscore, corr`` (``method`` as there; the default
    ``rolling`` is causal). Rows are the union of the symbols' bars; every value at t
    uses bars up to t only, except the static pair methods (see :func:`pair_frame`).

    :param bars: symbol -> bars frame (e.g. 1-second bars from the database).
    :param freq: bar frequency to re-aggregate to (``"1min"``), or None to keep the bars.
    :param window: bars in the rolling windows.
    :param pair: ``(y_symbol, x_symbol)`` to add the pair columns, or None.
    :param method: hedge method for the pair columns.
    :param log_prices: fit the pair on log prices.
    :param periods_per_year: bars per year; inferred from each symbol's index when None.
    :param kalman: ``delta, obs_var, init_window`` for ``method="kalman"`` (see
        :func:`kalman_hedge_ratio`); None for its defaults.
    :return: DataFrame indexed by bar start (UTC), index named ``time``.
    """
    parts = []
    closes = {}
    for sym, b in bars.items():
        if freq is not None:
            b = resample_bars(b, freq)
        close = b["close"].astype(np.float64)
        closes[sym] = close
        ret = _log_returns(close, sym)
        ppy = _periods_per_year(b.index) if periods_per_year is None else periods_per_year
        vol = np.sqrt(ppy * (ret**2).rolling(window, min_periods=window).mean())
        vwap = b["vwap"] if "vwap" in b.columns else b["quote_volume"] / b["volume"]
        parts.append(
            pd.DataFrame(
                {
                    f"{sym}_close": close,
                    f"{sym}_volume": b["volume"],
                    f"{sym}_trades": b["trades"],
                    f"{sym}_vwap": vwap,
                    f"{sym}_return": ret,
                    f"{sym}_vol": vol,
                }
            )
        )
    if not parts:
        raise ValueError("stats_table needs bars for at least one symbol")
    table = pd.concat(parts, axis=1).sort_index()
    if pair is not None:
        ysym, xsym = pair
        if ysym not in closes or xsym not in closes:
            raise ValueError(f"pair {pair} names a symbol not in bars ({sorted(closes)})")
        kw = dict(kalman or {}) if method == "kalman" else {}
        pf = pair_frame(closes[ysym], closes[xsym], window, method, log_prices, **kw)
        table = table.join(pf[["hedge_ratio", "intercept", "spread", "zscore", "corr"]])
    table.index.name = "time"
    return table
