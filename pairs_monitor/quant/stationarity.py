"""Stationarity and mean-reversion statistics: ADF, Engle-Granger, Johansen, half-life, Hurst.

Part of the analytics API (import them from ``analytics``). Pure functions of pandas
objects; the tests are statsmodels' own (``adfuller``, ``coint``, ``coint_johansen``),
wrapped in small frozen results with a one-line verdict for the page.

Lag choice: ``adfuller``'s default AIC search over ``12 (n/100)^(1/4)`` lags fits that
many regressions and takes ~16 s on 86,400 bars. By default these tests use one fixed lag
from Schwert's rule ``floor(4 (n/100)^(1/4))`` (21 lags on 86,400 bars, 7 on 1,440), one
regression; pass ``autolag="AIC"`` to search ``0..lags`` instead (about ``lags + 1`` times
the cost).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tsa.stattools import adfuller, coint
from statsmodels.tsa.vector_ar.vecm import coint_johansen

__all__ = [
    "ADFResult",
    "EngleGrangerResult",
    "JohansenResult",
    "adf_test",
    "engle_granger",
    "half_life",
    "hurst",
    "johansen",
    "schwert_lag",
]


def schwert_lag(nobs: int, k: int = 4) -> int:
    """Schwert's (1989) rule of thumb for the ADF lag: ``floor(k (nobs / 100) ** 0.25)``.

    :param nobs: sample size. :param k: 4 (short, the default here) or 12 (long).
    """
    return int(k * (max(nobs, 0) / 100) ** 0.25)


# statsmodels 0.15 added adfuller(result_object=True) and warns on the tuple it returns
# without it (0.16 will return the object by default); 0.14 knows no such argument.
_ADFULLER_RESULT_OBJECT = "result_object" in inspect.signature(adfuller).parameters


class _Adfuller(NamedTuple):
    statistic: float
    pvalue: float
    lags: int
    nobs: int
    critical_values: dict[str, float]


def _adfuller(values: np.ndarray, maxlag: int, regression: str, autolag: str | None) -> _Adfuller:
    """``adfuller``'s statistic, p-value, lags, nobs and critical values on any statsmodels."""
    if _ADFULLER_RESULT_OBJECT:
        res = adfuller(
            values, maxlag=maxlag, regression=regression, autolag=autolag, result_object=True
        )
        return _Adfuller(res.statistic, res.pvalue, res.lags, res.nobs, res.critical_values)
    # The tuple: (stat, pvalue, usedlag, nobs, critvalues[, icbest with autolag]).
    stat, pvalue, lags, nobs, crit = adfuller(
        values, maxlag=maxlag, regression=regression, autolag=autolag
    )[:5]
    return _Adfuller(stat, pvalue, lags, nobs, crit)


def _crit(values) -> dict[str, float]:
    """statsmodels gives 1/5/10% critical values as a dict or a 3-array in that order."""
    if isinstance(values, dict):
        return {k: float(v) for k, v in values.items()}
    return {"1%": float(values[0]), "5%": float(values[1]), "10%": float(values[2])}


def _verdict(name: str, stat: float, pvalue: float, crit: dict[str, float], lags, nobs) -> str:
    five = crit["5%"]
    ok = stat < five
    head = (
        "stationary: unit root rejected at 5%"
        if ok
        else "not shown stationary: unit root not rejected at 5%"
    )
    return (
        f"{head} ({name} {stat:.3f} {'<' if ok else '>='} {five:.3f}, "
        f"p = {pvalue:.3g}, {lags} lags, n = {nobs:,})"
    )


@dataclass(frozen=True)
class ADFResult:
    """Augmented Dickey-Fuller test (H0: unit root). Critical values: MacKinnon (2010)."""

    statistic: float
    pvalue: float
    critical_values: dict[str, float]
    lags: int
    nobs: int
    regression: str
    verdict: str


@dataclass(frozen=True)
class EngleGrangerResult:
    """Engle-Granger two-step cointegration test (H0: no cointegration).

    Critical values and p-value are MacKinnon's for the residual of a 2-variable
    cointegrating regression (statsmodels ``coint``), not plain ADF values.
    ``hedge_ratio``/``intercept``: the OLS cointegrating regression ``y = a + b x``.
    """

    statistic: float
    pvalue: float
    critical_values: dict[str, float]
    lags: int
    nobs: int
    hedge_ratio: float
    intercept: float
    verdict: str


@dataclass(frozen=True)
class JohansenResult:
    """Johansen trace and max-eigenvalue tests (Osterwald-Lenum critical values).

    ``statistic``/``critical_values`` are the trace test of r = 0 (no cointegration);
    ``pvalue`` is None (statsmodels tabulates critical values, not p-values). ``rank``
    is the cointegration rank chosen by the sequential trace test at 5%;
    ``eigenvector`` is the first cointegrating vector normalised so its first weight is 1.
    """

    statistic: float
    pvalue: float | None
    critical_values: dict[str, float]
    lags: int
    nobs: int
    rank: int
    trace_stats: tuple[float, ...]
    trace_crit_5: tuple[float, ...]
    max_eig_stats: tuple[float, ...]
    max_eig_crit_5: tuple[float, ...]
    eigenvector: tuple[float, ...]
    columns: tuple[str, ...] = field(default=())
    verdict: str = ""


def _values(series: pd.Series | np.ndarray, what: str, minimum: int) -> np.ndarray:
    v = pd.Series(series).dropna().to_numpy(dtype=np.float64)
    if len(v) < minimum:
        raise ValueError(f"{what} needs at least {minimum} non-NaN points, got {len(v)}")
    return v


def adf_test(
    series: pd.Series,
    lags: int | None = None,
    regression: str = "c",
    autolag: str | None = None,
) -> ADFResult:
    """Augmented Dickey-Fuller test with statsmodels ``adfuller``.

    :param series: the series to test (NaNs dropped).
    :param lags: the fixed lag (``autolag=None``) or the largest lag searched; default
        Schwert's ``floor(4 (n/100)^(1/4))``.
    :param regression: ``"c"`` constant, ``"ct"`` constant and trend, ``"n"`` none.
    :param autolag: None (fixed lag, fast) or ``"AIC"``, ``"BIC"``, ``"t-stat"``.
    """
    v = _values(series, "adf_test", 20)
    lag = schwert_lag(len(v)) if lags is None else int(lags)
    res = _adfuller(v, lag, regression, autolag)
    crit = _crit(res.critical_values)
    stat, p = float(res.statistic), float(res.pvalue)
    return ADFResult(
        statistic=stat,
        pvalue=p,
        critical_values=crit,
        lags=int(res.lags),
        nobs=int(res.nobs),
        regression=regression,
        verdict=_verdict("ADF", stat, p, crit, int(res.lags), int(res.nobs)),
    )


def engle_granger(
    y: pd.Series,
    x: pd.Series,
    lags: int | None = None,
    trend: str = "c",
    autolag: str | None = None,
) -> EngleGrangerResult:
    """Engle-Granger cointegration test of ``y`` on ``x`` with statsmodels ``coint``.

    The test is not symmetric: it regresses ``y`` on ``x``. Lag choice as in
    :func:`adf_test` (fixed Schwert lag by default).

    :param y: dependent leg. :param x: other leg (inner-joined, NaNs dropped).
    :param lags: fixed lag, or the largest lag searched when ``autolag`` is set.
    :param trend: deterministic terms of the cointegrating regression, ``"c"`` or ``"ct"``.
    :param autolag: None or ``"AIC"``, ``"BIC"``, ``"t-stat"``.
    """
    joined = pd.concat([pd.Series(y), pd.Series(x)], axis=1, join="inner").dropna()
    n = len(joined)
    if n < 20:
        raise ValueError(f"engle_granger needs at least 20 common points, got {n}")
    yv, xv = joined.iloc[:, 0].to_numpy(np.float64), joined.iloc[:, 1].to_numpy(np.float64)
    lag = schwert_lag(n) if lags is None else int(lags)
    stat, p, crit_arr = coint(yv, xv, trend=trend, maxlag=lag, autolag=autolag)
    design = sm.add_constant(xv, has_constant="add")
    if trend == "ct":
        design = np.column_stack([design, np.arange(n)])
    params = sm.OLS(yv, design).fit().params
    used = lag
    if autolag is not None:  # coint does not report the lag its search chose
        resid = yv - design @ params
        used = int(_adfuller(resid, lag, "n", autolag).lags)
    nobs = n - used - 1
    crit = _crit(crit_arr)
    stat, p = float(stat), float(p)
    return EngleGrangerResult(
        statistic=stat,
        pvalue=p,
        critical_values=crit,
        lags=used,
        nobs=nobs,
        hedge_ratio=float(params[1]),
        intercept=float(params[0]),
        verdict=_verdict("EG", stat, p, crit, used, nobs)
        .replace("stationary: unit root rejected", "cointegrated: no-cointegration rejected")
        .replace("not shown stationary: unit root not rejected", "not shown cointegrated"),
    )


def johansen(frame: pd.DataFrame, det_order: int = 0, k_ar_diff: int = 1) -> JohansenResult:
    """Johansen test for two or more legs with statsmodels ``coint_johansen``.

    Caveat: for ``det_order >= 0`` statsmodels detrends the data before the test and then
    uses Osterwald-Lenum's tables (statsmodels issue #6168). In our simulation of two
    independent random walks (n = 1,000) that rejects r = 0 about 12% of the time at a
    nominal 5%; treat a marginal Johansen rank as weaker evidence than Engle-Granger.

    :param frame: one column per leg (rows with a NaN dropped); usually log prices.
    :param det_order: -1 no deterministic terms, 0 constant, 1 linear trend.
    :param k_ar_diff: lagged differences in the VECM.
    """
    data = frame.dropna()
    if data.shape[1] < 2:
        raise ValueError("johansen needs at least two columns (legs)")
    if data.shape[1] > 12:
        raise ValueError("johansen critical values exist for at most 12 legs")
    if len(data) < 20 + k_ar_diff:
        raise ValueError(f"johansen needs more rows than {len(data)}")
    res = coint_johansen(data.to_numpy(np.float64), det_order, k_ar_diff)
    trace, trace_cv = res.lr1, res.cvt  # cvt columns: 90%, 95%, 99%
    rank = 0
    while rank < len(trace) and trace[rank] > trace_cv[rank, 1]:
        rank += 1
    vec = res.evec[:, 0]
    vec = vec / vec[0] if vec[0] != 0 else vec
    crit = {"10%": float(trace_cv[0, 0]), "5%": float(trace_cv[0, 1]), "1%": float(trace_cv[0, 2])}
    nobs = len(data) - k_ar_diff - 1
    verdict = (
        f"cointegration rank {rank} at 5% (trace r=0: {trace[0]:.2f} "
        f"{'>' if trace[0] > crit['5%'] else '<='} {crit['5%']:.2f}; "
        f"{k_ar_diff} lagged differences, n = {nobs:,})"
    )
    return JohansenResult(
        statistic=float(trace[0]),
        pvalue=None,
        critical_values=crit,
        lags=k_ar_diff,
        nobs=nobs,
        rank=rank,
        trace_stats=tuple(float(v) for v in trace),
        trace_crit_5=tuple(float(v) for v in trace_cv[:, 1]),
        max_eig_stats=tuple(float(v) for v in res.lr2),
        max_eig_crit_5=tuple(float(v) for v in res.cvm[:, 1]),
        eigenvector=tuple(float(v) for v in vec),
        columns=tuple(str(c) for c in data.columns),
        verdict=verdict,
    )


def half_life(spread: pd.Series) -> float:
    """Half-life of mean reversion in bars, from the AR(1) fit ``s_t = a + phi s_{t-1} + e``.

    Equivalent to the discretised Ornstein-Uhlenbeck regression ``ds_t = a + b s_{t-1}``
    with ``phi = 1 + b``. Returns ``ln(0.5) / ln(phi)`` for ``0 < phi < 1``; ``inf`` when
    ``phi >= 1`` (random walk or explosive: not mean-reverting); for ``-1 < phi <= 0``
    (over-shooting) the half-life of ``|s|``, ``ln(0.5) / ln|phi|`` (0 when phi = 0);
    ``inf`` for ``phi <= -1``; NaN with fewer than 3 points or a flat series.

    :param spread: the spread (NaNs dropped).
    """
    v = pd.Series(spread).dropna().to_numpy(dtype=np.float64)
    if len(v) < 3:
        return float("nan")
    lag, cur = v[:-1], v[1:]
    lag_c = lag - lag.mean()
    var = float(lag_c @ lag_c)
    if var <= 0:
        return float("nan")
    phi = float(lag_c @ (cur - cur.mean())) / var
    if abs(phi) >= 1:
        return math.inf
    if phi == 0:
        return 0.0
    return math.log(0.5) / math.log(abs(phi))


def hurst(series: pd.Series, max_lag: int | None = None) -> float:
    """Hurst exponent of a level series (a price or a spread, not returns).

    Slope of ``log RMS(s_{t+k} - s_t)`` on ``log k`` over about 20 log-spaced lags
    ``k = 2 .. max_lag``: 0.5 for a random walk, below for mean reversion, above for
    trending (1 for a straight line).

    :param series: the level series (NaNs dropped).
    :param max_lag: largest lag; default ``min(100, n // 4)``. NaN if fewer than 20 points.
    """
    v = pd.Series(series).dropna().to_numpy(dtype=np.float64)
    n = len(v)
    if n < 20:
        return float("nan")
    top = min(100, n // 4) if max_lag is None else min(int(max_lag), n - 1)
    lags = np.unique(np.geomspace(2, max(top, 3), 20).astype(np.int64))
    rms = np.array([math.sqrt(float(np.mean((v[k:] - v[:-k]) ** 2))) for k in lags])
    if (rms <= 0).any():
        return float("nan")
    return float(np.polyfit(np.log(lags), np.log(rms), 1)[0])
