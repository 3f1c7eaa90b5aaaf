"""CSV exports: what is in each file and what the file is called.

Timestamps are ISO-8601 UTC strings (``2024-05-01T00:00:00Z``). A text cell or column
name that a spreadsheet would read as a formula (it begins with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return, e.g. a symbol ``=HYPERLINK(...)``) is written with a leading
``'`` (OWASP's advice against CSV injection); numbers are written at the precision they
were received (shortest repr, never float noise such as 599.93830000000003). File names say venue,
symbols, timeframe and range, e.g.
``bars_sim_BTCUSDT-ETHUSDT_1s_20240501T000000Z_20240501T010000Z.csv``; a pair across
venues names each leg's venue,
``bars_binance-spot.BTCUSDT-binance-usdm.BTCUSDT_1m_20240501T000000Z_20240501T010000Z.csv``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pairs_monitor.page.pipeline import PairData

# from_klines: any part of the bar came from a Binance kline, so not every trade of it is
# in the tick export (the tape began later, or an outage the klines cover).
LEG_COLUMNS = ("open", "high", "low", "close", "volume", "trades", "vwap", "empty", "from_klines")
PAIR_COLUMNS = ("y", "x", "hedge_ratio", "intercept", "spread", "zscore", "corr")


def iso_utc(index: pd.DatetimeIndex) -> list[str]:
    """ISO-8601 UTC strings, second precision when every stamp is on a whole second."""
    index = index.tz_convert("UTC").as_unit("ns")
    if (index.asi8 % 1_000_000_000 == 0).all():
        return list(index.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return list(index.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def stamp(ts: pd.Timestamp) -> str:
    """Compact UTC stamp for file names, e.g. ``20240501T000000Z``."""
    return ts.tz_convert("UTC").strftime("%Y%m%dT%H%M%SZ")


def file_name(kind: str, pair: PairData, index: pd.DatetimeIndex) -> str:
    """``<kind>_<venue>_<Y>-<X>_<timeframe>_<first>_<last>.csv`` (across venues
    ``<kind>_<venue>.<Y>-<venue_x>.<X>_...``), safe for any filesystem."""
    view = pair.view
    span = f"{stamp(index[0])}_{stamp(index[-1])}" if len(index) else "empty"
    (venue_y, y), (venue_x, x) = view.legs
    legs = f"{venue_y}_{y}-{x}" if venue_y == venue_x else f"{venue_y}.{y}-{venue_x}.{x}"
    name = f"{kind}_{legs}_{view.timeframe}_{span}.csv"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def bar_times(pair: PairData) -> pd.DatetimeIndex:
    """The bars' start times, one per row of :func:`bars_frame` (either leg's)."""
    index = pd.DatetimeIndex([], tz="UTC")
    for bars in pair.bars.values():
        index = index.union(pd.DatetimeIndex(bars.index))
    return index


def bars_frame(pair: PairData, last: int | None = None) -> pd.DataFrame:
    """Both legs' bars (prefixed by the leg's name: its symbol, or across venues its
    label, ``BTCUSDT · perp_close``) and every ``pair_frame`` column, one row per bar.

    The analytic columns are exactly ``analytics.pair_frame``'s (NaN before it has enough
    bars); ``y``/``x`` are the prices the hedge was fitted on (log when log prices is on).

    :param last: only the newest this many rows (a preview), built from those bars alone.
    """
    view = pair.view
    since = None
    if last is not None:
        times = bar_times(pair)
        since = times[-last] if len(times) > last else None
    parts = []
    for name in view.names:
        bars = pair.bars.get(name)
        if bars is None:
            continue
        bars = bars if since is None else bars.loc[since:]
        parts.append(bars[list(LEG_COLUMNS)].add_prefix(f"{name}_"))
    if not parts:
        return pd.DataFrame(columns=["time"])
    frame = pd.concat(parts, axis=1, join="outer", sort=True)
    if pair.frame is not None:
        analytics = pair.frame if since is None else pair.frame.loc[since:]
        frame = frame.join(analytics[list(PAIR_COLUMNS)], how="left")
    else:
        for col in PAIR_COLUMNS:
            frame[col] = float("nan")
    frame.insert(0, "time", iso_utc(pd.DatetimeIndex(frame.index)))
    return frame.reset_index(drop=True)


def stats_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The statistics table with its time index as an ISO-8601 ``time`` column."""
    out = table.copy()
    if isinstance(out.index, pd.DatetimeIndex):
        out.insert(0, "time", iso_utc(out.index))
        out = out.reset_index(drop=True)
    return out


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """``value`` with a ``'`` in front when it is text a spreadsheet would run as a formula;
    anything else (numbers included) unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def shortest(values: np.ndarray) -> np.ndarray:
    """Floats as the shortest text that reads back to the same float (numpy's repr, as
    Python's), a whole number without its ``.0`` (``2``, not ``2.0``), NaN as empty."""
    text = values.astype(str)
    whole = np.char.endswith(text, ".0")
    out = text.astype(object)
    out[whole] = [cell[:-2] for cell in text[whole]]
    out[np.isnan(values)] = ""
    return out


def to_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes (UTF-8, CRLF), no index, formula-leading text neutralised.

    A float is written as Python's shortest repr, the fewest digits that read back to the
    same float: a price received as 599.9383 is written 599.9383 (``%.17g`` wrote
    599.93830000000003, float noise no exchange sent), and every value still reads back
    exactly. A missing value is an empty cell.
    """
    safe = frame.rename(columns=neutralise)
    for col in range(safe.shape[1]):
        values = safe.iloc[:, col]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            safe.isetitem(col, values.map(neutralise).to_numpy())
        elif values.dtype.kind == "f":
            safe.isetitem(col, shortest(values.to_numpy()))
    # CRLF line ends (RFC 4180): the csv writer then quotes a cell holding a bare CR too,
    # which with "\n" line ends it writes raw, splitting the row for many readers.
    return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
