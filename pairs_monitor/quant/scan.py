"""Many symbols at once: the correlation matrix of returns and the cointegration scan.

Both take one price column per symbol on a shared clock (e.g. from ``align_closes``).

The scan's per-pair steps are separate functions (:func:`screen_pair` in sample,
:func:`out_of_sample_check` on the held-out tail) and the multiple-testing step is
:func:`bh_qvalues`. :func:`scan_pairs` computes the per-pair steps for all pairs at once
as array operations (``pairwise.py``) and calls the per-pair functions only on the few
pairs that path hands back; the results are the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from pairs_monitor.quant.pairwise import pair_stats
from pairs_monitor.quant.stationarity import adf_test, engle_granger, half_life

__all__ = ["SCAN_FEE_BPS", "correlation_matrix", "scan_pairs", "scan_signals"]

#: The scan's false discovery rate: a pair is a candidate only with ``eg_qvalue`` below it.
SCAN_FDR = 0.05
#: Share of each pair's common bars held out (the tail) for the out-of-sample check.
SCAN_HOLDOUT = 1 / 3
#: Level of the out-of-sample ADF test on the held-out spread.
SCAN_OOS_ALPHA = 0.05
#: Fewest held-out bars the out-of-sample test runs on (``adf_test``'s own minimum).
SCAN_OOS_MIN_BARS = 20
#: Default taker fee per leg and fill, bps: Binance spot's standard tier, as the
#: backtest's ``SPOT_TAKER_FEE_BPS`` (a module below that one cannot import it).
SCAN_FEE_BPS = 10.0
#: |z| at which ``scan_signals`` counts a signal: the backtest's default entry.
SCAN_ENTRY_Z = 2.0


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
    "spread_std",
    "spread_std_bps",
    "round_trip_bps",
    "tradable",
]
_PER_PAIR = [
    "hedge_ratio",
    "intercept",
    "eg_stat",
    "eg_pvalue",
    "half_life",
    "nobs",
    "oos_hedge_ratio",
    "oos_pvalue",
    "spread_std",
]


def _one_pair(
    y: pd.Series, x: pd.Series, lags: int | None, holdout: float, alpha: float
) -> dict[str, Any] | None:
    """A pair the array path hands back (see ``pairwise``): the per-pair functions, or
    None when the pair cannot be tested (an exact linear pair, a flat leg)."""
    try:
        in_sample = screen_pair(y, x, lags)
    except ValueError:
        return None
    resid = y.to_numpy() - in_sample["hedge_ratio"] * x.to_numpy() - in_sample["intercept"]
    return {
        **in_sample,
        "nobs": len(y),
        "spread_std": float(np.std(resid, ddof=1)),
        **out_of_sample_check(y, x, lags, holdout, alpha),
    }


def _fees(fee_bps: float | Mapping[str, float], columns: pd.Index) -> np.ndarray:
    if isinstance(fee_bps, Mapping):
        missing = [c for c in columns if c not in fee_bps]
        if missing:
            raise ValueError(f"scan_pairs: fee_bps has no fee for {missing}")
        return np.array([float(fee_bps[c]) for c in columns])
    return np.full(len(columns), float(fee_bps))


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
    fee_bps: float | Mapping[str, float] = SCAN_FEE_BPS,
) -> pd.DataFrame:
    """Test every pair of symbols for cointegration; best first, candidates marked.

    For each pair (y = the earlier column, x = the later one; both orders with
    ``both_directions``), on the bars both have: Engle-Granger (the statistic and p-value
    of :func:`engle_granger`, fixed Schwert lag unless ``lags``), its OLS hedge ratio, the
    half-life of that OLS residual (:func:`half_life`, ``legs=2``) and the correlation of
    log returns. That hedge is fitted on the bars it is tested on: a screen, not a
    tradable signal. All pairs are computed together as array operations
    (``pairwise.py``); the few whose legs nearly cancel are computed one by one
    (:func:`screen_pair`), with the same results.

    With n symbols this runs n(n-1)/2 tests: about 10 of 190 unrelated pairs show
    p < 0.05 by chance. So ``eg_qvalue`` is the Benjamini-Hochberg q-value over every
    pair tested (:func:`bh_qvalues`), and :func:`out_of_sample_check` refits the hedge on
    the first ``1 - holdout`` of the bars and ADF-tests the spread on the rest. A pair is
    a ``candidate`` only when ``eg_qvalue < fdr`` and it holds out of sample
    (``oos_pvalue < oos_alpha``). Pairs whose legs cannot be tested (too few common bars,
    a flat leg, one leg an exact linear function of the other) are left out.

    Whether a candidate pays its fees: ``spread_std`` is the standard deviation of the
    spread ``y - h x - c`` over the bars (its units: prices, or logs with
    ``log_prices``); ``spread_std_bps`` the same per unit of gross notional on the last
    bar (``y + |h| x``; in logs ``1 + |h|``, the legs sized in value); ``round_trip_bps``
    the taker fees of opening and closing both legs on that notional. A candidate is
    ``tradable`` when its half-life is finite and ``spread_std_bps >= round_trip_bps``:
    a trade from 2 standard deviations back to the mean then keeps at least its cost.

    :param closes: one price column per symbol (e.g. from :func:`align_closes`).
    :param log_prices: test log prices instead of prices.
    :param lags: fixed ADF lag for the residual tests (>= 0).
    :param min_obs: pairs with fewer common bars are skipped.
    :param both_directions: also test x on y (both count in the q-values).
    :param fdr: false discovery rate for ``candidate``.
    :param holdout: share of the bars (the most recent) held out of the fit.
    :param oos_alpha: level of the out-of-sample ADF test.
    :param fee_bps: taker fee per leg and fill in bps: one for all, or one per column.
    :return: columns ``y, x, hedge_ratio, intercept, eg_stat, eg_pvalue, half_life, corr,
        nobs, eg_qvalue, oos_hedge_ratio, oos_pvalue, holds_out_of_sample, candidate,
        spread_std, spread_std_bps, round_trip_bps, tradable``, sorted by ``eg_pvalue``
        (so also by ``eg_qvalue``) then ``half_life``.
    """
    if not 0 < fdr < 1 or not 0 < oos_alpha < 1 or not 0 < holdout < 1:
        raise ValueError(f"need 0 < fdr, oos_alpha, holdout < 1; got {fdr}, {oos_alpha}, {holdout}")
    if lags is not None and int(lags) < 0:
        raise ValueError(f"scan_pairs: lags must be >= 0 (or None for Schwert's), got {lags}")
    frame = _closes_frame(closes).astype(np.float64)
    fees = _fees(fee_bps, frame.columns)
    corr = correlation_matrix(frame).to_numpy()
    data = cast(pd.DataFrame, np.log(frame)) if log_prices else frame
    values = data.to_numpy(np.float64)
    ys, xs = (np.array(side, dtype=np.int64) for side in np.triu_indices(frame.shape[1], 1))
    if both_directions:
        ys, xs = np.r_[ys, xs], np.r_[xs, ys]
    stats = pair_stats(
        values,
        data.index,
        ys,
        xs,
        lags=lags,
        min_obs=min_obs,
        holdout=holdout,
        oos_min_bars=SCAN_OOS_MIN_BARS,
    )
    columns = {name: getattr(stats, name).astype(np.float64) for name in _PER_PAIR}
    tested = stats.tested.copy()
    present = np.isfinite(values)
    for i in np.flatnonzero(stats.fallback):
        rows = np.flatnonzero(present[:, ys[i]] & present[:, xs[i]])
        leg_y, leg_x = (pd.Series(values[rows, j], index=data.index[rows]) for j in (ys[i], xs[i]))
        one = _one_pair(leg_y, leg_x, lags, holdout, oos_alpha)
        tested[i] = one is not None
        for name in _PER_PAIR:
            if one is not None:
                columns[name][i] = one[name]
    keep = np.flatnonzero(tested)
    ys, xs = ys[keep], xs[keep]
    table = pd.DataFrame({name: column[keep] for name, column in columns.items()})
    table.insert(0, "x", frame.columns[xs])
    table.insert(0, "y", frame.columns[ys])
    table["nobs"] = table["nobs"].astype(np.int64)
    table["corr"] = corr[ys, xs]
    table["eg_qvalue"] = bh_qvalues(table["eg_pvalue"].to_numpy(np.float64))
    table["holds_out_of_sample"] = (table["oos_pvalue"] < oos_alpha).to_numpy(bool)
    table["candidate"] = (table["eg_qvalue"] < fdr) & table["holds_out_of_sample"]
    _costs(table, frame.to_numpy(np.float64), stats.last_row[keep], ys, xs, fees, log_prices)
    table = table[_COLUMNS]
    return table.sort_values(["eg_pvalue", "half_life"], kind="stable").reset_index(drop=True)


def _costs(
    table: pd.DataFrame,
    prices: np.ndarray,
    last_row: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    fees: np.ndarray,
    log_prices: bool,
) -> None:
    """``spread_std_bps``, ``round_trip_bps`` and ``tradable`` (see :func:`scan_pairs`)."""
    hedge = np.abs(table["hedge_ratio"].to_numpy())
    if log_prices:  # the legs sized in value: 1 of y against |h| of x
        value_y, value_x = np.ones(len(table)), hedge
    else:
        rows = _last_common_rows(prices, ys, xs, last_row)
        value_y, value_x = prices[rows, ys], hedge * prices[rows, xs]
    notional = value_y + value_x
    table["spread_std_bps"] = 1e4 * table["spread_std"].to_numpy() / notional
    table["round_trip_bps"] = 2 * (fees[ys] * value_y + fees[xs] * value_x) / notional
    table["tradable"] = (
        table["candidate"].to_numpy(bool)
        & np.isfinite(table["half_life"].to_numpy())
        & (table["spread_std_bps"] >= table["round_trip_bps"]).to_numpy(bool)
    )


def _last_common_rows(
    prices: np.ndarray, ys: np.ndarray, xs: np.ndarray, last_row: np.ndarray
) -> np.ndarray:
    """Each pair's last row with both prices (``last_row`` where the array path set it)."""
    rows = last_row.copy()
    both = np.isfinite(prices[rows, ys]) & np.isfinite(prices[rows, xs])
    for i in np.flatnonzero(~both | (rows == 0)):
        common = np.flatnonzero(np.isfinite(prices[:, ys[i]]) & np.isfinite(prices[:, xs[i]]))
        rows[i] = common[-1]
    return rows


def scan_signals(
    closes: Mapping[str, pd.Series] | pd.DataFrame,
    table: pd.DataFrame,
    *,
    log_prices: bool = False,
    entry: float = SCAN_ENTRY_Z,
) -> pd.DataFrame:
    """Where each scanned pair's spread stands on its last bar, and its last signal.

    For each row of ``table`` (``scan_pairs``' result on the same ``closes``): the spread
    ``y - hedge_ratio x - intercept`` on the bars both legs have, its z-score against the
    scan's own fit (``spread / spread_std``), on the last such bar, and the last bar whose
    ``|z| >= entry`` (a z-score strategy's entry: short the spread above, long below).

    :param log_prices: as passed to ``scan_pairs``.
    :param entry: the entry level in standard deviations.
    :return: indexed like ``table``: ``last_bar`` (index label), ``zscore``,
        ``signal_bar`` (index label; missing, ``NaT`` on a time index, when no bar
        reached ``entry``), ``signal_z`` (NaN then).
    """
    frame = _closes_frame(closes).astype(np.float64)
    data = cast(pd.DataFrame, np.log(frame)) if log_prices else frame
    out = []
    fit = table[["hedge_ratio", "intercept", "spread_std"]].to_numpy(np.float64)
    for y, x, (hedge, intercept, std) in zip(table["y"], table["x"], fit, strict=True):
        pair = data[[y, x]].dropna()
        z = (pair[y].to_numpy() - hedge * pair[x].to_numpy() - intercept) / std
        hits = np.flatnonzero(np.abs(z) >= entry)
        out.append(
            {
                "last_bar": pair.index[-1] if len(pair) else None,
                "zscore": float(z[-1]) if len(z) else math.nan,
                "signal_bar": pair.index[hits[-1]] if len(hits) else None,
                "signal_z": float(z[hits[-1]]) if len(hits) else math.nan,
            }
        )
    return pd.DataFrame(
        out, index=table.index, columns=["last_bar", "zscore", "signal_bar", "signal_z"]
    )
