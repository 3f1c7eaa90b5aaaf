"""The parser of the browser collector's NDJSON recordings.

One object a line::

    {"symbol":"BTCUSDT","ts":"2025-11-04T10:20:19.000Z","price":103726.4,"size":0.002}

``ts`` is ISO-8601 (no zone = UTC) or an epoch number in ms or µs. Values are held to what
an exchange can send (:mod:`pairs_monitor.ingest.validate`: a time from Binance's opening
to 5 minutes past this machine's clock, a finite positive price and size given as a number
or a plain decimal string); a line that is not is a bad row. A line has no trade id
and no side: :class:`NdjsonReader` derives both (its docstring says how, and what that
implies for files recorded twice).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from pairs_monitor import clock
from pairs_monitor.ingest import validate
from pairs_monitor.ingest.replay.dumps import BLOCK_BYTES, BadRow, Columns

NDJSON_ORDER_WINDOW_US = 10 * 60 * 1_000_000  # how far back a collector line may go in time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def parse_ts(ts: object) -> int:
    """Epoch microseconds from an ISO-8601 string (no zone = UTC) or epoch ms/µs number."""
    if isinstance(ts, str):
        dt = datetime.fromisoformat(ts)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // _US
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        us = clock.epoch_us(int(ts))
        if us is not None:
            return us
    raise ValueError(f"ts {ts!r} is neither ISO-8601 nor epoch ms/µs")


@dataclass
class NdjsonReader:
    """Iterate over a collector NDJSON file: per block, good rows by symbol and bad rows.

    Trade ids are derived, stable across imports of the same file::

        trade_id = trade_time_us * 1000 + k

    where ``k`` (0..999) counts the earlier lines of the file with the same symbol and the
    same timestamp. Ids therefore grow with time (so a bar's open/close, taken from its
    lowest/highest id, are its first/last trades), distinct trades in one millisecond
    stay distinct, and importing the file again yields the same ids, which the writer
    skips. They are NOT consecutive: the gap logic of the live feeds (a jump in ids means
    missed trades) does not apply to them.

    Memory: ``k`` needs the count of each (symbol, timestamp) seen. The collector writes
    trades as they arrive, so a symbol's lines are in time order but for jitter; nothing
    guarantees it. The reader keeps the counts of the last ``NDJSON_ORDER_WINDOW_US`` (10
    minutes) before the newest timestamp of each symbol, so its memory is bounded by the
    trades of 10 minutes, whatever the file's length. A line older than that window (the
    file was concatenated out of order, or sorted by symbol) would need a count already
    forgotten: its id could repeat an earlier line's and the writer would drop it as a
    duplicate, so it is reported as a bad row instead. Sort such a file by ``ts`` (or
    split it) and import again. Any line within the window gets exactly the id an
    unbounded count would give.

    Ids of two files: ``k`` restarts in each file. Two files holding the same millisecond
    of a symbol derive the same ids for its first lines, and the writer keeps the row
    stored first and drops the other as "already stored" (it compares keys, not
    contents). The same trades recorded twice are therefore stored once (as long as each
    millisecond's lines come in the same order); but a distinct trade that the second
    file holds for a millisecond the first file also holds is not stored, when the first
    file has at least as many lines of that millisecond. No id derived from a file alone
    can tell a re-recorded trade from a different one with the same time, so this is
    documented and warned about (the replay's per-file line), not repaired.

    ``buyer_is_maker`` is not recorded by the collector: it is estimated by the tick rule
    (an uptick is a taker buy, 0; a downtick a taker sell, 1; an unchanged price repeats
    the previous call; the first trade of a symbol counts as a buy).

    :param path: the NDJSON file. :param block_lines: lines per yielded block.
    :param symbols: keep only these symbols (upper case); None keeps all.
    """

    path: Path
    block_lines: int = 100_000
    symbols: set[str] | None = None
    lines: int = 0
    skipped_other_symbols: int = 0
    # per symbol: timestamp -> lines so far, for the timestamps within the order window
    _seen: dict[str, dict[int, int]] = field(default_factory=dict)
    _newest: dict[str, int] = field(default_factory=dict)
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[dict[str, Columns], list[BadRow]]]:
        rows: dict[str, list[tuple[int, int, float, float, int]]] = {}
        bad: list[BadRow] = []
        with Path(self.path).open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                self.lines = line_no
                self._parse_line(raw, line_no, rows, bad)
                if line_no % self.block_lines == 0:
                    self._forget_old()
                    yield self._columns(rows), bad
                    rows, bad = {}, []
        if rows or bad:
            yield self._columns(rows), bad

    def _parse_line(self, raw: bytes, line_no: int, rows: dict, bad: list[BadRow]) -> None:
        if not raw.strip():
            bad.append(BadRow(line_no, "empty line"))
            return
        try:
            obj = orjson.loads(raw)
            symbol = obj["symbol"]
            if not isinstance(symbol, str) or not symbol.strip():
                raise ValueError("symbol is not a name")
            symbol = symbol.strip().upper()
            time_us = validate.check_time_us(parse_ts(obj["ts"]), "ts")
            price, size = _amount(obj["price"], "price"), _amount(obj["size"], "size")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            bad.append(BadRow(line_no, f"{reason}: {raw[:80].decode('utf-8', 'replace')!r}"))
            return
        if self.symbols is not None and symbol not in self.symbols:
            self.skipped_other_symbols += 1
            return
        newest = self._newest.get(symbol, time_us)
        if time_us < newest - NDJSON_ORDER_WINDOW_US:
            late = (newest - time_us) / 60e6
            bad.append(
                BadRow(
                    line_no,
                    f"{symbol} ts {obj['ts']} is more than 10 minutes before a line above it "
                    f"({late:.1f} min): its derived id could repeat an earlier line's. "
                    "To import it, sort the file by ts (or split it) and import again",
                )
            )
            return
        self._newest[symbol] = max(newest, time_us)
        counts = self._seen.setdefault(symbol, {})
        k = counts.get(time_us, 0)
        if k >= 1000:
            bad.append(BadRow(line_no, f"more than 1000 {symbol} trades at one timestamp"))
            return
        counts[time_us] = k + 1
        last_price, last_side = self._last.get(symbol, (price, 0))
        side = 0 if price > last_price else 1 if price < last_price else last_side
        self._last[symbol] = (price, side)
        rows.setdefault(symbol, []).append((time_us * 1000 + k, time_us, price, size, side))

    def _forget_old(self) -> None:
        """Drop the counts of timestamps no later line may use (older than the window)."""
        for symbol, counts in self._seen.items():
            floor = self._newest[symbol] - NDJSON_ORDER_WINDOW_US
            if min(counts, default=floor) < floor:
                self._seen[symbol] = {t: n for t, n in counts.items() if t >= floor}

    @staticmethod
    def _columns(rows: dict) -> dict[str, Columns]:
        out = {}
        for symbol, items in rows.items():
            ids, times, prices, sizes, sides = zip(*items, strict=True)
            out[symbol] = Columns(
                np.array(ids, dtype=np.int64),
                np.array(times, dtype=np.int64),
                np.array(prices, dtype=np.float64),
                np.array(sizes, dtype=np.float64),
                np.array(sides, dtype=np.int64),
            )
        return out


def _amount(value: object, field: str) -> float:
    """A price or size: a JSON number, or a plain decimal string; finite and > 0.

    :raises validate.Refused: otherwise (``true``, ``"1e309"``, ``"1_000"``, ``-1``).
    """
    if isinstance(value, str):
        return validate.check_decimal(value, field)
    return validate.check_amount(value, field)


_SYMBOL_FIELD = re.compile(rb'"symbol"\s*:\s*"([^"]*)"')


def ndjson_symbols(path: str | Path) -> set[str]:
    """The symbols named in an NDJSON file (a fast scan, without parsing the JSON)."""
    found: set[bytes] = set()
    pending = b""
    with Path(path).open("rb") as f:
        for data in iter(lambda: f.read(BLOCK_BYTES), b""):
            buf = pending + data
            cut = buf.rfind(b"\n") + 1
            found.update(_SYMBOL_FIELD.findall(buf[:cut]))
            pending = buf[cut:]
    found.update(_SYMBOL_FIELD.findall(pending))
    names = (m.decode("utf-8", "replace").strip().upper() for m in found)
    return {s for s in names if s}


def is_ndjson(path: str | Path) -> bool:
    """True for ``.ndjson``/``.jsonl``/``.json`` files, or any file whose first byte is ``{``."""
    path = Path(path)
    if path.suffix.lower() in (".ndjson", ".jsonl", ".json"):
        return True
    if path.suffix.lower() in (".csv", ".zip"):
        return False
    with path.open("rb") as f:
        return f.read(64).lstrip().startswith(b"{")
