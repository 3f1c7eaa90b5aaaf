"""OHLCV bars from trades, or coarser bars from finer ones (part of the ``analytics`` API).

A bars frame has index = bar start (UTC, nanoseconds, bins closed on the left) and the
columns in ``BAR_COLUMNS``. ``empty`` is True for a bar with no trade: its close is
carried forward from the last bar that traded, ``open = high = low = close``, the volumes
and ``trades`` are 0 and ``vwap`` is NaN. Both resamplers share one aggregation core, so
1-second bars re-aggregated to 1 minute equal 1-minute bars built from the trades.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pandas as pd

__all__ = [
    "BAR_COLUMNS",
    "empty_bars",
    "liquidity_mask",
    "periods_per_year",
    "price_stats",
    "resample_bars",
    "resample_trades",
    "volume_ratio",
]

BAR_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "trades",
    "vwap",
    "empty",
)
_NS_PER_DAY = 86_400 * 10**9
_SECONDS_PER_YEAR = 365 * 86_400


def as_utc_ns(index: pd.Index, what: str) -> pd.DatetimeIndex:
    """Return ``index`` as a UTC, nanosecond DatetimeIndex or say what is wrong with it."""
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(f"{what} must be indexed by a DatetimeIndex, got {type(index).__name__}")
    if index.tz is None:
        raise ValueError(
            f"{what} has a naive DatetimeIndex; localise it first, e.g. .tz_localize('UTC')"
        )
    return index.tz_convert("UTC").as_unit("ns")


def _fixed_step_ns(freq: str | pd.DateOffset) -> int | None:
    """Length of a bar in ns for fixed-length frequencies (s, min, h, D on UTC), else None."""
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Tick):
        step = int(offset.nanos)
    elif type(offset) is pd.offsets.Day:  # not a Tick in pandas 3, but fixed on a UTC clock
        step = offset.n * _NS_PER_DAY
    else:
        return None
    if step <= 0:
        raise ValueError(f"bar frequency must be positive, got {freq!r}")
    return step


def _bin_codes(ns: np.ndarray, freq: str | pd.DateOffset) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Map sorted ns timestamps to bar numbers 0..m-1 and return the m bar starts.

    Fixed-length bars are aligned on the Unix epoch, so a bar's boundaries never depend on
    where the data starts (the live page always sees the same bars). Calendar frequencies
    (W, MS, ...) fall back to pandas' own bins, closed and labelled on the left.
    """
    step = _fixed_step_ns(freq)
    if step is not None:
        bins = ns // step
        first = bins[0]
        starts = (np.arange(first, bins[-1] + 1, dtype=np.int64) * step).view("M8[ns]")
        return bins - first, pd.DatetimeIndex(starts).tz_localize("UTC")
    probe = pd.Series(0, index=pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC"))
    counts = probe.resample(freq, closed="left", label="left").size()
    labels = cast(pd.DatetimeIndex, counts.index).as_unit("ns")
    return np.searchsorted(labels.asi8, ns, side="right") - 1, labels


def empty_bars() -> pd.DataFrame:
    """A bars frame with no rows: the columns, dtypes and index type of any other."""
    frame = pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in BAR_COLUMNS[:-2]}
        | {"trades": pd.Series(dtype="int64"), "vwap": pd.Series(dtype="float64")}
        | {"empty": pd.Series(dtype="bool")},
        index=pd.DatetimeIndex([], tz="UTC", name="time").as_unit("ns"),
    )
    return frame[list(BAR_COLUMNS)]


def _aggregate(
    ns: np.ndarray,
    traded: np.ndarray,
    cols: dict[str, np.ndarray],
    freq: str | pd.DateOffset,
) -> pd.DataFrame:
    """Shared core of both resamplers: rows (trades or finer bars) to bars.

    ``cols`` holds per-row open, high, low, close, volume, quote_volume, taker_buy_volume,
    trades (a trade is a row with open = high = low = close = price and trades = 1);
    ``traded`` says which rows hold at least one trade (only those set prices).
    """
    codes, labels = _bin_codes(ns, freq)
    m = len(labels)
    out: dict[str, np.ndarray] = {}
    for name in ("volume", "quote_volume", "taker_buy_volume", "trades"):
        out[name] = np.bincount(codes, weights=cols[name], minlength=m)
    out["trades"] = np.rint(out["trades"]).astype(np.int64)

    sel = np.flatnonzero(traded)
    price = {k: np.full(m, np.nan) for k in ("open", "high", "low", "close")}
    if len(sel):
        c = codes[sel]
        first = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        last = np.r_[first[1:], len(c)] - 1
        bars = c[first]
        price["open"][bars] = cols["open"][sel[first]]
        price["close"][bars] = cols["close"][sel[last]]
        price["high"][bars] = np.maximum.reduceat(cols["high"][sel], first)
        price["low"][bars] = np.minimum.reduceat(cols["low"][sel], first)
    empty = out["trades"] == 0
    close = pd.Series(price["close"]).ffill().to_numpy()
    if np.isnan(close).any():
        # Leading bars with no trade (only possible from finer bars that begin empty):
        # their close is the finer bars' carried close.
        last_any = np.full(m, np.nan)
        last_any[codes] = cols["close"]  # later rows overwrite earlier ones: the last row wins
        close = np.where(np.isnan(close), last_any, close)
    for k in ("open", "high", "low"):
        price[k] = np.where(empty, close, price[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(out["volume"] > 0, out["quote_volume"] / out["volume"], np.nan)
    frame = pd.DataFrame(
        {
            "open": price["open"],
            "high": price["high"],
            "low": price["low"],
            "close": close,
            **out,
            "vwap": vwap,
            "empty": empty,
        },
        index=labels.rename("time"),
    )
    return frame[list(BAR_COLUMNS)]


def resample_trades(trades: pd.DataFrame, freq: str | pd.DateOffset) -> pd.DataFrame:
    """Aggregate trades into OHLCV bars of any pandas frequency; empty bars stay explicit.

    Bars of fixed length (``"1s"``, ``"1min"``, ``"5min"``, ``"1h"``, ``"1D"``) are aligned on
    the Unix epoch; calendar frequencies use pandas' bins, closed and labelled on the left.
    Open/close are the first/last trade of the bar in input order, so trades sharing a
    timestamp must come in trade-id order (they are kept in that order, stable sort).

    :param trades: indexed by trade time (tz-aware DatetimeIndex) with columns ``price``,
        ``qty`` and ``buyer_is_maker`` (True when the taker sold).
    :param freq: a pandas frequency, e.g. ``"1s"`` or ``"5min"``.
    :return: a bars frame (see the module docstring) from the first trade's bar to the
        last trade's bar, one row per bar.
    """
    missing = {"price", "qty", "buyer_is_maker"} - set(trades.columns)
    if missing:
        raise ValueError(
            f"trades lacks column(s) {sorted(missing)}; need price, qty, buyer_is_maker"
        )
    if trades.empty:
        return empty_bars()
    ns = as_utc_ns(trades.index, "trades").asi8
    price = trades["price"].to_numpy(dtype=np.float64)
    qty = trades["qty"].to_numpy(dtype=np.float64)
    taker_sold = trades["buyer_is_maker"].to_numpy(dtype=bool)
    if not (ns[1:] >= ns[:-1]).all():
        order = np.argsort(ns, kind="stable")
        ns, price, qty, taker_sold = ns[order], price[order], qty[order], taker_sold[order]
    cols = {
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": qty,
        "quote_volume": price * qty,
        "taker_buy_volume": np.where(taker_sold, 0.0, qty),
        "trades": np.ones(len(price)),
    }
    return _aggregate(ns, np.ones(len(price), dtype=bool), cols, freq)


def resample_bars(bars: pd.DataFrame, freq: str | pd.DateOffset) -> pd.DataFrame:
    """Re-aggregate finer bars (e.g. the stored 1-second bars) into coarser ones.

    Same semantics as :func:`resample_trades` on the underlying trades: open of the first
    bar that traded, close of the last, high/low over the bars that traded, volumes and
    trade counts summed, VWAP = quote volume / volume. Missing rows (the database stores
    only seconds with trades) count as bars without trades.

    :param bars: a bars frame; ``trade_count`` is accepted for ``trades``, and ``empty``
        is derived from ``trades == 0`` when absent; ``vwap`` is ignored (recomputed).
    :param freq: a pandas frequency at least as coarse as the input bars.
    :return: a bars frame from the first input row's bar to the last input row's bar.
    """
    if "trades" not in bars.columns and "trade_count" in bars.columns:
        bars = bars.rename(columns={"trade_count": "trades"})
    need = ["open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "trades"]
    missing = [c for c in need if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lacks column(s) {missing}; need {', '.join(need)}")
    if bars.empty:
        return empty_bars()
    ns = as_utc_ns(bars.index, "bars").asi8
    if not (ns[1:] >= ns[:-1]).all():
        order = np.argsort(ns, kind="stable")
        bars, ns = bars.iloc[order], ns[order]
    cols = {c: bars[c].to_numpy(dtype=np.float64) for c in need}
    has_flag = "empty" in bars.columns
    traded = ~bars["empty"].to_numpy(dtype=bool) if has_flag else cols["trades"] > 0
    return _aggregate(ns, traded, cols, freq)


def liquidity_mask(bars: pd.DataFrame, min_volume: float = 0, min_trades: int = 0) -> pd.Series:
    """True where a bar is liquid enough: ``volume >= min_volume`` and ``trades >= min_trades``.

    With both floors at 0 every bar passes; ``min_trades=1`` masks the empty bars.

    :param bars: a bars frame (``volume`` and ``trades`` columns).
    :param min_volume: base-asset volume floor per bar.
    :param min_trades: trade-count floor per bar.
    """
    mask = (bars["volume"] >= min_volume) & (bars["trades"] >= min_trades)
    return mask.rename("liquid")


def volume_ratio(bars: pd.DataFrame | pd.Series, window: int) -> pd.Series:
    """A bar's volume over the mean volume of the ``window`` bars before it (causal).

    ``ratio_t = volume_t / mean(volume_{t-window} .. volume_{t-1})``: bar t itself is not
    in the baseline (a spike does not dilute its own yardstick) and nothing after t is
    used. Empty bars count with volume 0. The first ``window`` rows are NaN (no full
    baseline yet); a zero baseline gives ``inf`` after a traded bar and NaN after an
    empty one. A ratio of 3 means "three times the recent average volume".

    :param bars: a bars frame (its ``volume`` column) or a volume Series.
    :param window: bars in the trailing baseline (>= 1).
    :return: Series named ``volume_ratio`` on the bars' index.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 bar, got {window}")
    volume = bars["volume"] if isinstance(bars, pd.DataFrame) else bars
    volume = volume.astype(np.float64)
    baseline = volume.shift(1).rolling(window, min_periods=window).mean()
    return (volume / baseline).rename("volume_ratio")


def price_stats(bars: pd.DataFrame, periods_per_year: float | None = None) -> dict[str, float]:
    """Headline numbers for one symbol over the bars given.

    ``change`` is last close minus the first bar's open. ``realised_vol`` is the annualised
    realised volatility of close-to-close log returns, ``sqrt(P * mean(r^2))`` with
    ``P`` bars per 365-day year (empty bars contribute their zero return). ``vwap`` is
    total quote volume over total volume.

    :param bars: a bars frame.
    :param periods_per_year: bars per year; inferred from the median bar spacing when None.
    :return: dict with ``last, change, change_pct, realised_vol, high, low, vwap, volume,
        trades, bars``; NaN where undefined (e.g. no bars).
    """
    nan = float("nan")
    if bars.empty:
        return dict.fromkeys(
            ("last", "change", "change_pct", "realised_vol", "high", "low", "vwap", "volume"), nan
        ) | {"trades": 0, "bars": 0}
    close = bars["close"].to_numpy(dtype=np.float64)
    first_open = float(bars["open"].iloc[0])
    last = float(close[-1])
    ppy = (
        infer_periods_per_year(bars.index, default=nan)
        if periods_per_year is None
        else periods_per_year
    )
    returns = np.diff(np.log(close))
    returns = returns[np.isfinite(returns)]
    vol = math.sqrt(ppy * float(np.mean(returns**2))) if len(returns) else nan
    volume = float(bars["volume"].sum())
    return {
        "last": last,
        "change": last - first_open,
        "change_pct": 100.0 * (last / first_open - 1.0) if first_open else nan,
        "realised_vol": vol,
        "high": float(bars["high"].max()),
        "low": float(bars["low"].min()),
        "vwap": float(bars["quote_volume"].sum()) / volume if volume > 0 else nan,
        "volume": volume,
        "trades": int(bars["trades"].sum()),
        "bars": len(bars),
    }


def periods_per_year(index: pd.Index, default: float | None = None) -> float:
    """Bars per 365-day year, from the median spacing of a DatetimeIndex.

    :param index: at least two timestamps. The median ignores gaps of missing bars.
    :param default: returned when ``index`` gives no bar length (not a DatetimeIndex, or
        fewer than two timestamps). None: the index is read as timestamps and one with
        fewer than two raises ``ValueError``.
    """
    if default is not None and not (isinstance(index, pd.DatetimeIndex) and len(index) > 1):
        return default
    ns = pd.DatetimeIndex(index).as_unit("ns").asi8
    if len(ns) < 2:
        raise ValueError("need at least two timestamps to infer the bar length")
    step = float(np.median(np.diff(ns)))
    if step <= 0:
        raise ValueError("timestamps must increase to infer the bar length")
    return _SECONDS_PER_YEAR * 1e9 / step


# price_stats, stats_table and backtest take a parameter named periods_per_year, which
# hides the function inside them; they call it by this name.
infer_periods_per_year = periods_per_year
