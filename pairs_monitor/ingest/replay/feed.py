"""``--source replay``: recorded trades from files, through the same writer as live data.

    python ingest.py --source replay --replay PATH [PATH ...] [--speed X]
                     [--replay-symbol SYM] [--replay-venue V] [--replay-kind auto]

Inputs: Binance ``trades``/``aggTrades`` dumps, ``.csv`` or ``.zip`` (a ``.CHECKSUM``
beside a file is verified before anything of it is stored; format in ``dumps.py``), Binance
kline files (``klines.py``: bars, not trades), and the browser collector's NDJSON
(``ndjson.py``). A folder stands for the dumps and NDJSON files in it.

Kline files are stored at once, whatever ``--speed``, before the trades play: 1-second
klines as ``bars_1s`` rows ``from_klines``, longer ones as ``kline_bars``, with a
``kline_spans`` row naming the file; bars of trades already stored for a second are kept,
and trades replayed later replace a kline's bar (the schema's trigger).

``--speed 0`` imports as fast as the writer takes rows, file after file, with a progress
bar; ``--speed N`` (N > 0) plays all files together on one clock, N times faster than
recorded, so a pair of dumps of the same day replays as a live pair would. Stored times
are always the recorded ones.

Venues: each file goes to the venue of its id numbering (:func:`default_venue`):
``replay-spot`` (spot trades), ``replay-spot-agg`` (spot aggTrades), ``replay-usdm``,
``replay-usdm-agg`` (futures layouts) and ``replay-ndjson`` (derived ids), so no two
numberings share a (venue, symbol, trade_id) key and the writer never drops a row of one
as "already stored" because of the other. ``--replay-venue`` puts every file under one
venue; a file whose numbering differs from what that venue already holds for its symbol
(in this run, or in an earlier replay run recorded in ``ingest_runs``) is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pairs_monitor.ingest.reading import READ_ERRORS, Database, open_reader
from pairs_monitor.ingest.replay import dumps, klines, ndjson
from pairs_monitor.ingest.replay.dumps import BadRow, Columns, DumpError
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.store import klines as kline_store
from pairs_monitor.store import sql
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("replay")

VENUE_PREFIX = "replay"
NDJSON_SPACE = "ndjson"  # the collector's derived ids
# Live venues hold exchange trade ids of one market: a replay into one must match it.
LIVE_SPACES = {
    "binance-spot": f"{dumps.SPOT} {dumps.TRADES}",
    "binance-usdm": f"{dumps.USDM} {dumps.TRADES}",
}
CHUNK_ROWS = 5_000  # rows per put_trades call
KLINE_CHUNK = 10_000  # kline bars per writer call
BAD_ROWS_LOGGED = 20  # bad rows logged one by one per file; the rest as line ranges
_SUFFIXES = (".csv", ".zip", ".ndjson", ".jsonl", ".json")
# Errors that fail one file, not the run (dumps turns zip damage into DumpError already;
# the zip errors are listed too, so that no reader path can let one end the replay).
_FILE_ERRORS = (DumpError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class Input:
    """One file to replay: a Binance dump of one symbol, or an NDJSON of any symbols.

    A dump's kind and market are read from its name and first lines at once
    (:func:`dumps.describe`); a file that cannot be read keeps the reason in ``error``
    and fails when the replay starts.
    """

    def __init__(
        self, path: Path, symbol: str | None, kind: str | None, keep: set[str] | None = None
    ) -> None:
        self.path = path
        self.ndjson = ndjson.is_ndjson(path)
        self.symbol = symbol
        self.kind = "ndjson" if self.ndjson else kind
        self.market: str | None = None
        self.keep = keep  # symbols to keep from an NDJSON (None: all)
        self.symbols = [symbol] if symbol else []  # an NDJSON's: set by from_args
        self.venue = VENUE_PREFIX
        self.reader: ndjson.NdjsonReader | dumps.DumpReader | None = None
        self.rows_read = 0
        self.stored = 0
        self.bad: list[BadRow] = []
        self.error: str | None = None
        self.checksum: str | None = None
        self.klines: klines.KlineFile | None = None  # a kline file, once read
        if self.ndjson:
            return
        try:
            if kind == klines.KLINES or (kind is None and klines.is_klines(path)):
                self.kind, self.market = klines.KLINES, klines.peek_market(path)
            else:
                self.kind, self.market = dumps.describe(path, kind)
        except (DumpError, OSError) as exc:
            self.error = str(exc)

    @property
    def space(self) -> str:
        """The id numbering of the file: ``spot trades``, ``usdm aggTrades``, ``ndjson``."""
        return NDJSON_SPACE if self.ndjson else f"{self.market} {self.kind}"

    @property
    def size(self) -> int:
        """Bytes of CSV/NDJSON text (uncompressed for a zip)."""
        if self.path.suffix.lower() == ".zip":
            try:
                with dumps.open_csv(self.path) as (_, size):
                    return size
            except DumpError:
                return 0
        return self.path.stat().st_size

    @property
    def bytes_read(self) -> int:
        return getattr(self.reader, "bytes_read", 0)

    def chunks(self) -> Iterator[tuple[str | np.ndarray, Columns]]:
        """(symbol, rows) in file order; for NDJSON, ``symbol`` is one name per row."""
        if self.ndjson:
            lines = self.reader = ndjson.NdjsonReader(self.path, symbols=self.keep)
            for by_symbol, bad in lines:
                self.bad.extend(bad)
                self.rows_read += len(bad) + sum(len(c) for c in by_symbol.values())
                if by_symbol:
                    yield _merge(by_symbol)
            return
        symbol = self.symbol
        if symbol is None:  # from_args names every dump's symbol or refuses it
            raise DumpError(f"{self.path}: the symbol of a dump must be known before it is read")
        blocks = self.reader = dumps.DumpReader(self.path, self.kind)
        for cols, bad in blocks:
            self.bad.extend(bad)
            self.rows_read += len(cols) + len(bad)
            yield symbol, cols


@dataclass
class _Head:
    """The block of one file being played at pace: rows before ``pos`` are emitted."""

    item: Input
    stream: Iterator[tuple[str | np.ndarray, Columns]]
    cols: Columns
    symbol: str | np.ndarray
    pos: int = 0


def _merge(by_symbol: dict[str, Columns]) -> tuple[str | np.ndarray, Columns]:
    """One time-ordered block from per-symbol blocks (a name per row when several)."""
    if len(by_symbol) == 1:
        return next(iter(by_symbol.items()))
    names = np.concatenate([np.full(len(c), s, dtype=object) for s, c in by_symbol.items()])
    cols = Columns(*(np.concatenate([getattr(c, f) for c in by_symbol.values()]) for f in _FIELDS))
    order = np.argsort(cols.time_us, kind="stable")
    return names[order], cols.take(order)


_FIELDS = ("trade_id", "time_us", "price", "qty", "buyer_is_maker")


def default_venue(item: Input) -> str:
    """``replay-spot``, ``replay-spot-agg``, ``replay-usdm``, ``replay-usdm-agg`` or
    ``replay-ndjson``: one venue per id numbering (module docstring)."""
    if item.ndjson:
        return f"{VENUE_PREFIX}-ndjson"
    if item.market is None:  # unreadable: it fails before anything is stored
        return VENUE_PREFIX
    if item.kind == klines.KLINES:  # bars of the market's trades, beside its trade dumps
        return f"{VENUE_PREFIX}-{item.market}"
    agg = "-agg" if item.kind == dumps.AGG_TRADES else ""
    return f"{VENUE_PREFIX}-{item.market}{agg}"


def earlier_spaces(db_path: Database | None, venue: str) -> dict[str, tuple[str, str]]:
    """Symbol -> (id numbering, where it was recorded) that ``venue`` already holds.

    From the ``id_spaces`` of earlier replay runs in ``ingest_runs`` (runs from before
    they were recorded say nothing). Read-only.
    """
    found: dict[str, tuple[str, str]] = {}
    if db_path is None:
        return found
    try:
        conn = open_reader(db_path)
    except FileNotFoundError:  # the folder of a SQLite file does not exist
        return found
    if conn is None:
        return found
    try:
        rows = conn.execute(sql.REPLAY_RUNS).fetchall()
    except READ_ERRORS:  # no schema yet: nothing stored
        return found
    finally:
        conn.close()
    for run_id, params_json in rows:
        try:
            spaces = json.loads(params_json).get("id_spaces", {}).get(venue, {})
        except (ValueError, AttributeError):
            continue
        for symbol, space in spaces.items():
            found.setdefault(symbol, (space, f"replay run {run_id}"))
    return found


def line_ranges(lines: list[int], limit: int = 50) -> str:
    """``3, 7-9, 12`` from [3, 7, 8, 9, 12], at most ``limit`` ranges."""
    ranges: list[list[int]] = []
    for n in lines:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    return text + (f", ... ({len(ranges) - limit} more ranges)" if len(ranges) > limit else "")


class ReplayFeed:
    """Replays files into the writer; ``run`` returns when they are done (or on stop).

    :param inputs: the files, with their symbols resolved.
    :param writer: the ``TradeWriter``.
    :param venue: one venue for every file (``--replay-venue``); None: each file's
        :func:`default_venue`.
    :param speed: 0 = as fast as possible; N > 0 = N times the recorded pace.
    :param hold: after the files, keep running until ``stop_event`` is set.
    :param progress: show a progress bar at speed 0.
    :param db_path: the database, read (read-only) for the id numberings a named venue
        already holds.

    ``failed`` lists the paths of the files that failed (checksum, corrupt or unreadable,
    unknown layout, a numbering the venue does not hold), in the order they failed; the
    other files are imported all the same.
    """

    def __init__(
        self,
        inputs: list[Input],
        writer: TradeWriter,
        *,
        venue: str | None = None,
        speed: float = 0.0,
        symbols: list[str],
        hold: bool = False,
        progress: bool = True,
        db_path: Database | None = None,
    ) -> None:
        self.inputs = inputs
        self.writer = writer
        self.speed = speed
        self.hold = hold
        self.progress = progress
        self.symbols = symbols
        self.failed: list[Path] = []
        for item in inputs:
            item.venue = venue or default_venue(item)
        claims = self._claim_spaces(venue, db_path)
        venues = list(dict.fromkeys(i.venue for i in inputs if i.error is None))
        # ingest_runs.venue: the one venue, or all of them (as its symbols column lists)
        self.venue = ",".join(venues) if venues else (venue or VENUE_PREFIX)
        self.stats = [
            FeedStats(venue=v, symbol=s, source="replay") for v, s in claims if s in symbols
        ]
        self._stats = {(st.venue, st.symbol): st for st in self.stats}
        id_spaces: dict[str, dict[str, str]] = {}
        for (v, s), space in claims.items():
            id_spaces.setdefault(v, {})[s] = space
        self.params = {
            "files": [str(i.path) for i in inputs],
            "kinds": {str(i.path): i.kind or "auto" for i in inputs},
            "venues": {str(i.path): i.venue for i in inputs},
            "id_spaces": id_spaces,
            "speed": speed,
            "venue": self.venue,
            "ndjson_trade_id": "trade_time_us * 1000 + k (k: earlier lines, same symbol and ts)",
            "ndjson_buyer_is_maker": "tick rule (estimated)",
        }

    def _claim_spaces(
        self, venue: str | None, db_path: Database | None
    ) -> dict[tuple[str, str], str]:
        """(venue, symbol) -> id numbering; a file whose numbering differs from the one
        its venue holds for a symbol (an earlier file, an earlier run) gets an error."""
        earlier = earlier_spaces(db_path, venue) if venue else {}
        held = {(venue, symbol): found for symbol, found in earlier.items()}
        claims: dict[tuple[str, str], str] = {}
        for item in self.inputs:
            if item.error is not None or item.kind == klines.KLINES:
                continue  # kline files hold bars, no trade ids
            for symbol in item.symbols:
                found = held.get((item.venue, symbol))
                if found is None and item.venue in LIVE_SPACES:
                    found = (LIVE_SPACES[item.venue], "the live feed's numbering")
                space, where = found or (item.space, "")
                if space != item.space:
                    item.error = (
                        f"{item.path} holds {item.space} of {symbol}, but venue {item.venue} "
                        f"already holds {space} of it ({where}): the ids are different "
                        "numberings, so rows would collide and be dropped as already stored. "
                        "Nothing was imported from it: leave out --replay-venue (each "
                        "numbering then gets its own venue) or name another venue."
                    )
                    break
            else:
                for symbol in item.symbols:
                    held.setdefault((item.venue, symbol), (item.space, str(item.path)))
                    claims[(item.venue, symbol)] = item.space
        return claims

    # -- the run -------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Verify checksums, replay every file, report; then return (or hold)."""
        ready = [i for i in self.inputs if self._verify(i)]
        for st in self.stats:
            st.switch_source("replay")
            st.connected = True
        started = time.monotonic()
        stored_before = self.writer.stats.trades_stored
        try:
            for item in ready:
                if item.kind == klines.KLINES and not stop_event.is_set():
                    self._import_klines(item)
            ready = [i for i in ready if i.kind != klines.KLINES]
            if self.speed > 0:
                self._run_paced(ready, stop_event)
            else:
                self._run_fast(ready, stop_event)
            self.writer.flush()
        finally:
            for st in self.stats:
                st.connected = False
        stored = self.writer.stats.trades_stored - stored_before
        self._report(time.monotonic() - started, stored, stop_event.is_set())
        if self.hold and not stop_event.is_set():
            log.info("replay done; holding until stopped (--replay-hold)")
            stop_event.wait()

    def _verify(self, item: Input) -> bool:
        if item.error is not None:  # found before the run (layout, numbering)
            return self._fail(item, item.error)
        is_zip = item.path.suffix.lower() == ".zip"
        try:
            item.checksum = dumps.verify_checksum(item.path)
            if not item.checksum and is_zip:
                dumps.check_zip(item.path)
        except _FILE_ERRORS as exc:
            return self._fail(item, str(exc))
        if item.checksum:
            log.info("%s: sha256 verified against %s", item.path, dumps.checksum_path(item.path))
        elif is_zip:
            log.warning("%s: no .CHECKSUM beside it; only its CRC-32 was checked", item.path)
        return True

    def _fail(self, item: Input, message: str) -> bool:
        if str(item.path) not in message:
            message = f"{item.path}: {message}"
        item.error = message
        self.failed.append(item.path)
        log.error("%s", message)
        return False

    def _import_klines(self, item: Input) -> None:
        """Store a kline file's bars and its span, in chunks through the writer."""
        try:
            item.klines = read = klines.read_klines(item.path, item.symbol)
        except (*_FILE_ERRORS, ValueError) as exc:
            self._fail(item, str(exc))
            return
        item.rows_read, item.bad = read.rows, read.bad
        symbol = item.symbol or read.symbol
        if symbol is None:
            self._fail(item, "the symbol of a kline file must be known before it is read")
            return
        venue, size, origin = item.venue, read.interval_s, item.path.name
        for start in range(0, len(read.bars), KLINE_CHUNK):
            chunk = read.bars[start : start + KLINE_CHUNK]

            # conn: either store's (store/klines.py's hints say sqlite3 only)
            def store(conn: Any, chunk: list = chunk) -> int:
                stored = kline_store.store_bars(conn, venue, symbol, size, chunk)
                end = chunk[-1].open_s + size
                kline_store.add_span(conn, venue, symbol, size, chunk[0].open_s, end, origin)
                return stored

            item.stored += self.writer.submit(store).result()
        kind = f"{klines.KLINES} {read.interval}"
        log.info(
            "%s (%s, %s -> %s%s): %d rows read, %d bars stored, %d already stored, "
            "%d without trades, %d bad",
            item.path,
            kind,
            symbol,
            venue,
            ", bars_1s" if size == 1 else ", kline_bars",
            read.rows,
            item.stored,
            len(read.bars) - item.stored,
            read.quiet,
            len(read.bad),
        )
        self._report_bad(item)

    def _run_fast(self, inputs: list[Input], stop_event: threading.Event) -> None:
        total_bytes = sum(i.size for i in inputs)
        done_bytes = 0
        bar = tqdm(
            desc="replay",
            unit=" rows",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 5.0,
            disable=not self.progress,
            file=sys.stderr,
        )
        with logging_redirect_tqdm(), bar:
            for item in inputs:
                before = self.writer.stats.trades_stored
                try:
                    for symbol, cols in item.chunks():
                        self._emit(item.venue, symbol, cols, stop_event)
                        bar.update(len(cols))
                        seen = done_bytes + item.bytes_read
                        if seen:
                            bar.total = max(bar.n, int(bar.n * total_bytes / seen))
                        if stop_event.is_set():
                            log.warning("stopped during %s", item.path)
                            break
                except _FILE_ERRORS as exc:
                    self._fail(item, str(exc))
                done_bytes += item.size
                self.writer.flush()
                item.stored = self.writer.stats.trades_stored - before
                self._report_file(item)
                if stop_event.is_set():
                    break

    def _run_paced(self, inputs: list[Input], stop_event: threading.Event) -> None:
        """All files on one clock: recorded time t plays at wall ``(t - t0) / speed``."""
        heads: list[_Head] = []
        for item in inputs:
            stream = self._sorted(item)
            head = self._next(item, stream)
            if head is not None:
                heads.append(head)
            else:
                self._report_file(item, paced=True)
        if not heads:
            return
        t0 = min(int(h.cols.time_us[0]) for h in heads)
        wall0 = time.monotonic()
        log.info("replaying at %gx from %s", self.speed, np.datetime64(t0, "us"))
        while heads and not stop_event.is_set():
            now = t0 + (time.monotonic() - wall0) * self.speed * 1e6
            next_t = math.inf
            for head in list(heads):
                item, cols, symbol, pos = head.item, head.cols, head.symbol, head.pos
                upto = int(np.searchsorted(cols.time_us, now, side="right"))
                if upto > pos:
                    part = symbol if isinstance(symbol, str) else symbol[pos:upto]
                    self._emit(item.venue, part, cols.take(slice(pos, upto)), stop_event)
                    head.pos = pos = upto
                if pos < len(cols):
                    next_t = min(next_t, cols.time_us[pos])
                    continue
                heads.remove(head)
                fresh = self._next(item, head.stream)
                if fresh is None:
                    self._report_file(item, paced=True)
                else:
                    heads.append(fresh)
                    next_t = now  # look at the new block at once
            delay = (next_t - t0) / self.speed / 1e6 - (time.monotonic() - wall0)
            if delay > 0:
                stop_event.wait(min(delay, 0.1))

    def _sorted(self, item: Input) -> Iterator[tuple[str | np.ndarray, Columns]]:
        try:
            for symbol, cols in item.chunks():
                order = np.argsort(cols.time_us, kind="stable")
                yield (symbol if isinstance(symbol, str) else symbol[order]), cols.take(order)
        except _FILE_ERRORS as exc:
            self._fail(item, str(exc))

    @staticmethod
    def _next(item: Input, stream: Iterator[tuple[str | np.ndarray, Columns]]) -> _Head | None:
        for symbol, cols in stream:
            if len(cols):
                return _Head(item, stream, cols, symbol)
        return None

    # -- storing -------------------------------------------------------------------

    def _emit(
        self, venue: str, symbol: str | np.ndarray, cols: Columns, stop_event: threading.Event
    ) -> None:
        if not len(cols):
            return
        if not isinstance(symbol, str):
            for name in dict.fromkeys(symbol.tolist()):
                self._emit(venue, name, cols.take(symbol == name), stop_event)
            return
        rows = list(
            zip(
                repeat(venue),
                repeat(symbol),
                cols.trade_id.tolist(),
                cols.time_us.tolist(),
                cols.price.tolist(),
                cols.qty.tolist(),
                cols.buyer_is_maker.tolist(),
                strict=False,  # repeat() is endless; the lists set the length
            )
        )
        for start in range(0, len(rows), CHUNK_ROWS):
            # Back-pressure: a parser faster than the writer must not fill the memory.
            self.writer.put_trades(rows[start : start + CHUNK_ROWS], block=True, stop=stop_event)
        last = int(np.argmax(cols.trade_id))
        self._stats_for(venue, symbol).saw_trades(
            len(cols), int(cols.trade_id[last]), int(cols.time_us[last])
        )

    def _stats_for(self, venue: str, symbol: str) -> FeedStats:
        st = self._stats.get((venue, symbol))
        if st is None:  # the reporter reads self.stats, which may grow
            st = FeedStats(venue=venue, symbol=symbol, source="replay", connected=True)
            self._stats[(venue, symbol)] = st
            self.stats.append(st)
        return st

    # -- reporting -----------------------------------------------------------------

    def _report_file(self, item: Input, paced: bool = False) -> None:
        """One line per file; when files play together the writer's counts cannot be
        told apart per file, so only the run's total says what was stored."""
        kind = getattr(item.reader, "kind", None) or item.kind
        what = f"{item.path} ({kind}{f', {item.symbol}' if item.symbol else ''} -> {item.venue})"
        if paced:
            log.info("%s: %d rows read, %d bad", what, item.rows_read, len(item.bad))
        else:
            skipped = max(item.rows_read - len(item.bad) - item.stored, 0)
            log.info(
                "%s: %d rows read, %d stored, %d already stored, %d bad",
                what,
                item.rows_read,
                item.stored,
                skipped,
                len(item.bad),
            )
            if item.ndjson and skipped:
                log.warning(
                    "%s: %d rows had a derived id already stored: either this file was "
                    "imported before, or it shares milliseconds with a file imported before. "
                    "The row stored first is kept, so a distinct trade of a shared millisecond "
                    "is not stored (docs/sources.md: Collector NDJSON)",
                    item.path,
                    skipped,
                )
        self._report_bad(item)

    def _report_bad(self, item: Input) -> None:
        for bad in item.bad[:BAD_ROWS_LOGGED]:
            log.warning("%s line %d: %s (row skipped)", item.path, bad.line, bad.reason)
        if len(item.bad) > BAD_ROWS_LOGGED:
            log.warning(
                "%s: %d bad rows in all, at lines %s",
                item.path,
                len(item.bad),
                line_ranges([b.line for b in item.bad]),
            )

    def _report(self, seconds: float, stored: int, stopped: bool) -> None:
        rows = sum(i.rows_read for i in self.inputs)
        bad = sum(len(i.bad) for i in self.inputs)
        rate = rows / seconds if seconds > 0 else float("nan")
        log.info(
            "replay %s: %d files, %d rows read in %.1f s (%.0f rows/s), %d stored, %d bad rows, "
            "%d files failed%s",
            "stopped" if stopped else "done",
            len(self.inputs),
            rows,
            seconds,
            rate,
            stored,
            bad,
            len(self.failed),
            f" ({', '.join(map(str, self.failed))})" if self.failed else "",
        )


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replay flags."""
    g = parser.add_argument_group(
        "replay (--source replay)",
        "Binance trades/aggTrades dumps (.csv/.zip, .CHECKSUM verified) and collector "
        "NDJSON. See docs/sources.md.",
    )
    g.add_argument(
        "--replay",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="files to replay, or folders of them",
    )
    g.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="0 = as fast as possible (progress bar); 1 = real time; N = N times faster",
    )
    g.add_argument(
        "--replay-symbol",
        metavar="SYMBOL",
        help="symbol of dumps whose file name does not say (SYMBOL-trades-DATE.zip does)",
    )
    g.add_argument(
        "--replay-venue",
        metavar="VENUE",
        help="one venue for every file (default: by the file's id numbering: replay-spot, "
        "replay-spot-agg, replay-usdm, replay-usdm-agg, replay-ndjson)",
    )
    g.add_argument(
        "--replay-kind",
        choices=("auto", *dumps.KINDS, klines.KLINES),
        default="auto",
        help="dump kind when neither the name nor the header says",
    )
    g.add_argument(
        "--replay-hold",
        action="store_true",
        help="keep running after the files are done, until SIGINT/SIGTERM",
    )


def expand(paths: list[Path]) -> list[Path]:
    """Files from the paths given; a folder stands for its dumps and NDJSON files."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
            if not found:
                raise SystemExit(f"--replay: {path} holds no .csv/.zip/.ndjson files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"--replay: {path} does not exist")
    return files


def from_args(args: argparse.Namespace, writer: TradeWriter) -> ReplayFeed:
    """Build the replay feed; usage errors exit with a message saying what to pass."""
    paths = getattr(args, "replay", None)
    if not paths:
        raise SystemExit("--source replay needs --replay PATH [PATH ...]")
    speed = getattr(args, "speed", 0.0) or 0.0
    if speed < 0 or not math.isfinite(speed):
        raise SystemExit(f"--speed must be 0 (as fast as possible) or positive, got {speed}")
    wanted = [s.upper() for s in (getattr(args, "symbols", None) or [])]
    flag_symbol = getattr(args, "replay_symbol", None)
    kind = getattr(args, "replay_kind", "auto")
    kind = None if kind in (None, "auto") else kind
    inputs: list[Input] = []
    symbols: dict[str, None] = {}
    for path in expand(list(paths)):
        if ndjson.is_ndjson(path):
            found = ndjson.ndjson_symbols(path)
            keep = set(wanted) if wanted else None
            kept = sorted(found & keep if keep else found)
            symbols.update(dict.fromkeys(kept))
            item = Input(path, None, None, keep)
            item.symbols = kept
            inputs.append(item)
            continue
        named = klines.name_parts(path)
        symbol = (named[0] if named else dumps.symbol_from_name(path)) or (
            (flag_symbol or "").upper() or None
        )
        if symbol is None and len(wanted) == 1:
            symbol = wanted[0]
        if symbol is None:
            raise SystemExit(
                f"--replay: the name of {path} does not say its symbol "
                "(SYMBOL-trades-DATE.csv, SYMBOL-1m-DATE.zip): pass --replay-symbol SYMBOL"
            )
        if wanted and symbol not in wanted:
            log.warning("%s is %s, not one of --symbols: skipped", path, symbol)
            continue
        symbols[symbol] = None
        inputs.append(Input(path, symbol, kind))
    if not inputs:
        raise SystemExit("--replay: nothing to replay for the symbols asked")
    return ReplayFeed(
        inputs,
        writer,
        venue=getattr(args, "replay_venue", None) or None,
        speed=speed,
        symbols=list(symbols) or wanted,
        hold=bool(getattr(args, "replay_hold", False)),
        db_path=getattr(args, "db", None),
    )
