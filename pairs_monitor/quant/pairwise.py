"""Engle-Granger for every pair of many legs at once, as array operations.

The engine behind :func:`~pairs_monitor.quant.scan.scan_pairs`: the same statistics as
:func:`~pairs_monitor.quant.stationarity.engle_granger` (statsmodels ``coint`` with a
fixed lag), the half-life of its residual (:func:`half_life`, ``legs=2``) and the
out-of-sample check (:func:`~pairs_monitor.quant.scan.out_of_sample_check`), without a
Python loop over pairs.

Why it is fast: every regression of the scan is a regression on lags and differences of
the pair's spread ``e = y - h x``, which is linear in the two legs. So each entry of a
pair's Gram matrix ``sum_t r_i(t) r_j(t)`` (``r_i`` the i-th regressor of ``e``) is
``<u_i(y), u_j(y)> - h (<u_i(y), u_j(x)> + <u_i(x), u_j(y)>) + h^2 <u_i(x), u_j(x)>``
where ``u_i`` is that same regressor built from one leg alone. The cross products of all
legs are a few large matrix products (BLAS), computed once for all pairs of a block of
legs; a pair's regression is then a gather and a small solve (batched).

Exactness: the expansion loses to rounding what the spread cancels of the legs: a
regressor of the spread that is ``1 - rho`` smaller than those of the legs (a spread of
two almost equal series) keeps about ``log10(1 / (1 - rho))`` fewer digits. Pairs where
that passes ``FALLBACK_RATIO`` (1e-5: kept ~10 digits of ~16) are not computed here but
marked ``fallback``, and the scanner runs the per-pair functions on them (as it does for
a pair whose small system is singular). Legs with missing bars: the pairs
whose two legs share the same bars are computed together (one group per set of common
bars), so a gap costs a group, not a fallback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.tsa import adfvalues

from pairs_monitor.quant.stationarity import schwert_lag

__all__: list[str] = []  # no public name: scan_pairs is the API

#: A pair is handed back to the per-pair path when one of its regressors keeps less than
#: this share of the sum of squares of the legs' own (the digits lost to cancellation).
FALLBACK_RATIO = 1e-5
#: Most floats (rows x regressors x legs) in one block of legs' regressors: 64 MB.
MAX_BLOCK_FLOATS = 8_000_000
#: Most regressors x legs of one block: the cross-product matrix of two blocks is at most
#: this squared (32 MB).
MAX_BLOCK_WIDTH = 2_048
#: Most floats of one of the per-pair arrays a step holds (pairs x regressors^2): 8 MB.
MAX_STEP_FLOATS = 1_000_000
#: Half-life's level and Engle-Granger's test (``half_life(..., alpha=0.05)``).
HALF_LIFE_ALPHA = 0.05


def _flat(v: np.ndarray) -> bool:
    """``engle_granger``'s flat leg: relative standard deviation at most 1e-10."""
    return float(np.std(v - v[0])) <= 1e-10 * max(abs(float(v[0])), 1e-300)


def bar_grid(index: pd.Index) -> np.ndarray:
    """Each bar of the rows' clock: the row it is (float), NaN where a bar is missing.

    The grid ``half_life_fit`` puts a series on (stationarity's ``_on_grid``: the test of
    this module holds the two equal on gapped clocks): a ``DatetimeIndex`` on the grid of
    its smallest step when that grid is at most 20 times the rows and holds them all
    (duplicate stamps: the last row); any other index is consecutive rows.
    """
    rows = pd.Series(np.arange(len(index), dtype=np.float64), index=index)
    if isinstance(index, pd.DatetimeIndex) and len(rows) > 1:
        rows = rows[~index.duplicated(keep="last")].sort_index()
        stamps = pd.DatetimeIndex(rows.index)
        diffs = stamps[1:] - stamps[:-1]
        step = diffs[diffs > pd.Timedelta(0)].min()
        if step > pd.Timedelta(0) and (stamps[-1] - stamps[0]) / step <= 20 * len(rows):
            grid = pd.date_range(stamps[0], stamps[-1], freq=step)
            if len(grid) >= len(rows) and stamps.isin(grid).all():
                rows = rows.reindex(grid)
    return rows.to_numpy(dtype=np.float64)


def mackinnon_pvalues(stat: np.ndarray, regression: str = "c", n_series: int = 1) -> np.ndarray:
    """statsmodels' ``mackinnonp`` on an array: MacKinnon's (1994) asymptotic p-values.

    The same tables (imported from ``statsmodels.tsa.adfvalues``, not copied) and the
    same arithmetic, so each value equals ``mackinnonp(stat[i], regression, n_series)``:
    1 above the table's largest statistic, 0 below its smallest (``-inf`` too), NaN for
    NaN (and for ``inf`` where the table has no largest, as there).

    :param regression: ``"c"`` (constant; Engle-Granger uses it with ``n_series=2``),
        ``"n"``, ``"ct"``, ``"ctt"``.
    :param n_series: series believed I(1): 1 for ADF, 2 for a pair's residual.
    """
    stat = np.asarray(stat, dtype=np.float64)
    i = n_series - 1
    small = np.asarray(adfvalues._tau_smallps[regression][i])[::-1]
    large = np.asarray(adfvalues._tau_largeps[regression][i])[::-1]
    with np.errstate(invalid="ignore", over="ignore"):
        left = stat <= adfvalues._tau_stars[regression][i]
        p = norm.cdf(np.where(left, np.polyval(small, stat), np.polyval(large, stat)))
        p = np.where(stat > adfvalues._tau_maxs[regression][i], 1.0, p)
        p = np.where(stat < adfvalues._tau_mins[regression][i], 0.0, p)
    return p


@dataclass(frozen=True)
class Regressors:
    """One regression's columns as rows of the legs' values: column ``i`` on row ``t`` is
    ``values[plus[i][t]] - values[minus[i][t]]`` (``minus[i]`` None: a level). The last
    column is the dependent variable. ``center``: the regression has a constant (each
    column is demeaned over the rows, which gives the same slopes and t-values)."""

    plus: list[np.ndarray]
    minus: list[np.ndarray | None]
    center: bool

    @property
    def rows(self) -> int:
        return len(self.plus[0])

    @property
    def width(self) -> int:
        return len(self.plus)

    def of(self, values: np.ndarray) -> np.ndarray:
        """The columns for every leg of ``values`` (rows x legs): rows x width x legs."""
        out = np.empty((self.rows, self.width, values.shape[1]))
        for i, (plus, minus) in enumerate(zip(self.plus, self.minus, strict=True)):
            out[:, i] = values[plus] if minus is None else values[plus] - values[minus]
        if self.center:
            out -= out.mean(axis=0)
        return out


def adf_regressors(start: int, stop: int, lag: int, center: bool) -> Regressors:
    """The ADF regression of the rows ``start..stop-1`` of a series with ``lag`` lagged
    differences, as ``adfuller`` builds it: ``d e_t`` on ``e_{t-1}``, ``d e_{t-1..t-lag}``
    for ``t = start + lag + 1 .. stop - 1``."""
    first = start + lag + 1
    plus = [np.arange(first - 1, stop - 1)]
    minus: list[np.ndarray | None] = [None]
    for j in [*range(1, lag + 1), 0]:
        plus.append(np.arange(first - j, stop - j))
        minus.append(np.arange(first - j - 1, stop - j - 1))
    return Regressors(plus, minus, center)


def grid_df_regressors(pos: np.ndarray, lag: int) -> Regressors:
    """``half_life_fit``'s unit-root regression (no constant) on a gapped series: the rows
    of the grid ``pos`` (a row of the values per bar, NaN where a bar is missing) whose
    ``lag + 1`` previous bars and next bar are all present, as ``_df_stat`` takes them."""
    t = np.arange(lag, len(pos) - 1)
    present = np.isfinite(pos)
    ok = present[t + 1] & present[t]
    for j in range(1, lag + 1):
        ok &= present[t - j]
    t = t[ok]
    row = np.where(present, pos, -1).astype(np.int64)
    plus = [row[t]]
    minus: list[np.ndarray | None] = [None]
    for j in [*range(1, lag + 1), 0]:
        plus.append(row[t - j + 1])
        minus.append(row[t - j])
    return Regressors(plus, minus, center=False)


def pair_grams(
    values: np.ndarray, regressors: Regressors, y: np.ndarray, x: np.ndarray, h: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Gram matrices of ``regressors`` built on each pair's spread ``values[:, y] - h
    values[:, x]``, a block of legs at a time (memory stays bounded whatever the count).

    :param values: rows x legs. :param y, x: leg columns of each pair. :param h: hedges.
    :return: per block of pairs ``(which, grams, exact)``: the pairs' positions in ``y``,
        their ``width x width`` Gram matrices, and False where rounding may have cost more
        than ``FALLBACK_RATIO`` allows.
    """
    if len(y) == 0:
        return
    legs, width = values.shape[1], regressors.width
    size = max(
        1, min(legs, MAX_BLOCK_WIDTH // width, MAX_BLOCK_FLOATS // (regressors.rows * width))
    )
    block_y, block_x = y // size, x // size
    low, high = np.minimum(block_y, block_x), np.maximum(block_y, block_x)
    key = low * (legs // size + 1) + high
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    own = np.empty((legs, width, width))  # <u_i(leg), u_j(leg)> of every leg
    owned = np.zeros(legs // size + 1, dtype=bool)

    def block(b: int) -> np.ndarray:
        cols = regressors.of(values[:, b * size : (b + 1) * size])
        if not owned[b]:
            own[b * size : b * size + cols.shape[2]] = np.einsum("tib,tjb->bij", cols, cols)
            owned[b] = True
        return cols

    current, left = -1, np.empty((0, 0, 0))
    for first, last in zip(starts, [*starts[1:], len(order)], strict=True):
        which = order[first:last]
        lo, hi = int(low[which[0]]), int(high[which[0]])
        if lo != current:
            current, left = lo, block(lo)
        right = left if hi == lo else block(hi)
        shape = (width, left.shape[2], width, right.shape[2])
        cross = (left.reshape(len(left), -1).T @ right.reshape(len(right), -1)).reshape(shape)
        step = max(1, MAX_STEP_FLOATS // (width * width))
        for chunk in range(0, len(which), step):
            part = which[chunk : chunk + step]
            grams, exact = _grams(cross, own, y[part], x[part], h[part], block_y[part] == lo, size)
            yield part, grams, exact


def _grams(
    cross: np.ndarray,
    own: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    h: np.ndarray,
    y_low: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' Gram matrices from the legs' cross products (see :func:`pair_grams`)."""
    low, high = np.where(y_low, y, x), np.where(y_low, x, y)  # the legs in each block
    between = cross[:, low % size, :, high % size]  # <u_i(low), u_j(high)>: pairs x w x w
    mixed = between + between.transpose(0, 2, 1)
    own_y, own_x = own[y], own[x]
    hh = h[:, None, None]
    grams = own_y - hh * mixed + hh * hh * own_x
    kept = np.einsum("pii->pi", grams)
    whole = np.einsum("pii->pi", own_y) + hh[:, :, 0] ** 2 * np.einsum("pii->pi", own_x)
    return grams, (kept >= FALLBACK_RATIO * whole).all(axis=1)


def _solve(grams: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched solve; a singular system gives NaN and False instead of failing the batch."""
    try:
        return np.linalg.solve(grams, rhs), np.ones(len(grams), dtype=bool)
    except np.linalg.LinAlgError:
        out = np.full(rhs.shape, np.nan)
        ok = np.zeros(len(grams), dtype=bool)
        for i in range(len(grams)):
            try:
                out[i] = np.linalg.solve(grams[i], rhs[i])
                ok[i] = True
            except np.linalg.LinAlgError:
                pass
        return out, ok


def adf_tstats(grams: np.ndarray, rows: int, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """The t-value of the first regressor (the lagged level) in each pair's regression.

    :param grams: pairs x width x width, the dependent variable last.
    :param rows: observations of the regression. :param center: it has a constant.
    :return: the t-values and False where the system was singular or has no degrees of
        freedom (the caller computes those pairs one by one).
    """
    k = grams.shape[1] - 1
    dof = rows - k - int(center)
    if dof <= 0:
        return np.full(len(grams), np.nan), np.zeros(len(grams), dtype=bool)
    rhs = np.zeros((len(grams), k, 2))
    rhs[:, :, 0] = grams[:, :k, k]
    rhs[:, 0, 1] = 1.0
    solution, ok = _solve(grams[:, :k, :k], rhs)
    beta, inverse_00 = solution[:, :, 0], solution[:, 0, 1]
    ssr = grams[:, k, k] - np.einsum("pk,pk->p", grams[:, :k, k], beta)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = beta[:, 0] / np.sqrt(ssr / dof * inverse_00)
    return t, ok & (ssr > 0) & (inverse_00 > 0)


@dataclass
class PairStats:
    """The scan's in-sample and out-of-sample numbers of each pair (arrays, one per pair).

    ``tested``: the pair was tested (enough common bars, no flat leg); ``fallback``: it
    must be computed one by one (its numbers here are not set).
    """

    count: int
    tested: np.ndarray = field(init=False)
    fallback: np.ndarray = field(init=False)
    nobs: np.ndarray = field(init=False)
    hedge_ratio: np.ndarray = field(init=False)
    intercept: np.ndarray = field(init=False)
    eg_stat: np.ndarray = field(init=False)
    eg_pvalue: np.ndarray = field(init=False)
    half_life: np.ndarray = field(init=False)
    spread_std: np.ndarray = field(init=False)
    oos_hedge_ratio: np.ndarray = field(init=False)
    oos_pvalue: np.ndarray = field(init=False)
    last_row: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        for name in ("tested", "fallback"):
            setattr(self, name, np.zeros(self.count, dtype=bool))
        for name in ("nobs", "last_row"):
            setattr(self, name, np.zeros(self.count, dtype=np.int64))
        for name in (
            "hedge_ratio",
            "intercept",
            "eg_stat",
            "eg_pvalue",
            "half_life",
            "spread_std",
            "oos_hedge_ratio",
            "oos_pvalue",
        ):
            setattr(self, name, np.full(self.count, np.nan))


def pair_stats(
    values: np.ndarray,
    index: pd.Index,
    y: np.ndarray,
    x: np.ndarray,
    *,
    lags: int | None,
    min_obs: int,
    holdout: float,
    oos_min_bars: int,
) -> PairStats:
    """Engle-Granger, half-life and the out-of-sample check of every pair ``(y[i], x[i])``
    of the columns of ``values``, each on the rows where both legs have a value.

    :param values: rows x legs, NaN where a leg has no value.
    :param index: the rows' labels (a ``DatetimeIndex`` puts the half-life on its grid).
    :param lags: fixed ADF lag (default Schwert's for the pair's rows).
    :param min_obs: pairs with fewer common rows are not tested (at least 20).
    :param holdout: the share of the rows (the last) held out of the out-of-sample fit.
    :param oos_min_bars: fewest held-out rows the out-of-sample test runs on.
    """
    stats = PairStats(len(y))
    if len(y) == 0:
        return stats
    present = np.isfinite(values)
    patterns, pattern_of = np.unique(np.packbits(present, axis=0).T, axis=0, return_inverse=True)
    pattern_of = pattern_of.ravel()
    py, px = pattern_of[y], pattern_of[x]
    combos, combo_of = np.unique(
        np.minimum(py, px) * len(patterns) + np.maximum(py, px), return_inverse=True
    )
    order = np.argsort(combo_of.ravel(), kind="stable")
    starts = np.searchsorted(combo_of.ravel()[order], np.arange(len(combos)))
    groups: dict[bytes, list[np.ndarray]] = {}
    for first, last in zip(starts, [*starts[1:], len(order)], strict=True):
        members = order[first:last]
        mask = present[:, y[members[0]]] & present[:, x[members[0]]]
        groups.setdefault(mask.tobytes(), []).append(members)
    for mask_bytes, parts in groups.items():
        rows = np.flatnonzero(np.frombuffer(mask_bytes, dtype=bool))
        which = np.concatenate(parts)
        if len(rows) >= max(min_obs, 20):
            _group(stats, values, index, rows, which, y, x, lags, holdout, oos_min_bars)
    return stats


def _group(
    stats: PairStats,
    values: np.ndarray,
    index: pd.Index,
    rows: np.ndarray,
    which: np.ndarray,
    y_all: np.ndarray,
    x_all: np.ndarray,
    lags: int | None,
    holdout: float,
    oos_min_bars: int,
) -> None:
    """The pairs ``which``, whose common rows are ``rows``."""
    n = len(rows)
    legs = np.unique(np.r_[y_all[which], x_all[which]])
    local = np.searchsorted(legs, np.arange(values.shape[1]))
    data = values[np.ix_(rows, legs)]
    flat = np.array([_flat(data[:, j]) for j in range(len(legs))])
    y, x = local[y_all[which]], local[x_all[which]]
    keep = ~(flat[y] | flat[x])
    lag = schwert_lag(n) if lags is None else int(lags)
    if lag > n // 2 - 1:  # adfuller refuses it: engle_granger raises, the pair is skipped
        return
    which, y, x = which[keep], y[keep], x[keep]
    stats.tested[which] = True
    stats.nobs[which] = n
    stats.last_row[which] = rows[-1]
    means = data.mean(axis=0)
    centred = data - means
    cross = centred.T @ centred
    sxx, sxy, syy = cross[x, x], cross[y, x], cross[y, y]
    h = sxy / sxx
    ssr = syy - h * sxy
    # coint's own collinearity branch (R^2 >= 1 - 1.5e-6) lies inside this: per pair.
    fallback = ~(ssr >= FALLBACK_RATIO * syy)
    stats.hedge_ratio[which] = h
    stats.intercept[which] = means[y] - h * means[x]
    stats.spread_std[which] = np.sqrt(np.maximum(ssr, 0.0) / (n - 1))

    eg = adf_regressors(0, n, lag, center=False)
    t_eg = np.full(len(which), np.nan)
    for part, grams, exact in pair_grams(centred, eg, y, x, h):
        t, solved = adf_tstats(grams, eg.rows, center=False)
        t_eg[part] = t
        fallback[part] |= ~(exact & solved)
    stats.eg_stat[which] = t_eg
    stats.eg_pvalue[which] = mackinnon_pvalues(t_eg, "c", 2)

    stats.half_life[which] = _half_lives(centred, index[rows], y, x, h, lag, t_eg, fallback)
    _out_of_sample(stats, data, centred, which, y, x, (lags, holdout, oos_min_bars), fallback)
    stats.fallback[which] = fallback


def _half_lives(
    centred: np.ndarray,
    index: pd.Index,
    y: np.ndarray,
    x: np.ndarray,
    h: np.ndarray,
    eg_lag: int,
    t_eg: np.ndarray,
    fallback: np.ndarray,
) -> np.ndarray:
    """``half_life(spread, legs=2)`` of each pair's OLS residual, on the rows' bar grid."""
    n = len(centred)
    pos = bar_grid(index)
    present = np.isfinite(pos)
    adjacent = present[1:] & present[:-1]
    pairs_of_bars = int(adjacent.sum())
    if pairs_of_bars < 3:
        return np.full(len(y), np.nan)
    row = np.where(present, pos, -1).astype(np.int64)
    ar1 = Regressors([row[:-1][adjacent], row[1:][adjacent]], [None, None], center=True)
    phi = np.full(len(y), np.nan)
    se = np.full(len(y), np.nan)
    for part, grams, exact in pair_grams(centred, ar1, y, x, h):
        sll, slc, scc = grams[:, 0, 0], grams[:, 0, 1], grams[:, 1, 1]
        with np.errstate(invalid="ignore", divide="ignore"):  # pairs left to the fallback
            phi[part] = slc / sll
            resid = np.maximum(scc - phi[part] * slc, 0.0)
            se[part] = np.sqrt(resid / max(pairs_of_bars - 2, 1) / sll)
        fallback[part] |= ~exact

    lag = schwert_lag(int(present.sum()))
    test = grid_df_regressors(pos, lag)
    if test.rows < 3 * (lag + 2):  # too few complete windows: half_life_fit drops the lags
        lag, test = 0, grid_df_regressors(pos, 0)
    t = np.full(len(y), np.nan)
    if test.rows <= lag + 2:  # _df_stat gives no statistic: the AR(1)'s own t below
        pass
    elif lag == eg_lag and np.array_equal(pos, np.arange(n)):  # Engle-Granger's own test
        t = t_eg.copy()
    else:
        for part, grams, exact in pair_grams(centred, test, y, x, h):
            t[part], solved = adf_tstats(grams, test.rows, center=False)
            fallback[part] |= ~(exact & solved)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(~np.isfinite(t) & (se > 0), (phi - 1.0) / se, t)
        p = np.where(np.isfinite(t), mackinnon_pvalues(t, "c", 2), np.where(t < 0, 0.0, 1.0))
        reverting = (p < HALF_LIFE_ALPHA) & (phi > -1) & (phi < 1)
        life = np.where(phi == 0, 0.0, math.log(0.5) / np.log(np.abs(phi)))
    return np.where(reverting, life, np.inf)


def _out_of_sample(
    stats: PairStats,
    data: np.ndarray,
    centred: np.ndarray,
    which: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    settings: tuple[int | None, float, int],
    fallback: np.ndarray,
) -> None:
    """``out_of_sample_check``: OLS on the first rows, ADF with a constant on the tail."""
    lags, holdout, min_bars = settings
    n = len(centred)
    n_fit = n - math.floor(n * holdout)
    tail = n - n_fit
    if tail < min_bars or n_fit < 3:
        return
    one = np.ones(n_fit)
    movable = np.array(  # as out_of_sample_check judges a flat x: the rank of [1, x]
        [np.linalg.matrix_rank(np.column_stack([one, leg[:n_fit]])) == 2 for leg in data.T]
    )
    fit_c = centred[:n_fit] - centred[:n_fit].mean(axis=0)
    cross = fit_c.T @ fit_c
    h = cross[y, x] / cross[x, x]
    ok = movable[x]
    stats.oos_hedge_ratio[which[ok]] = h[ok]
    lag = schwert_lag(tail) if lags is None else min(int(lags), tail // 2 - 2)
    test = adf_regressors(n_fit, n, lag, center=True)
    pvalue = np.full(len(which), np.nan)
    for part, grams, exact in pair_grams(centred, test, y[ok], x[ok], h[ok]):
        t, solved = adf_tstats(grams, test.rows, center=True)
        at = np.flatnonzero(ok)[part]
        pvalue[at] = mackinnon_pvalues(t, "c", 1)
        fallback[at] |= ~(exact & solved)
    stats.oos_pvalue[which] = pvalue
