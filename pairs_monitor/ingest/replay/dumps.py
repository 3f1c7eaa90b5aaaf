"""The parser of Binance's public trade dumps (the collector's NDJSON is ``ndjson.py``).

Binance dumps (data.binance.vision), ``.csv`` or a ``.zip`` holding one CSV::

    spot trades        id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch
    futures trades     id,price,qty,quote_qty,time,is_buyer_maker
    spot aggTrades     aggId,price,qty,firstId,lastId,timestamp,isBuyerMaker,isBestMatch
    futures aggTrades  agg_trade_id,price,quantity,first_trade_id,last_trade_id,
                       transact_time,is_buyer_maker

Spot dumps have no header; futures dumps have one from 2022-08 on.
A header row is recognised by a first field that is not an integer. Timestamps are
milliseconds, or microseconds in spot dumps from 2025 on: each value is read by its size
(:func:`pairs_monitor.clock.epoch_to_us`: 10^11..10^13 ms, 10^14..10^16 µs, anything
else is a bad row). Every row is held to what an exchange can send
(:mod:`pairs_monitor.ingest.validate`): an id in ``[1, 2**62)``, a time from Binance's
opening (July 2017) to 5 minutes past this machine's clock, a finite positive price and
quantity; any other row is a bad row, never an error that stops the file. The kind (trades or
aggTrades) comes from the file name, else the header, else the column count (6 trades,
8 aggTrades; 7 is spot trades when column 6 is a boolean, futures aggTrades when it is a
timestamp).

Blocks of a few MB are parsed by pandas' C parser; a block holding a row it cannot parse
is re-read line by line, so every bad row is reported with its line number (1-based, in
the CSV, header included) and the good rows around it are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from pairs_monitor import clock
from pairs_monitor.ingest import validate

TRADES = "trades"
AGG_TRADES = "aggTrades"
KINDS = (TRADES, AGG_TRADES)
BLOCK_BYTES = 4 << 20

_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)-(?P<kind>trades|aggTrades)-", re.IGNORECASE)
_INT = re.compile(rb"\s*-?\d+\s*")
_BOOLS = {"true": True, "false": False}


class DumpError(Exception):
    """A file that cannot be imported at all (bad checksum, unreadable, unknown layout)."""


@dataclass(frozen=True)
class Layout:
    """Column positions of the fields we store."""

    trade_id: int
    price: int
    qty: int
    time: int
    maker: int


LAYOUTS = {TRADES: Layout(0, 1, 2, 4, 5), AGG_TRADES: Layout(0, 1, 2, 5, 6)}


@dataclass(frozen=True)
class BadRow:
    """A row that was not imported: its line number in the file and why."""

    line: int
    reason: str


@dataclass
class Columns:
    """Good rows of one block, as arrays (times in microseconds)."""

    trade_id: np.ndarray
    time_us: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_is_maker: np.ndarray

    def __len__(self) -> int:
        return len(self.trade_id)

    def take(self, index: slice | np.ndarray) -> Columns:
        """The rows at ``index`` (a slice, mask or positions)."""
        return Columns(
            self.trade_id[index],
            self.time_us[index],
            self.price[index],
            self.qty[index],
            self.buyer_is_maker[index],
        )


def symbol_from_name(path: str | Path) -> str | None:
    """``BTCUSDT`` from ``BTCUSDT-trades-2024-01-01.zip``; None if the name does not say."""
    match = _NAME.match(Path(path).name)
    return match["symbol"].upper() if match else None


def kind_from_name(path: str | Path) -> str | None:
    """``trades`` or ``aggTrades`` from a dump's file name; None if it does not say."""
    match = _NAME.match(Path(path).name)
    if not match:
        return None
    return AGG_TRADES if match["kind"].lower() == "aggtrades" else TRADES


def checksum_path(path: str | Path) -> Path:
    """Where Binance puts a file's checksum: ``<file>.CHECKSUM`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".CHECKSUM")


def verify_checksum(path: str | Path) -> str | None:
    """Check ``path`` against the sha256 in ``<path>.CHECKSUM``.

    :returns: the verified hex digest, or None when there is no checksum file.
    :raises DumpError: the digests differ, or the checksum file holds no sha256.
    """
    path = Path(path)
    check = checksum_path(path)
    if not check.exists():
        return None
    words = check.read_text(errors="replace").split()
    if not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise DumpError(f"{check} holds no sha256 digest; nothing was imported from {path}")
    expected = words[0].lower()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise DumpError(
            f"checksum mismatch for {path}: sha256 is {actual}, {check.name} says {expected}. "
            "The file is corrupt or incomplete: download it again. Nothing was imported "
            "from it."
        )
    return actual


# What a damaged zip raises while it is read: a CRC-32 mismatch at the end of a member
# (BadZipFile), a broken deflate stream (zlib.error), a member cut short (EOFError).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


def corrupt_message(path: str | Path, exc: BaseException, stored: str) -> str:
    """What to tell the user about a damaged file, and what of it was stored."""
    return f"{path} is corrupt ({exc}): download it again. {stored}"


def check_zip(path: str | Path) -> None:
    """Read the CSV inside a zip to its end, so its CRC-32 is checked before it is used.

    For a zip with no ``.CHECKSUM``: otherwise the damage shows only after the rows before
    it were stored.

    :raises DumpError: the zip is unreadable or its data corrupt.
    """
    with open_csv(path) as (f, _):
        try:
            while f.read(1 << 20):
                pass
        except ZIP_READ_ERRORS as exc:
            raise DumpError(corrupt_message(path, exc, "Nothing was imported from it.")) from None


@contextlib.contextmanager
def open_csv(path: str | Path) -> Iterator[tuple[IO[bytes], int]]:
    """The CSV bytes of a ``.csv`` or of the CSV inside a ``.zip``, and their size."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        with path.open("rb") as f:
            yield f, path.stat().st_size
        return
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DumpError(f"{path} is not a readable zip ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) != 1:
            names = ", ".join(m.filename for m in members) or "nothing"
            raise DumpError(f"{path} should hold one CSV, holds {names}")
        with zf.open(members[0]) as f:
            yield f, members[0].file_size


def _is_header(first_line: bytes) -> bool:
    first_field = first_line.split(b",", 1)[0]
    return bool(first_line.strip()) and not _INT.fullmatch(first_field)


def detect_kind(path: str | Path, header: list[str] | None, first_row: list[str]) -> str:
    """Trades or aggTrades, from the name, else the header, else the columns (module doc)."""
    kind = kind_from_name(path)
    if kind:
        return kind
    if header:
        names = [h.strip().lower() for h in header]
        if any("agg" in n or "first" in n for n in names):
            return AGG_TRADES
        return TRADES
    ncols = len(first_row)
    if ncols == 6:
        return TRADES
    if ncols == 8:
        return AGG_TRADES
    if ncols == 7:
        sixth = first_row[5].strip().lower()
        if sixth in _BOOLS:
            return TRADES
        if sixth.isdigit():
            return AGG_TRADES
    raise DumpError(
        f"cannot tell whether {path} holds trades or aggTrades ({ncols} columns, no header, "
        "no -trades-/-aggTrades- in the name): pass --replay-kind"
    )


SPOT, USDM = "spot", "usdm"
_FUTURES_WIDTH = {TRADES: 6, AGG_TRADES: 7}  # spot dumps add isBestMatch


def describe(path: str | Path, kind: str | None = None) -> tuple[str, str]:
    """``(kind, market)`` of a dump from its name and first lines, before it is imported.

    The market is ``"spot"`` or ``"usdm"`` (futures layout: 6 columns for trades, 7 for
    aggTrades, without ``isBestMatch``). Trade ids of the two markets, and trade ids and
    aggregate ids, are separate numberings: a venue must hold one of them per symbol.

    :param kind: the kind if known (``--replay-kind``), else it is detected.
    :raises DumpError: unreadable file or unknown layout.
    """
    with open_csv(path) as (f, _):
        try:
            first = f.readline()
            has_header = _is_header(first)
            row = f.readline() if has_header else first
        except ZIP_READ_ERRORS as exc:
            raise DumpError(corrupt_message(path, exc, "Nothing was imported from it.")) from None
    header = first.decode("utf-8", "replace").strip().split(",") if has_header else None
    first_row = row.decode("utf-8", "replace").strip().split(",") if row.strip() else []
    kind = kind or detect_kind(path, header, first_row or header or [])
    ncols = len(header) if header else len(first_row)
    return kind, USDM if ncols == _FUTURES_WIDTH[kind] else SPOT


class DumpReader:
    """Iterate over one Binance dump in blocks of good rows, reporting the bad ones.

    :param path: ``.csv`` or ``.zip``.
    :param kind: ``"trades"``, ``"aggTrades"`` or None to detect it.
    :param block_bytes: bytes parsed at a time.

    After the first block, ``kind``, ``has_header``, ``ncols`` and
    ``size`` (CSV bytes) are known; ``bytes_read`` grows as blocks are read.
    """

    def __init__(
        self, path: str | Path, kind: str | None = None, block_bytes: int = BLOCK_BYTES
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.block_bytes = block_bytes
        self.has_header = False
        self.header: list[str] | None = None
        self.ncols = 0
        self.size = 0
        self.bytes_read = 0
        self.lines = 0

    def __iter__(self) -> Iterator[tuple[Columns, list[BadRow]]]:
        try:
            yield from self._blocks()
        except ZIP_READ_ERRORS as exc:
            stored = "The rows read before the damage was found were stored."
            raise DumpError(corrupt_message(self.path, exc, stored)) from None

    def _blocks(self) -> Iterator[tuple[Columns, list[BadRow]]]:
        with open_csv(self.path) as (f, size):
            self.size = size
            first = f.readline()
            self.bytes_read = len(first)
            if not first:
                return
            line_no = 1
            pending = first
            if _is_header(first):
                self.has_header = True
                self.header = first.decode("utf-8", "replace").strip().split(",")
                pending = b""
                line_no = 2
                first_row = self.header
                second = f.readline()
                self.bytes_read += len(second)
                pending = second
                if second.strip():
                    first_row = second.decode("utf-8", "replace").strip().split(",")
            else:
                first_row = first.decode("utf-8", "replace").strip().split(",")
            self.ncols = len(self.header) if self.header else len(first_row)
            self.kind = self.kind or detect_kind(self.path, self.header, first_row)
            self.layout = LAYOUTS[self.kind]
            if self.ncols <= self.layout.maker:
                raise DumpError(
                    f"{self.path}: {self.ncols} columns, too few for {self.kind} "
                    f"(need {self.layout.maker + 1})"
                )
            while True:
                data = f.read(self.block_bytes)
                self.bytes_read += len(data)
                if not data:
                    break
                buf = pending + data
                cut = buf.rfind(b"\n")
                if cut < 0:
                    pending = buf
                    continue
                block, pending = buf[: cut + 1], buf[cut + 1 :]
                yield self._parse(block, line_no)
                line_no += block.count(b"\n")
            if pending.strip():
                if not pending.endswith(b"\n"):
                    pending += b"\n"
                yield self._parse(pending, line_no)
                line_no += pending.count(b"\n")
            self.lines = line_no - 1

    # -- parsing -------------------------------------------------------------------

    def _parse(self, block: bytes, first_line: int) -> tuple[Columns, list[BadRow]]:
        lay = self.layout
        used = [lay.trade_id, lay.price, lay.qty, lay.time, lay.maker]
        try:
            frame = pd.read_csv(
                io.BytesIO(block),
                header=None,
                usecols=used,
                dtype={
                    lay.trade_id: np.int64,
                    lay.price: np.float64,
                    lay.qty: np.float64,
                    lay.time: np.int64,
                    lay.maker: bool,
                },
                engine="c",
                skip_blank_lines=False,
            )
        except (ValueError, OverflowError, pd.errors.ParserError):
            # OverflowError: a field beyond 64 bits (an id of 2**63); found line by line
            return self._parse_slow(block, first_line)
        cols = Columns(
            frame[lay.trade_id].to_numpy(),
            frame[lay.time].to_numpy(),
            frame[lay.price].to_numpy(),
            frame[lay.qty].to_numpy(),
            frame[lay.maker].to_numpy().astype(np.int64),
        )
        wrong_width = self._field_counts(block) != self.ncols
        return self._validate(cols, first_line, wrong_width)

    def _field_counts(self, block: bytes) -> np.ndarray:
        """Fields on each line of ``block`` (commas + 1), without a Python loop."""
        raw = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        commas = np.flatnonzero(raw == 44)
        before_end = np.searchsorted(commas, ends)
        return np.diff(before_end, prepend=0) + 1

    def _validate(
        self, cols: Columns, first_line: int, wrong_width: np.ndarray | None = None
    ) -> tuple[Columns, list[BadRow]]:
        time_us, bad_time = clock.epoch_to_us(cols.time_us)
        cols.time_us = time_us
        low_ms, high_ms = validate.time_bounds_ms()
        ids = cols.trade_id
        # (mask, why): a fixed reason, or one naming the row's value
        checks: list[tuple[np.ndarray, str | Callable[[int], str]]] = [
            (bad_time, "timestamp is neither epoch milliseconds nor microseconds"),
            (
                ~bad_time & ((time_us < low_ms * 1000) | (time_us > high_ms * 1000)),
                lambda i: _refusal(validate.check_time_us, int(time_us[i]), "time"),
            ),
            (~(np.isfinite(cols.price) & (cols.price > 0)), "price missing or not positive"),
            (~(np.isfinite(cols.qty) & (cols.qty > 0)), "quantity missing or not positive"),
            (
                (ids < validate.MIN_TRADE_ID) | (ids >= validate.TRADE_ID_LIMIT),
                lambda i: _refusal(validate.check_id, int(ids[i]), "id"),
            ),
        ]
        if wrong_width is not None:
            checks.insert(0, (wrong_width, f"wrong number of fields (expected {self.ncols})"))
        bad = np.zeros(len(cols), dtype=bool)
        for mask, _ in checks:
            bad |= mask
        if not bad.any():
            return cols, []
        rows = []
        for i in np.flatnonzero(bad):
            reason = next(r for mask, r in checks if mask[i])
            rows.append(
                BadRow(first_line + int(i), reason if isinstance(reason, str) else reason(int(i)))
            )
        return cols.take(~bad), rows

    def _parse_slow(self, block: bytes, first_line: int) -> tuple[Columns, list[BadRow]]:
        lay = self.layout
        ids, times, prices, qtys, makers, lines = [], [], [], [], [], []
        bad: list[BadRow] = []
        for offset, raw in enumerate(block.split(b"\n")[:-1]):
            line = first_line + offset
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                bad.append(BadRow(line, "empty line"))
                continue
            fields = text.split(",")
            if len(fields) != self.ncols:
                bad.append(
                    BadRow(line, f"{len(fields)} fields, expected {self.ncols}: {text[:80]!r}")
                )
                continue
            try:
                maker = _BOOLS[fields[lay.maker].strip().lower()]
                row = (
                    validate.check_id(int(fields[lay.trade_id]), "id"),
                    _fits_64_bits(int(fields[lay.time]), "time"),
                    float(fields[lay.price]),
                    float(fields[lay.qty]),
                )
            except validate.Refused as exc:  # the ranges the fast path checks in _validate
                bad.append(BadRow(line, f"{exc}: {text[:80]!r}"))
                continue
            except (ValueError, KeyError):
                bad.append(BadRow(line, f"unparsable field: {text[:80]!r}"))
                continue
            ids.append(row[0])
            times.append(row[1])
            prices.append(row[2])
            qtys.append(row[3])
            makers.append(int(maker))
            lines.append(line)
        cols = Columns(
            np.array(ids, dtype=np.int64),
            np.array(times, dtype=np.int64),
            np.array(prices, dtype=np.float64),
            np.array(qtys, dtype=np.float64),
            np.array(makers, dtype=np.int64),
        )
        # _validate numbers rows from first_line; give it the true line numbers instead.
        good, more_bad = self._validate(cols, 0)
        bad.extend(BadRow(lines[b.line], b.reason) for b in more_bad)
        bad.sort(key=lambda b: b.line)
        return good, bad


def _refusal(check: Callable[[int, str], int], value: int, field: str) -> str:
    """Why ``check`` refuses ``value`` (it must): the message of its :class:`Refused`."""
    try:
        check(value, field)
    except validate.Refused as exc:
        return str(exc)
    return f"{field}={value}: refused"  # pragma: no cover (masks and checks agree)


def _fits_64_bits(value: int, field: str) -> int:
    """A timestamp that numpy can hold (its range is checked with the column's unit).

    :raises validate.Refused: beyond ``2**62`` either way (no epoch unit reaches it).
    """
    if not -(2**62) < value < 2**62:
        raise validate.Refused(field, value, "not an epoch time in milliseconds or microseconds")
    return value
