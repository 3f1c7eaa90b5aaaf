"""One pair of legs: aligned closes, spread, z-score, return correlation, ``pair_frame``.

``pair_frame`` is everything the live view and the Pair tab draw for one pair;
``stats_table`` flattens per-symbol and pair statistics into one frame for CSV export.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from pairs_monitor.quant.bars import as_utc_ns, infer_periods_per_year, resample_bars
from pairs_monitor.quant.hedge import (
    hedge_ratio,
    join_legs,
    kalman_hedge_ratio,
    rolling_hedge_ratio,
)

__all__ = [
    "PairMethod",
    "align_closes",
    "pair_frame",
    "rolling_corr",
    "spread",
    "stats_table",
    "zscore",
]

PairMethod = Literal["ols", "huber", "theil-sen", "rolling", "kalman"]


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
        s.index = as_utc_ns(s.index, f"leg {name!r}")
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
            fresh = np.asarray((union - pd.DatetimeIndex(seen)) <= limit)
            carried = carried.where(fresh)
        out[name] = carried
    if how not in ("any", "all"):
        raise ValueError(f"how must be 'any' or 'all', got {how!r}")
    frame = pd.DataFrame(out, index=union).dropna(how=how)
    if log:
        if (frame <= 0).any().any():
            raise ValueError("log prices need positive prices; found a price <= 0")
        frame = cast(pd.DataFrame, np.log(frame))
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
    """Trailing z-score of each bar against the ``window`` bars before it.

    ``z_t = (s_t - mean(s_{t-w..t-1})) / std(s_{t-w..t-1})`` (ddof=1): bar t is not part of
    its own mean and deviation, and nothing after t is used. Including it would bound
    ``|z|`` by ``(w - 1) / sqrt(w)`` (1.79 at w = 5: an entry at 2 could never be reached);
    excluded, a jump shows at its full size. For an i.i.d. normal spread ``z_t`` is
    ``sqrt(1 + 1/w)`` times a Student t with ``w - 1`` degrees of freedom, so a short
    window has fat tails. The first ``window`` rows, rows whose window or own value holds
    a NaN, and rows after a flat window (a std of 0) are NaN.

    :param spread: the series to normalise. :param window: bars in the window (>= 2).
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 bars, got {window}")
    roll = spread.shift(1).rolling(window, min_periods=window)
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
    ys, xs = join_legs(y, x)
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
    y - hedge_ratio x - intercept``, ``zscore`` (against the ``window`` bars before each
    bar, see :func:`zscore`), ``corr`` (trailing ``window`` correlation of log returns of
    the raw prices).

    Look-ahead stance, by method:

    * ``ols``, ``huber``, ``theil-sen``: ONE static fit on all rows given, so every row's
      spread and z-score use a hedge ratio that has seen the whole displayed window. That
      describes the window; it is not what a trader could have known at each bar.
    * ``rolling``: strictly causal. The coefficients applied at bar t come from the
      trailing window ending at t-1 (``hedge_window`` bars, default ``window``), carried
      forward over flat windows, so the hedge never saw the bar it is judged on.
    * ``kalman``: strictly causal; the predicted state (data up to t-1) and its forecast
      error as the spread. ``delta``, ``obs_var``, ``init_window`` (default ``window``)
      and ``log_prices`` are passed to :func:`kalman_hedge_ratio` (``obs_var=None``:
      scale-free auto mode).

    :param y: dependent leg prices. :param x: hedge leg prices (inner-joined with ``y``).
    :param window: bars for the z-score and correlation windows.
    :param method: ``"ols" | "huber" | "theil-sen" | "rolling" | "kalman"``.
    :param log_prices: fit on log prices (the spread is then a log-price spread).
    :return: DataFrame with the columns above; ``attrs["hedge_fit"]`` holds the
        :class:`HedgeFit` of a static method.
    """
    ys, xs = join_legs(y, x)
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
            fy,
            fx,
            delta=delta,
            obs_var=obs_var,
            init_window=init_window or window,
            log_prices=log_prices,
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
        ppy = (
            infer_periods_per_year(b.index, default=math.nan)
            if periods_per_year is None
            else periods_per_year
        )
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
    # Legs on different clocks (two venues) do not share every stamp: join them sorted.
    table = pd.concat(parts, axis=1, sort=True).sort_index()
    if pair is not None:
        ysym, xsym = pair
        if ysym not in closes or xsym not in closes:
            raise ValueError(f"pair {pair} names a symbol not in bars ({sorted(closes)})")
        kw: dict[str, Any] = dict(kalman or {}) if method == "kalman" else {}
        pf = pair_frame(closes[ysym], closes[xsym], window, method, log_prices, **kw)
        table = table.join(pf[["hedge_ratio", "intercept", "spread", "zscore", "corr"]])
    table.index.name = "time"
    return table
