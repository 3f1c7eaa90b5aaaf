"""Read an uploaded OHLC CSV into bars, so the page can analyse data without the daemon.

Accepted format (header names are case-insensitive, order free)::

    timestamp,symbol,open,high,low,close,volume
    2024-05-01T00:00:00Z,BTCUSDT,60000,60010,59990,60005,1.25
    ...

- ``timestamp`` (or ``time``, ``open_time``, ``date``): ISO-8601 (UTC when no offset is
  given) or Unix epoch in seconds, milliseconds, microseconds or nanoseconds (the unit
  read from the largest value, ``clock.epoch_unit``: below 1e11 s, 1e14 ms, 1e17 us, else
  ns); the bar's start.
- ``symbol``: optional; without it the whole file is one symbol named after the file.
- ``open, high, low, close``: positive numbers with ``low <= open, close <= high``.
- ``volume``: optional (0 when absent).

Several files may be uploaded at once (e.g. one per symbol). Each file is at most
``MAX_UPLOAD_MB`` and all files together at most ``MAX_UPLOAD_ROWS`` rows (``settings.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import pandas as pd

from pairs_monitor.clock import epoch_unit
from pairs_monitor.ingest.replay import klines
from pairs_monitor.page import kline_upload
from pairs_monitor.page.settings import (
    MAX_BARS,
    MAX_UPLOAD_MB,
    MAX_UPLOAD_ROWS,
    MAX_UPLOAD_SYMBOLS,
    timeframe_seconds,
    timeframes_for,
)

TIME_COLUMNS = ("timestamp", "time", "open_time", "date", "datetime")
PRICE_COLUMNS = ("open", "high", "low", "close")
EXAMPLE = (
    "timestamp,symbol,open,high,low,close,volume\n"
    "2024-05-01T00:00:00Z,BTCUSDT,60000,60010,59990,60005,1.25\n"
)


class UploadError(Exception):
    """The file cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class Uploaded:
    """Bars per symbol in ``analytics``' bar layout, and what was read."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    bar_seconds: int = 1
    rows: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digest: str = ""  # of every file's name and bytes: a cache key that follows the content
    # Binance kline files (every file one): their length, e.g. "1m"; the page opens on it.
    interval: str | None = None

    @property
    def span_s(self) -> int:
        """Seconds from the first bar's start to the last bar's end, over every symbol."""
        frames = [f for f in self.frames.values() if len(f)]
        if not frames:
            return self.bar_seconds
        first = min(f.index[0] for f in frames)
        last = max(f.index[-1] for f in frames)
        return int((last - first).total_seconds()) + self.bar_seconds

    @property
    def timeframes(self) -> list[str] | None:
        """The timeframes the upload is shown at: for kline files their length and its
        multiples; None for OHLC files (every timeframe, finer ones replaced)."""
        return timeframes_for(self.bar_seconds) if self.interval else None

    def opening_timeframe(self) -> str | None:
        """For kline files, the timeframe the page opens on: the file's own, or the
        shortest of its multiples that holds the whole file in ``MAX_BARS`` bars."""
        options = self.timeframes or []
        fits = [tf for tf in options if self.span_s // timeframe_seconds(tf) <= MAX_BARS]
        return fits[0] if fits else (options[-1] if options else None)


def parse_files(files: list[tuple[str, bytes]]) -> Uploaded:
    """Parse and validate uploaded files ``[(name, content)]`` into one :class:`Uploaded`.

    OHLC CSVs (see the module docstring) and Binance kline files (``kline_upload.py``)
    alike; a ``<file>.CHECKSUM`` is checked against the ``<file>`` uploaded with it.

    :raises UploadError: for the first problem found, naming the file and the rows.
    """
    if not files:
        raise UploadError("no file uploaded")
    result = Uploaded()
    hasher = hashlib.sha256()
    names = {name for name, _ in files}
    checksums = {}
    for name, content in files:
        if kline_upload.is_checksum(name):
            target = name[: -len(kline_upload.CHECKSUM_SUFFIX)]
            if target not in names:
                raise UploadError(
                    f"{name} was uploaded without {target}: upload the two together, or "
                    "remove the checksum file"
                )
            checksums[target] = content
    intervals: dict[str, str] = {}  # kline file -> its length
    ohlc = False
    for name, content in files:
        hasher.update(name.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
        if kline_upload.is_checksum(name):
            continue
        allowed = MAX_UPLOAD_SYMBOLS - len(result.frames)
        try:
            if name in checksums:
                digest = kline_upload.verify_checksum(name, content, checksums[name])
                result.notes.append(f"{name}: its sha256 {digest[:12]}… matches its .CHECKSUM.")
            if kline_upload.is_kline_file(name, content):
                if allowed < 1:
                    raise UploadError(f"{name}: more than {MAX_UPLOAD_SYMBOLS} symbols in all")
                symbol, frame, read = kline_upload.read_kline_file(name, content)
                intervals[name] = read.interval
                if name.lower().endswith(".zip") and name not in checksums:
                    result.notes.append(
                        f"{name}: no .CHECKSUM uploaded beside it, so its sha256 was not "
                        "checked (the zip's own CRC was)."
                    )
                parsed = {symbol: frame}
            else:
                ohlc = True
                parsed = parse_csv(name, content, allowed)
        except kline_upload.KlineUploadError as exc:
            raise UploadError(str(exc)) from None
        for symbol, frame in parsed.items():
            if symbol in result.frames:
                raise UploadError(
                    f"{name}: symbol {symbol} also appears in another uploaded file; "
                    "upload each symbol once"
                )
            result.frames[symbol] = frame
            result.rows += len(frame)
        result.files.append(name)
        if result.rows > MAX_UPLOAD_ROWS:
            raise UploadError(
                f"more than {MAX_UPLOAD_ROWS:,} rows in total: upload a shorter range"
            )
    if len(result.frames) > MAX_UPLOAD_SYMBOLS:
        raise UploadError(f"{len(result.frames)} symbols; at most {MAX_UPLOAD_SYMBOLS} are allowed")
    if len(set(intervals.values())) > 1:
        listed = ", ".join(f"{name} ({interval})" for name, interval in intervals.items())
        raise UploadError(
            f"kline files of different lengths ({listed}): a pair needs bars of one "
            "length; upload files of one interval"
        )
    result.digest = hasher.hexdigest()
    spacings = [_spacing_s(f) for f in result.frames.values() if len(f) > 1]
    result.bar_seconds = max(1, int(min(spacings))) if spacings else 1
    if intervals:
        interval = next(iter(intervals.values()))
        result.bar_seconds = max(result.bar_seconds, klines.INTERVALS[interval])
        if not ohlc:
            result.interval = interval
            result.bar_seconds = klines.INTERVALS[interval]
        result.notes.append(
            "Binance klines carry exact open, high, low, close, volume, quote volume, taker "
            "buy volume and trade count, but no trades."
        )
    if ohlc:
        result.notes.append(
            "Uploaded OHLC has no trade count, taker side or quote volume: each row counts "
            "as one trade, taker-buy volume is 0 and VWAP is approximated by the close."
        )
    return result


def parse_csv(
    name: str, content: bytes, max_symbols: int = MAX_UPLOAD_SYMBOLS
) -> dict[str, pd.DataFrame]:
    """Parse one CSV file into ``{symbol: bars}``. :raises UploadError: when invalid.

    :param max_symbols: how many new symbols this file may still bring; counted on the raw
        column right after reading, before any per-row work (500,000 symbols in 11 MB
        took 115 s and 2 GB when they were counted at the end).
    """
    size_mb = len(content) / 1_048_576
    if size_mb > MAX_UPLOAD_MB:
        raise UploadError(f"{name} is {size_mb:.1f} MB; the limit is {MAX_UPLOAD_MB} MB")
    if not content.strip():
        raise UploadError(f"{name} is empty; expected a header line such as\n{EXAMPLE}")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        raw = pd.read_csv(
            io.StringIO(text), dtype=str, nrows=MAX_UPLOAD_ROWS + 1, skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UploadError(f"{name} is not a readable CSV: {exc}") from exc
    if len(raw) > MAX_UPLOAD_ROWS:
        raise UploadError(f"{name} has more than {MAX_UPLOAD_ROWS:,} rows: upload a shorter range")
    # pandas renames a repeated header ("open,open" -> open, open.1): judge the header line.
    try:
        header = Counter(c.strip().lower() for c in next(csv.reader(io.StringIO(text)), []))
    except csv.Error as exc:
        raise UploadError(f"{name}: the header line is not readable CSV ({exc})") from exc
    repeated = sorted(c for c, n in header.items() if n > 1)
    if repeated:
        raise UploadError(
            f"{name}: column(s) {', '.join(repeated)} appear more than once (headers are "
            "case-insensitive); keep one of each"
        )
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if "symbol" in raw.columns:
        count = raw["symbol"].fillna("").str.strip().str.upper().nunique()
        if count > max_symbols:
            raise UploadError(
                f"{name}: {count:,} symbols; at most {MAX_UPLOAD_SYMBOLS} are allowed in all "
                f"uploaded files ({max_symbols} more here)"
            )
    time_col = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in PRICE_COLUMNS if c not in raw.columns]
    if time_col is None:
        missing.insert(0, "timestamp")
    if missing:
        raise UploadError(
            f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(raw.columns)}. "
            f"Expected a header like\n{EXAMPLE}"
        )
    if raw.empty:
        raise UploadError(f"{name} has a header but no rows")
    times = _parse_times(name, raw[time_col])
    prices = {}
    for col in (*PRICE_COLUMNS, "volume"):
        if col not in raw.columns:
            continue
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if col != "volume":
            bad |= values <= 0
        else:
            bad |= values < 0
        if bad.any():
            raise UploadError(
                f"{name}: column {col} has {int(bad.sum())} missing, non-numeric or "
                f"{'negative' if col == 'volume' else 'non-positive'} value(s), first at "
                f"line(s) {_lines(bad)}"
            )
        prices[col] = values.to_numpy(dtype=float)
    o, h, lo, c = (prices[k] for k in PRICE_COLUMNS)
    bad = (lo > np.minimum(o, c)) | (h < np.maximum(o, c)) | (lo > h)
    if bad.any():
        raise UploadError(
            f"{name}: {int(bad.sum())} row(s) where low/high do not bracket open and close, "
            f"first at line(s) {_lines(pd.Series(bad))}"
        )
    volume = prices.get("volume", np.zeros(len(raw)))
    frame = pd.DataFrame(
        {
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": volume,
            "quote_volume": volume * c,
            "taker_buy_volume": np.zeros(len(raw)),
            "trades": np.ones(len(raw), dtype=np.int64),
            "vwap": c,
            "empty": np.zeros(len(raw), dtype=bool),
        },
        index=pd.DatetimeIndex(times, name="time").as_unit("ns"),
    )
    if "symbol" in raw.columns:
        symbols = raw["symbol"].fillna("").str.strip().str.upper()
        if (symbols == "").any():
            raise UploadError(
                f"{name}: empty symbol at line(s) {_lines(symbols == '')}; fill it or drop "
                "the symbol column to name the whole file after its file name"
            )
    else:
        stem = PurePath(name).stem.upper()
        symbols = pd.Series([stem] * len(raw))
    out = {}
    for symbol, rows in frame.groupby(symbols.to_numpy(), sort=True):
        rows = rows.sort_index(kind="stable")
        dup = rows.index.duplicated()
        if dup.any():
            raise UploadError(
                f"{name}: {int(dup.sum())} duplicate timestamp(s) for {symbol}, first "
                f"{rows.index[dup][0].isoformat()}; each bar must appear once"
            )
        out[str(symbol)] = rows
    return out


def _parse_times(name: str, col: pd.Series) -> pd.DatetimeIndex:
    text = col.fillna("").str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        infinite = ~np.isfinite(numeric)
        if infinite.any():
            raise UploadError(
                f"{name}: {int(infinite.sum())} infinite timestamp(s), first at line(s) "
                f"{_lines(infinite)} ({text[infinite].iloc[0]!r})"
            )
        # One unit for the column, told from its largest value (clock.EPOCH_UNITS).
        unit = epoch_unit(float(numeric.abs().max()))
        seconds = numeric / unit.per_second
        bad = (seconds < _MIN_S) | (seconds > _MAX_S)
        if bad.any():
            raise UploadError(
                f"{name}: {int(bad.sum())} Unix timestamp(s) (read as {unit.name}, from the "
                f"largest value) outside the years 1678-2262 pandas can hold, first at line(s) "
                f"{_lines(bad)} ({text[bad].iloc[0]!r}); use one unit (s, ms, us or ns) "
                "for the whole column, or ISO-8601"
            )
        ns = numeric.astype("int64") * (NS_PER_S // unit.per_second)
        return pd.DatetimeIndex(pd.to_datetime(ns, unit="ns", utc=True))
    try:
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    except ValueError:
        parsed = pd.Series(pd.NaT, index=text.index)
    bad = parsed.isna()
    if bad.any():
        raise UploadError(
            f"{name}: {int(bad.sum())} timestamp(s) that are neither ISO-8601 nor Unix epoch, "
            f"first at line(s) {_lines(bad)} ({text[bad].iloc[0]!r})"
        )
    return pd.DatetimeIndex(parsed)


NS_PER_S = 10**9
_MIN_S = pd.Timestamp.min.value / 1e9 + 1  # what a nanosecond pandas timestamp can hold
_MAX_S = pd.Timestamp.max.value / 1e9 - 1


def _lines(bad: pd.Series) -> str:
    """File line numbers (header = line 1) of the first few flagged rows."""
    positions = np.flatnonzero(np.asarray(bad))[:5] + 2
    return ", ".join(str(p) for p in positions)


def _spacing_s(frame: pd.DataFrame) -> float:
    steps = np.diff(pd.DatetimeIndex(frame.index).as_unit("ns").asi8) / 1e9
    return float(np.median(steps))
