"""Many symbols at once: the correlation matrix of returns and the cointegration scan.

Both take one price column per symbol on a shared clock (e.g. from ``align_closes``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import cast

import numpy as np
import pandas as pd

from pairs_monitor.quant.stationarity import engle_granger, half_life

__all__ = ["correlation_matrix", "scan_pairs"]


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
                "corr": float(corr[b].loc[a]),
                "nobs": len(pair),
            }
        )
    columns = ["y", "x", "hedge_ratio", "intercept", "eg_stat", "eg_pvalue", "half_life"]
    table = pd.DataFrame(rows, columns=[*columns, "corr", "nobs"])
    return table.sort_values(["eg_pvalue", "half_life"], kind="stable").reset_index(drop=True)
