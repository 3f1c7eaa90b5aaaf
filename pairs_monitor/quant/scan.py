"""Many symbols at once: the correlation matrix of returns and the cointegration scan.

Both take one price column per symbol on a shared clock (e.g. from ``align_closes``).

The scan's per-pair steps are separate functions (:func:`screen_pair` in sample,
:func:`out_of_sample_check` on the held-out tail) and the multiple-testing step is
:func:`bh_qvalues`, so that a vectorised scanner can replace the loop and keep the rules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from pairs_monitor.quant.stationarity import adf_test, engle_granger, half_life

__all__ = ["correlation_matrix", "scan_pairs"]

#: The scan's false discovery rate: a pair is a candidate only with ``eg_qvalue`` below it.
SCAN_FDR = 0.05
#: Share of each pair's common bars held out (the tail) for the out-of-sample check.
SCAN_HOLDOUT = 1 / 3
#: Level of the out-of-sample ADF test on the held-out spread.
SCAN_OOS_ALPHA = 0.05
#: Fewest held-out bars the out-of-sample test runs on (``adf_test``'s own minimum).
SCAN_OOS_MIN_BARS = 20


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
    return cast(pd.DataFrame, np.log(frame)).diff().corr()


def bh_qvalues(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of ``pvalues``, NaNs left out.

    ``q_(i) = min_{j >= i} m p_(j) / j`` over the p-values sorted ascending, capped at 1,
    with ``m`` the number of non-NaN p-values: rejecting every ``q < alpha`` keeps the
    expected share of false discoveries at most ``alpha`` (independent or positively
    dependent tests).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok], kind="stable")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    back = np.empty(m)
    back[order] = adjusted
    q[ok] = back
    return q


def screen_pair(y: pd.Series, x: pd.Series, lags: int | None) -> dict[str, Any]:
    """The in-sample screen of one pair on all its common bars: Engle-Granger, its OLS
    hedge and intercept, and the half-life of the residual (Engle-Granger's two legs).
    """
    eg = engle_granger(y, x, lags=lags)
    resid = y - eg.hedge_ratio * x - eg.intercept
    return {
        "hedge_ratio": eg.hedge_ratio,
        "intercept": eg.intercept,
        "eg_stat": eg.statistic,
        "eg_pvalue": eg.pvalue,
        "half_life": half_life(resid, legs=2),
    }


def out_of_sample_check(
    y: pd.Series,
    x: pd.Series,
    lags: int | None,
    holdout: float = SCAN_HOLDOUT,
    alpha: float = SCAN_OOS_ALPHA,
) -> dict[str, Any]:
    """Fit on the first bars, test the spread on the held-out tail.

    The hedge and intercept come from the OLS of ``y`` on ``x`` over the first
    ``1 - holdout`` of the common bars only; the spread ``y - h x - c`` on the remaining
    tail (no bar of it used in the fit) gets an ADF test with a constant (Schwert lag
    unless ``lags``; ordinary Dickey-Fuller critical values apply because nothing was
    estimated on the tail). The pair holds out of sample when that p-value is below
    ``alpha``. With fewer than ``SCAN_OOS_MIN_BARS`` tail bars, or in-sample legs that
    cannot be fitted, the p-value is NaN and the pair does not hold.

    :return: ``oos_hedge_ratio, oos_pvalue, holds_out_of_sample``.
    """
    n = len(y)
    n_fit = n - math.floor(n * holdout)
    nan: dict[str, Any] = {
        "oos_hedge_ratio": math.nan,
        "oos_pvalue": math.nan,
        "holds_out_of_sample": False,
    }
    if n - n_fit < SCAN_OOS_MIN_BARS or n_fit < 3:
        return nan
    yv, xv = y.to_numpy(np.float64), x.to_numpy(np.float64)
    design = np.column_stack([np.ones(n_fit), xv[:n_fit]])
    if np.linalg.matrix_rank(design) < 2:  # a flat x over the fit: no hedge to carry over
        return nan
    (c, h), *_ = np.linalg.lstsq(design, yv[:n_fit], rcond=None)
    tail = pd.Series(yv[n_fit:] - h * xv[n_fit:] - c)
    if float(np.ptp(tail.to_numpy())) == 0.0:
        return {**nan, "oos_hedge_ratio": float(h)}
    lag = None if lags is None else min(int(lags), len(tail) // 2 - 2)
    p = adf_test(tail, lags=lag, regression="c").pvalue
    return {
        "oos_hedge_ratio": float(h),
        "oos_pvalue": float(p),
        "holds_out_of_sample": bool(p < alpha),
    }


_COLUMNS = [
    "y",
    "x",
    "hedge_ratio",
    "intercept",
    "eg_stat",
    "eg_pvalue",
    "half_life",
    "corr",
    "nobs",
    "eg_qvalue",
    "oos_hedge_ratio",
    "oos_pvalue",
    "holds_out_of_sample",
    "candidate",
]


def scan_pairs(
    closes: Mapping[str, pd.Series] | pd.DataFrame,
    log_prices: bool = False,
    lags: int | None = None,
    min_obs: int = 30,
    both_directions: bool = False,
    *,
    fdr: float = SCAN_FDR,
    holdout: float = SCAN_HOLDOUT,
    oos_alpha: float = SCAN_OOS_ALPHA,
) -> pd.DataFrame:
    """Test every pair of symbols for cointegration; best first, candidates marked.

    For each pair (y = the earlier column, x = the later one; both orders with
    ``both_directions``), on the bars both have (:func:`screen_pair`): Engle-Granger
    (:func:`engle_granger`, fixed Schwert lag unless ``lags``), its OLS hedge ratio, the
    half-life of that OLS residual and the correlation of log returns. That hedge is
    fitted on the bars it is tested on: a screen, not a tradable signal.

    With n symbols this runs n(n-1)/2 tests: about 10 of 190 unrelated pairs show
    p < 0.05 by chance. So ``eg_qvalue`` is the Benjamini-Hochberg q-value over every
    pair tested (:func:`bh_qvalues`), and :func:`out_of_sample_check` refits the hedge on
    the first ``1 - holdout`` of the bars and ADF-tests the spread on the rest. A pair is
    a ``candidate`` only when ``eg_qvalue < fdr`` and it holds out of sample
    (``oos_pvalue < oos_alpha``). Pairs whose legs cannot be tested (too few common bars,
    a flat leg, one leg an exact linear function of the other) are left out.

    :param closes: one price column per symbol (e.g. from :func:`align_closes`).
    :param log_prices: test log prices instead of prices.
    :param lags: fixed ADF lag for the residual tests.
    :param min_obs: pairs with fewer common bars are skipped.
    :param both_directions: also test x on y (both count in the q-values).
    :param fdr: false discovery rate for ``candidate``.
    :param holdout: share of the bars (the most recent) held out of the fit.
    :param oos_alpha: level of the out-of-sample ADF test.
    :return: columns ``y, x, hedge_ratio, intercept, eg_stat, eg_pvalue, half_life, corr,
        nobs, eg_qvalue, oos_hedge_ratio, oos_pvalue, holds_out_of_sample, candidate``,
        sorted by ``eg_pvalue`` (so also by ``eg_qvalue``) then ``half_life``.
    """
    if not 0 < fdr < 1 or not 0 < oos_alpha < 1 or not 0 < holdout < 1:
        raise ValueError(f"need 0 < fdr, oos_alpha, holdout < 1; got {fdr}, {oos_alpha}, {holdout}")
    frame = _closes_frame(closes).astype(np.float64)
    corr = correlation_matrix(frame)
    data = cast(pd.DataFrame, np.log(frame)) if log_prices else frame
    pairs = list(itertools.combinations(frame.columns, 2))
    if both_directions:
        pairs += [(b, a) for a, b in pairs]
    rows = []
    for a, b in pairs:
        pair = data[[a, b]].dropna()
        if len(pair) < max(min_obs, 20):
            continue
        yv, xv = pair[a], pair[b]
        try:
            in_sample = screen_pair(yv, xv, lags)
        except ValueError:  # a flat leg or an exact linear pair: nothing to test
            continue
        rows.append(
            {
                "y": a,
                "x": b,
                **in_sample,
                "corr": float(corr[b].loc[a]),
                "nobs": len(pair),
                **out_of_sample_check(yv, xv, lags, holdout, oos_alpha),
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in _COLUMNS if c not in ("eg_qvalue", "candidate")])
    table["eg_qvalue"] = bh_qvalues(table["eg_pvalue"].to_numpy(np.float64))
    table["holds_out_of_sample"] = table["holds_out_of_sample"].astype(bool)
    table["candidate"] = (table["eg_qvalue"] < fdr) & table["holds_out_of_sample"]
    table = table[_COLUMNS]
    return table.sort_values(["eg_pvalue", "half_life"], kind="stable").reset_index(drop=True)
