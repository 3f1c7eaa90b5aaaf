"""The parser of Binance's kline files (data.binance.vision), for replay and the page's upload.

As published, ``<SYMBOL>-<interval>-<date>.zip`` (``BTCUSDT-1m-2018-01.zip`` monthly,
``BTCUSDT-1s-2025-01-01.zip`` daily) holding one CSV of 12 columns, the same as the REST
rows::

    open_time,open,high,low,close,volume,close_time,quote_volume,count,
    taker_buy_volume,taker_buy_quote_volume,ignore

Spot files have no header; futures files have that header from 2022-08 on (a header row
is recognised by a first field that is not an integer). Times are milliseconds, or
microseconds in spot files from 2025 on: each value is read by its size, as in trade
dumps. The symbol is the file name's first part, without its ``-1m-2018-01`` suffix; the
interval comes from the name, else from ``close_time - open_time`` of the rows. Monthly
klines (``1mo``) have no fixed length and are refused.

Which market: a header says futures (spot files never have one); else a path through a
``futures`` folder, as data.binance.vision lays them out (``data/futures/um/...``);
else spot. A row is held to what an exchange can send: an open time on the interval's
grid within Binance's life, positive prices with low <= open, close <= high, volumes and
a trade count that are not negative, taker buy volume at most the volume. Any other row
is a bad row (line number and reason), never an error that stops the file. A kline of no
trade makes no bar, as seconds without trades have none.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from pairs_monitor import clock
from pairs_monitor.ingest import validate
from pairs_monitor.ingest.replay.dumps import (
    ZIP_READ_ERRORS,
    BadRow,
    DumpError,
    corrupt_message,
    open_csv,
)
from pairs_monitor.store.klines import KlineBar

KLINES = "klines"
SPOT, USDM = "spot", "usdm"
# Binance's kline intervals and their length; data.binance.vision writes 1M as 1mo.
INTERVALS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14_400, "6h": 21_600, "8h": 28_800, "12h": 43_200, "1d": 86_400,
    "3d": 259_200, "1w": 604_800,
}  # fmt: skip
MONTHLY = ("1mo", "1M")
WEEK_OFFSET_S = 4 * 86_400  # weekly klines open on Mondays; 1970-01-01 was a Thursday
COLUMNS = 12
_NAME = re.compile(
    r"^(?P<symbol>[A-Za-z0-9]+)-(?P<interval>\d+(?:s|m|h|d|w|mo|M))-\d{4}-\d{2}(?:-\d{2})?"
    r"(?:\.csv|\.zip)?$"
)
_INT = re.compile(r"\s*-?\d+\s*")


@dataclass
class KlineFile:
    """A kline file read: its series, the bars of its klines with trades, and bad rows."""

    symbol: str | None
    interval: str
    interval_s: int
    market: str
    bars: list[KlineBar] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    rows: int = 0  # data rows read
    quiet: int = 0  # klines of no trade (no bar)
    header: bool = False

    @property
    def start_s(self) -> int | None:
        """The first bar's open time."""
        return self.bars[0].open_s if self.bars else None

    @property
    def end_s(self) -> int | None:
        """The end of the last bar (exclusive)."""
        return self.bars[-1].open_s + self.interval_s if self.bars else None


def name_parts(name: str | PurePath) -> tuple[str, str] | None:
    """``("BTCUSDT", "1m")`` from ``BTCUSDT-1m-2018-01.zip``; None if the name is not one
    of a kline file."""
    match = _NAME.match(PurePath(name).name)
    if match is None or match["interval"] not in (*INTERVALS, *MONTHLY):
        return None
    return match["symbol"].upper(), match["interval"]


def is_klines(path: str | Path) -> bool:
    """Whether ``path`` is a kline file: by its name, else by its first row (12 fields whose
    7th is a time just after the 1st)."""
    if name_parts(path) is not None:
        return True
    try:
        with open_csv(path) as (f, _):
            first = f.readline()
            if first and not _INT.fullmatch(first.split(b",", 1)[0].decode("latin-1")):
                first = f.readline()
    except (DumpError, OSError, *ZIP_READ_ERRORS):
        return False
    fields = first.decode("latin-1").strip().split(",")
    if len(fields) != COLUMNS or not all(_INT.fullmatch(fields[k]) for k in (0, 6)):
        return False
    opened, closed = int(fields[0]), int(fields[6])
    return 0 < closed - opened < 8 * 86_400 * 1_000_000


def peek_market(path: str | Path) -> str:
    """The market of a kline file from its path and first line (see :func:`market_of`).

    :raises DumpError: unreadable file.
    """
    try:
        with open_csv(path) as (f, _):
            first = f.readline()
    except ZIP_READ_ERRORS as exc:
        raise DumpError(corrupt_message(path, exc, "Nothing was imported from it.")) from None
    field = first.split(b",", 1)[0].decode("latin-1")
    return market_of(path, bool(first.strip()) and not _INT.fullmatch(field))


def market_of(path: str | PurePath, header: bool) -> str:
    """``usdm`` for a file with a header or under a ``futures`` folder; else ``spot``."""
    parts = [p.lower() for p in PurePath(path).parts]
    return USDM if header or "futures" in parts else SPOT


def read_klines(path: str | Path, symbol: str | None = None) -> KlineFile:
    """Read a kline file (``.csv``, or ``.zip`` holding one CSV).

    :param symbol: when the name does not say it.
    :raises DumpError: unreadable, corrupt, monthly, or no interval to be found.
    """
    try:
        with open_csv(path) as (f, _):
            data = f.read()
    except ZIP_READ_ERRORS as exc:
        raise DumpError(corrupt_message(path, exc, "Nothing was imported from it.")) from None
    return parse_klines(Path(path).name, data, symbol=symbol, path=path)


def read_klines_bytes(name: str, content: bytes, symbol: str | None = None) -> KlineFile:
    """:func:`read_klines` for an upload's ``name`` and bytes (a ``.zip`` or a CSV).

    :raises DumpError: as :func:`read_klines`.
    """
    if name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise DumpError(f"{name} should hold one CSV, holds {len(members)} files")
                content = zf.read(members[0])
        except (*ZIP_READ_ERRORS, zipfile.LargeZipFile) as exc:
            raise DumpError(corrupt_message(name, exc, "Nothing was read from it.")) from None
    return parse_klines(name, content, symbol=symbol, path=name)


def parse_klines(
    name: str, data: bytes, *, symbol: str | None = None, path: str | PurePath = ""
) -> KlineFile:
    """The bars of a kline CSV's bytes (see the module docstring).

    :raises DumpError: monthly klines, no interval to be found, or not 12 columns.
    """
    parts = name_parts(name)
    interval = parts[1] if parts else None
    if interval in MONTHLY:
        raise DumpError(
            f"{name}: monthly klines have no fixed length and cannot be stored as bars: "
            "use the 1d (or shorter) files"
        )
    first_line = data.split(b"\n", 1)[0]
    first_field = first_line.split(b",", 1)[0].decode("latin-1")
    header = bool(first_line.strip()) and not _INT.fullmatch(first_field)
    body = data.split(b"\n", 1)[1] if header and b"\n" in data else (b"" if header else data)
    lines = body.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    numbers = np.arange(len(lines)) + (2 if header else 1)  # 1-based, header included
    wrong = np.array([line.count(b",") + 1 != COLUMNS for line in lines], dtype=bool)
    result = KlineFile(parts[0] if parts else symbol, "", 0, market_of(path or name, header))
    result.header = header
    result.rows = len(lines)
    result.bad = [BadRow(int(n), f"wrong number of fields (expected {COLUMNS})")
                  for n in numbers[wrong]]  # fmt: skip
    kept = b"\n".join(line for line, no in zip(lines, wrong, strict=True) if not no)
    numbers = numbers[~wrong]
    frame = pd.read_csv(io.BytesIO(kept), header=None, dtype=str, names=list(range(COLUMNS)))
    cols = {k: pd.to_numeric(frame[k], errors="coerce").to_numpy(dtype=float) for k in range(11)}
    raw_open = pd.to_numeric(frame[0], errors="coerce")
    raw_close = pd.to_numeric(frame[6], errors="coerce")
    opened_int = raw_open.fillna(0).to_numpy(dtype=np.int64)
    open_us, bad_open = clock.epoch_to_us(opened_int)
    close_us, bad_close = clock.epoch_to_us(raw_close.fillna(0).to_numpy(dtype=np.int64))
    bad_open |= raw_open.isna().to_numpy() | bad_close | raw_close.isna().to_numpy()
    if interval is None:
        spans = (close_us - open_us)[~bad_open]
        if not len(spans):
            raise DumpError(
                f"{name}: no row says the klines' interval; name the file as Binance does"
            )
        length = round(float(np.median(spans)) / 1e6)
        interval = next((k for k, v in INTERVALS.items() if v == length), None)
        if interval is None:
            raise DumpError(f"{name}: klines of {length} s are no Binance interval")
    size = INTERVALS[interval]
    result.interval, result.interval_s = interval, size
    open_s = open_us // 1_000_000
    low_ms, high_ms = validate.time_bounds_ms()
    offset = WEEK_OFFSET_S if interval == "1w" else 0
    o, h, lo, c, volume = (cols[k] for k in (1, 2, 3, 4, 5))
    quote, count, taker = cols[7], cols[8], cols[9]
    amounts = np.stack([volume, quote, taker])
    off_grid = open_us % 1_000_000 != 0
    if interval != "3d":  # where Binance starts its 3-day klines is not published
        off_grid |= (open_s - offset) % size != 0
    prices = np.stack([o, h, lo, c])
    checks: list[tuple[np.ndarray, str]] = [
        (bad_open, "open or close time is neither epoch milliseconds nor microseconds"),
        (
            (open_us < low_ms * 1000) | (open_us > high_ms * 1000),
            "open time before Binance opened or ahead of this machine's clock",
        ),
        (off_grid, f"open time not on the {interval} grid"),
        (~(np.isfinite(prices).all(axis=0) & (lo > 0)), "a price missing or not positive"),
        (
            ~(np.isfinite(amounts).all(axis=0) & (amounts >= 0).all(axis=0)),
            "a volume missing or negative",
        ),
        (~(np.isfinite(count) & (count >= 0) & (count == np.floor(count))), "bad trade count"),
        (
            (lo > np.minimum(o, c)) | (h < np.maximum(o, c)) | (taker > volume),
            "low above open or close, high below them, or taker volume above volume",
        ),
    ]
    bad = np.zeros(len(frame), dtype=bool)
    for mask, reason in checks:
        mask = np.asarray(mask, dtype=bool) & ~bad
        for index in np.flatnonzero(mask):
            result.bad.append(BadRow(int(numbers[index]), reason))
        bad |= mask
    result.bad.sort(key=lambda b: b.line)
    traded = ~bad & (count > 0)
    result.quiet = int((~bad & (count == 0)).sum())
    order = np.argsort(open_s[traded], kind="stable")
    fields = [open_s, o, h, lo, c, volume, quote, taker, count]
    picked = [np.asarray(column)[traded][order] for column in fields]
    result.bars = [
        KlineBar(int(t), op, hi, low, cl, vol, quo, tak, int(n))
        for t, op, hi, low, cl, vol, quo, tak, n in zip(*(p.tolist() for p in picked), strict=True)
    ]
    return result
