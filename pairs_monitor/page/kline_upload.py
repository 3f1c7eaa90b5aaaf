"""Binance's own kline files as uploads: data.binance.vision's klines CSV as published.

``BTCUSDT-1m-2018-01.zip`` holds one CSV of 12 columns (no header for spot, a header for
futures from 2022-08; ms or µs times); ``BTCUSDT-1m-2018-01.zip.CHECKSUM`` beside it holds
its sha256. The parser is the replay's (``ingest/replay/klines.py``,
``read_klines_bytes``), so an upload and a replay read a file alike; this module adds what
an upload needs: telling a kline file from an OHLC CSV, the checksum of an uploaded zip,
bounds on what a zip may unpack to, and the bars frame the page analyses.

An upload is all or nothing: a zip that does not open, a checksum that does not match,
a row that is not a kline Binance publishes, a kline longer than a day: each is an
:class:`~pairs_monitor.page.upload.UploadError` naming the file and what to do, and
nothing of it is used.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import PurePath

import numpy as np
import pandas as pd

from pairs_monitor.ingest.replay import klines
from pairs_monitor.ingest.replay.dumps import ZIP_READ_ERRORS, DumpError
from pairs_monitor.page.settings import (
    MAX_UPLOAD_ROWS,
    MAX_UPLOAD_UNZIPPED_MB,
    timeframes_for,
)

CHECKSUM_SUFFIX = ".CHECKSUM"
# The header futures files carry from 2022-08 (spot files have none).
FUTURES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
_INT = re.compile(r"\s*\d+\s*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
BAD_ROWS_NAMED = 5


class KlineUploadError(Exception):
    """A kline file that cannot be used; the message names the file and what to do."""


def is_checksum(name: str) -> bool:
    """Whether ``name`` is a ``.CHECKSUM`` file (any case)."""
    return name.upper().endswith(CHECKSUM_SUFFIX)


def is_kline_file(name: str, content: bytes) -> bool:
    """Whether an uploaded file is a Binance kline file: a zip; the futures header; a
    name as Binance gives (``BTCUSDT-1m-2018-01.csv``, ``klines.name_parts``) unless the
    file opens with another header (an OHLC CSV of that name); or a first row of 12 fields
    whose 1st and 7th are integers (open and close time), as spot's headerless files
    have."""
    if name.lower().endswith(".zip"):
        return True
    first = content[:4096].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    fields = [f.strip().lower() for f in first.lstrip("\ufeff").strip().split(",")]
    if ",".join(fields) == FUTURES_HEADER:
        return True
    rows_first = bool(_INT.fullmatch(fields[0]))
    if klines.name_parts(name) is not None:
        return rows_first or len(fields) == klines.COLUMNS
    return rows_first and len(fields) == klines.COLUMNS and bool(_INT.fullmatch(fields[6]))


def verify_checksum(name: str, content: bytes, checksum: bytes) -> str:
    """The sha256 of ``content``, checked against the ``.CHECKSUM`` uploaded beside it.

    :raises KlineUploadError: the checksum file holds no sha256, or the digests differ.
    """
    words = checksum.decode("ascii", errors="replace").split()
    if not words or not _SHA256.fullmatch(words[0]):
        raise KlineUploadError(
            f"{name}{CHECKSUM_SUFFIX} holds no sha256 digest (expected the file as "
            "data.binance.vision publishes it: '<sha256>  <file name>'); nothing was read "
            f"from {name}"
        )
    expected, actual = words[0].lower(), hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise KlineUploadError(
            f"{name} does not match its {CHECKSUM_SUFFIX}: its sha256 is {actual}, the "
            f"checksum file says {expected}. The download is damaged or the two are not "
            "of the same file: download both again. Nothing was read from it."
        )
    return actual


def _check_zip(name: str, content: bytes) -> None:
    """Refuse a zip that does not open or would unpack to more than the limit, before any
    of it is unpacked (a few KB of zip can declare gigabytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
    except (*ZIP_READ_ERRORS, zipfile.LargeZipFile, ValueError) as exc:
        raise KlineUploadError(
            f"{name} is not a readable zip ({exc}): download it again; nothing was read from it"
        ) from None
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UPLOAD_UNZIPPED_MB * 1_048_576:
        raise KlineUploadError(
            f"{name} unpacks to {unpacked / 1_048_576:,.0f} MB; the limit is "
            f"{MAX_UPLOAD_UNZIPPED_MB} MB: upload a shorter period (a daily file)"
        )


def read_kline_file(name: str, content: bytes) -> tuple[str, pd.DataFrame, klines.KlineFile]:
    """One uploaded kline file as ``(symbol, bars, what was read)``.

    :raises KlineUploadError: see the module docstring.
    """
    if name.lower().endswith(".zip"):
        _check_zip(name, content)
    elif content.count(b"\n") > MAX_UPLOAD_ROWS + 1:
        raise KlineUploadError(
            f"{name} has more than {MAX_UPLOAD_ROWS:,} rows: upload a shorter range"
        )
    try:
        read = klines.read_klines_bytes(name, content, symbol=_stem_symbol(name))
    except DumpError as exc:
        raise KlineUploadError(str(exc)) from None
    if read.rows > MAX_UPLOAD_ROWS:
        raise KlineUploadError(
            f"{name} has {read.rows:,} rows, more than {MAX_UPLOAD_ROWS:,}: upload a shorter range"
        )
    if read.bad:
        named = "; ".join(f"line {b.line}: {b.reason}" for b in read.bad[:BAD_ROWS_NAMED])
        raise KlineUploadError(
            f"{name}: {len(read.bad):,} row(s) are not klines as Binance publishes them "
            f"({named}{'; …' if len(read.bad) > BAD_ROWS_NAMED else ''}); nothing was "
            "read from it"
        )
    if not timeframes_for(read.interval_s):
        raise KlineUploadError(
            f"{name} holds {read.interval} klines, longer than a day (the longest "
            "timeframe): upload the 1d (or shorter) files"
        )
    if not read.bars:
        raise KlineUploadError(
            f"{name}: none of its {read.rows:,} klines has a trade, so there is no bar to show"
        )
    frame = _frame(read)
    duplicated = frame.index.duplicated()
    if duplicated.any():
        raise KlineUploadError(
            f"{name}: {int(duplicated.sum())} kline(s) opening at a time already given, first "
            f"{frame.index[duplicated][0].isoformat()}; each kline must appear once"
        )
    return read.symbol or _stem_symbol(name), frame, read


def _stem_symbol(name: str) -> str:
    """The symbol a kline file whose name Binance did not give stands for: its name
    without extensions, upper case (``xlm.csv`` -> ``XLM``)."""
    base = PurePath(name).name
    return base.split(".", 1)[0].upper() or "KLINES"


def _frame(read: klines.KlineFile) -> pd.DataFrame:
    """The bars of a kline file in ``analytics``' layout, stamped at each kline's open
    time, every one ``from_klines``."""
    arr = np.array([tuple(bar) for bar in read.bars], dtype=float)
    volume, quote = arr[:, 5], arr[:, 6]
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(volume > 0, quote / volume, np.nan)
    index = pd.DatetimeIndex(pd.to_datetime(arr[:, 0].astype(np.int64), unit="s", utc=True))
    return pd.DataFrame(
        {
            "open": arr[:, 1],
            "high": arr[:, 2],
            "low": arr[:, 3],
            "close": arr[:, 4],
            "volume": volume,
            "quote_volume": quote,
            "taker_buy_volume": arr[:, 7],
            "trades": arr[:, 8].astype(np.int64),
            "vwap": vwap,
            "empty": np.zeros(len(arr), dtype=bool),
            "from_klines": np.ones(len(arr), dtype=bool),
        },
        index=index.rename("time").as_unit("ns"),
    )
