"""The REST side of the live Binance source: catch-up and gap filling.

The live stream only ever reports what happens while it is connected. Everything else is
recovered here, on one thread of its own (:class:`GapFiller`) so the live stream never
waits for REST:

- **catch-up**: on start and after every reconnect, each symbol with a known last trade id
  is fetched from that id + 1 until a short page says we are current, or until the live
  stream has taken over (its first trade after the reconnect), whichever comes first;
- **live jumps**: a trade id past last + 1 on the socket opens a gap, filled here;
- **stored holes**: on start, ranges missing inside what is already stored (a crash, a gap
  left open by an earlier run) are found with a window function and filled.

Every fetch is bounded by ``max_catchup`` trades: what lies beyond is recorded as an open
gap (filled by a later start), never skipped silently. Requests stay within a weight
budget per minute and honour 429/418 ``Retry-After``.

A gap's row is written ``open`` as soon as the gap is found, whatever REST's state (a ban
can last days). A task that fails (an HTTP 400, a CDN's page, a ban, a bug) is queued
again after a backoff of its own (1 s doubling to 5 minutes; a ban's ``Retry-After`` when
longer), for as long as the daemon runs. Tasks are taken round-robin between symbols, a
symbol's catch-up first: one symbol's many or unfillable gaps cannot hold up another's.

The requests go through ``rest.py``; the continuity state this thread shares with the
live stream is :class:`~pairs_monitor.ingest.binance.tape.SymbolTape` (``tape.py``).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

from pairs_monitor.clock import Backoff, now_ms
from pairs_monitor.ingest.binance.rest import PAGE, RestBanned, RestClient, RestError, Stopped
from pairs_monitor.ingest.binance.tape import SymbolTape
from pairs_monitor.store import schema, sql
from pairs_monitor.store.writer import TradeWriter, WriterFatalError

log = logging.getLogger("ingest.binance.gaps")

T = TypeVar("T")

# Retries of a failed task: 1 s, doubling, to 5 minutes (with jitter).
RETRY_BASE_S = 1.0
RETRY_CAP_S = 300.0
# A gap fill that REST refuses (a 4xx other than rate limits) this many times in a row is
# abandoned with the error: a delisted symbol or a missing key does not heal by waiting,
# and endless retries would pile up one task per gap for the life of the daemon.
MAX_REFUSALS = 5


@dataclass(eq=False)
class CatchUp:
    """Fetch ``symbol`` from ``from_id`` until current, or until live takes over.

    ``until`` is set by the live stream: the id just before its first new trade after
    the (re)connect, from where live continuity takes over.
    """

    symbol: str
    from_id: int
    until: int | None = None
    done: bool = False
    retry: Backoff | None = field(default=None, repr=False)
    # Holes already queued as fills: a retried catch-up pages through them again.
    holes_queued: set[tuple[int, int]] = field(default_factory=set, repr=False)
    # The open gap row of from_id..until, submitted once the live stream bounds it.
    recorded: Future[int] | None = field(default=None, repr=False)


@dataclass
class Fill:
    """Fetch the ids ``first..last`` of ``symbol``; ``gap_id`` when its row exists already."""

    symbol: str
    first: int
    last: int
    reason: str
    gap_id: int | None = None
    # The gap row's insert, submitted when the gap was found (see GapFiller.add).
    recorded: Future[int] | None = field(default=None, repr=False, compare=False)
    retry: Backoff | None = field(default=None, repr=False, compare=False)
    refusals: int = field(default=0, repr=False, compare=False)  # 4xx answers in a row


@dataclass
class ScanHoles:
    """Look for holes inside the stored range (ids up to ``upto``) of ``symbol``."""

    symbol: str
    upto: int
    skip: list[tuple[int, int]]  # ranges already queued as open gaps
    retry: Backoff | None = field(default=None, repr=False)


Task = CatchUp | Fill | ScanHoles


class GapFiller(threading.Thread):
    """Runs catch-ups, gap fills and the start-up hole scan, one task at a time.

    :param rest: the REST client.
    :param writer: where recovered trades and gap rows go.
    :param venue: e.g. ``binance-spot``.
    :param tapes: the symbols' continuity state, by upper-case symbol.
    :param db_path: the database, read through its own read-only connection.
    :param max_catchup: most trades one catch-up or one gap fill fetches.
    :param stop: set to stop; unfinished gaps stay open in the table.
    """

    def __init__(
        self,
        rest: RestClient,
        writer: TradeWriter,
        venue: str,
        tapes: dict[str, SymbolTape],
        db_path: Path,
        *,
        max_catchup: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="gap-filler", daemon=True)
        self.rest = rest
        self.writer = writer
        self.venue = venue
        self.tapes = tapes
        self.db_path = db_path
        self.max_catchup = max_catchup
        self.stop = stop
        # Each symbol's tasks, its catch-ups first; the next task is the one of the symbol
        # served least recently (a symbol that just waited for REST goes last).
        self._queues: dict[str, collections.deque[Task]] = {}
        self._served: dict[str, int] = {}  # symbol -> turn it was last served at
        self._turn = itertools.count(1)
        self._later: list[tuple[float, int, Task]] = []  # (due, seq, task): retries
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._paused_until = 0.0  # monotonic: REST banned us until then
        self.trades_recovered = 0
        self.retries = 0

    def add(self, task: Task) -> None:
        """Queue a task; safe from any thread, never waits for REST.

        A new gap's row is submitted to the writer here, ``open``, so that it exists
        while REST is slow, failing or banned.
        """
        if isinstance(task, Fill) and task.gap_id is None and task.recorded is None:
            task.recorded = self._submit_record(
                task.symbol, task.first, task.last, task.reason, "open", 0, None
            )
            self.tapes[task.symbol].stats.gaps_open += 1
        with self._cond:
            self._enqueue(task)
            self._cond.notify()

    def bound_catch_up(self, task: CatchUp) -> None:
        """The live stream has set ``task.until``: record ``from_id..until`` as an open gap
        now, so the missed range has its row while REST is slow, failing or banned (the
        catch-up resolves it when it is done); safe from any thread, never waits."""
        if task.until is None or task.until < task.from_id or task.recorded is not None:
            return
        task.recorded = self._submit_record(
            task.symbol, task.from_id, task.until, "catch-up", "open", 0, None
        )
        self.tapes[task.symbol].stats.gaps_open += 1

    def pending(self) -> list[Task]:
        """The tasks waiting (queued and scheduled retries), for tests and status."""
        with self._cond:
            queued = [t for q in self._queues.values() for t in q]
            return queued + [t for _, _, t in sorted(self._later)]

    @property
    def tasks(self) -> SimpleNamespace:
        """``tasks.queue``: the tasks waiting (what a plain queue offered; use pending())."""
        return SimpleNamespace(queue=self.pending())

    def _enqueue(self, task: Task) -> None:
        symbol_queue = self._queues.get(task.symbol)
        if symbol_queue is None:
            symbol_queue = self._queues[task.symbol] = collections.deque()
        if isinstance(task, CatchUp):
            symbol_queue.appendleft(task)  # the live hand-over waits on it: first
        else:
            symbol_queue.append(task)

    def _next(self) -> Task | None:
        """The next task due, round-robin between symbols; None after a short wait."""
        with self._cond:
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                self._enqueue(heapq.heappop(self._later)[2])
            waiting = [symbol for symbol, q in self._queues.items() if q]
            if waiting and now >= self._paused_until:
                symbol = min(waiting, key=lambda s: self._served.get(s, 0))
                self._served[symbol] = next(self._turn)
                return self._queues[symbol].popleft()
            wait = 0.2
            if self._later:
                wait = min(wait, max(0.0, self._later[0][0] - now))
            self._cond.wait(wait)
            return None

    def _retry_later(self, task: Task, exc: Exception) -> None:
        """Queue a failed task again after its backoff (a ban's length when longer)."""
        if task.retry is None:
            task.retry = Backoff(RETRY_BASE_S, RETRY_CAP_S)
        delay = task.retry.next_delay()
        if isinstance(exc, RestBanned):
            delay = max(delay, exc.retry_after)
            with self._cond:
                self._paused_until = max(self._paused_until, time.monotonic() + delay)
        self.retries += 1
        with self._cond:
            heapq.heappush(self._later, (time.monotonic() + delay, next(self._seq), task))
        log.warning(
            "gap filler: %s failed; the gap stays open, retry %d in %.0f s (%s: %s)",
            _label(task),
            task.retry.failures,
            delay,
            type(exc).__name__,
            exc,
        )

    def _refused_for_good(self, task: Fill, exc: Exception) -> bool:
        """Abandon ``task`` once REST has refused it ``MAX_REFUSALS`` times running."""
        refused = (
            isinstance(exc, RestError)
            and 400 <= exc.status < 500
            and exc.status not in (418, 429)  # rate limits heal by waiting
        )
        task.refusals = task.refusals + 1 if refused else 0
        if task.refusals < MAX_REFUSALS or task.gap_id is None:
            return False
        note = f"REST refused it {task.refusals} times: {exc}"
        self._resolve(task.gap_id, "abandoned", 0, task.last, note)
        stats = self.tapes[task.symbol].stats
        stats.gaps_open -= 1
        stats.gaps_abandoned += 1
        log.error("%s: abandoned: %s", _label(task), note)
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            task = self._next()
            if task is None:
                continue
            try:
                if isinstance(task, CatchUp):
                    self._catch_up(task)
                elif isinstance(task, Fill):
                    self._fill(task)
                else:
                    self._scan_holes(task)
            except Stopped:
                break
            except Exception as exc:  # REST refused, a CDN's page, a ban, a bug: again later
                if not isinstance(exc, OSError | ValueError | LookupError | RestError):
                    log.exception("gap filler: %s raised", _label(task))
                if isinstance(task, Fill) and self._refused_for_good(task, exc):
                    continue
                self._retry_later(task, exc)
        log.info("gap filler stopped: %d trades recovered over REST", self.trades_recovered)

    # -- catch-up ------------------------------------------------------------------------

    def _catch_up(self, task: CatchUp) -> None:
        symbol = task.symbol
        tape = self.tapes[symbol]
        cursor = task.from_id
        recovered = 0
        bounded = False
        log.info("%s: catch-up from id %d", symbol, cursor)
        while True:
            until = task.until
            if until is not None and cursor > until:
                break  # the live stream took over from here
            if recovered >= self.max_catchup:
                bounded = True
                break
            want = PAGE if until is None else min(PAGE, until - cursor + 1)
            want = min(want, self.max_catchup - recovered)
            page = self.rest.historical_trades(self.venue, symbol, cursor, want)
            until = task.until  # again: the live stream may have taken over meanwhile
            rows = [r for r in page if r[2] >= cursor and (until is None or r[2] <= until)]
            if rows:
                self.writer.put_trades(rows)
                recovered += len(rows)
                # Ids are consecutive: one REST skipped (or we refused) is a gap of its own,
                # filled with retries and, failing that, recorded as abandoned: never a
                # silent hole inside a range marked filled.
                for hole in missing_ids(rows, cursor):
                    if hole not in task.holes_queued:
                        task.holes_queued.add(hole)
                        self.add(Fill(symbol, *hole, "catch-up"))
                cursor = rows[-1][2] + 1
            if len(page) < want or not rows:
                break  # a short page: REST has nothing newer (yet)
        head = None
        if bounded and task.until is None:
            head = self.rest.latest_trade_id(symbol)
        with tape.lock:
            task.done = True
            if tape.awaiting is task:
                # No live trade yet: live continuity resumes after what REST covered.
                tape.awaiting = None
                end = max(cursor - 1, head or 0)
                tape.high = end if tape.high is None else max(tape.high, end)
                remainder_end = head if bounded else None
            else:
                remainder_end = task.until
        self.trades_recovered += recovered
        gap_id = None if task.recorded is None else self._wait(task.recorded)
        if recovered:
            note = "fetched over REST after a (re)connect"
            if gap_id is None:
                self._record(
                    symbol, task.from_id, cursor - 1, "catch-up", "filled", recovered, note
                )
            else:
                self._resolve(gap_id, "filled", recovered, cursor - 1, note)
                tape.stats.gaps_open -= 1
            tape.stats.gaps_filled += 1
        log.info("%s: catch-up done, %d trade(s) recovered", symbol, recovered)
        # Nothing recovered: the open row (counted open already) still covers cursor..until
        # and is handed on.
        still_open = None if recovered else gap_id
        if remainder_end is not None and remainder_end >= cursor:
            if bounded:
                note = f"beyond --max-catchup={self.max_catchup}; the next start fetches it"
                if still_open is None:
                    self._record(symbol, cursor, remainder_end, "catch-up", "open", 0, note)
                    tape.stats.gaps_open += 1
                log.warning(
                    "%s: ids %d..%d left as an open gap (%s)", symbol, cursor, remainder_end, note
                )
            else:  # REST lags the live stream: fill it as an ordinary gap, with retries
                self.add(Fill(symbol, cursor, remainder_end, "catch-up", still_open))

    # -- gap fill --------------------------------------------------------------------

    def _fill(self, task: Fill) -> None:
        symbol, first, last = task.symbol, task.first, task.last
        stats = self.tapes[symbol].stats
        gap_id = task.gap_id
        if gap_id is None:
            if task.recorded is None:  # not queued through add(): record it now
                task.recorded = self._submit_record(
                    symbol, first, last, task.reason, "open", 0, None
                )
                stats.gaps_open += 1
            try:
                gap_id = task.gap_id = self._wait(task.recorded)
            except Stopped:
                raise
            except Exception:  # the insert failed: submit it again on the retry
                task.recorded = None
                stats.gaps_open -= 1
                raise
        log.info("%s: filling gap %s, ids %d..%d (%s)", symbol, gap_id, first, last, task.reason)
        cursor, recovered, empty = first, 0, 0
        while cursor <= last and recovered < self.max_catchup:
            want = min(PAGE, last - cursor + 1, self.max_catchup - recovered)
            page = self.rest.historical_trades(self.venue, symbol, cursor, want)
            rows = [r for r in page if cursor <= r[2] <= last]
            if not rows:
                # REST may lag the socket by a moment: 0.5 + 1 + 2 + 4 = 7.5 s in all, a
                # deadline rather than a retry against a busy server, so no jitter.
                empty += 1
                if empty > 4:
                    break
                if self.stop.wait(0.25 * 2**empty):
                    raise Stopped
                continue
            empty = 0
            self.writer.put_trades(rows)
            recovered += len(rows)
            cursor = rows[-1][2] + 1
        self.trades_recovered += recovered
        stats.gaps_open -= 1
        if cursor <= last and recovered >= self.max_catchup:
            # Split: what was fetched is filled; the rest stays open for the next start.
            note = f"beyond --max-catchup={self.max_catchup}; the next start fetches it"
            self._resolve(gap_id, "filled", recovered, cursor - 1, None)
            self._record(symbol, cursor, last, task.reason, "open", 0, note)
            stats.gaps_filled += 1
            stats.gaps_open += 1
            log.warning("%s: ids %d..%d left as an open gap (%s)", symbol, cursor, last, note)
        elif recovered == last - first + 1:
            self._resolve(gap_id, "filled", recovered, last, None)
            stats.gaps_filled += 1
            log.info("%s: gap %s filled (%d trades)", symbol, gap_id, recovered)
        else:
            note = f"REST returned {recovered} of {last - first + 1} trades"
            self._resolve(gap_id, "abandoned", recovered, last, note)
            stats.gaps_abandoned += 1
            log.error("%s: gap %s ids %d..%d abandoned: %s", symbol, gap_id, first, last, note)

    # -- start-up scan ---------------------------------------------------------------

    def _scan_holes(self, task: ScanHoles) -> None:
        started = time.monotonic()
        conn = schema.connect_read_only(self.db_path)
        try:
            holes = conn.execute(sql.STORED_HOLES, (self.venue, task.symbol, task.upto)).fetchall()
            given_up = conn.execute(sql.ABANDONED_GAPS, (self.venue, task.symbol)).fetchall()
        finally:
            conn.close()
        found = 0
        for first, last in holes:
            for a, b in _subtract((first, last), [*task.skip, *given_up]):
                found += 1
                self.add(Fill(task.symbol, a, b, "stored-hole"))
        log.info(
            "%s: %d hole(s) inside the stored range (scan took %.2f s)",
            task.symbol,
            found,
            time.monotonic() - started,
        )

    # -- gaps table --------------------------------------------------------------------

    def _record(
        self,
        symbol: str,
        first: int,
        last: int,
        reason: str,
        status: str,
        recovered: int,
        note: str | None,
    ) -> int:
        return self._wait(self._submit_record(symbol, first, last, reason, status, recovered, note))

    def _submit_record(
        self,
        symbol: str,
        first: int,
        last: int,
        reason: str,
        status: str,
        recovered: int,
        note: str | None,
    ) -> Future[int]:
        now = now_ms()
        resolved = None if status == "open" else now
        values = (self.venue, symbol, first, last, reason, status, now, resolved, recovered, note)

        def insert(conn: sqlite3.Connection) -> int:
            gap_id = conn.execute(sql.OPEN_GAP, values).lastrowid
            assert gap_id is not None  # an INSERT into a rowid table always sets it
            return gap_id

        return self.writer.submit(insert)

    def _resolve(
        self, gap_id: int, status: str, recovered: int, last: int, note: str | None
    ) -> None:
        values = (status, now_ms(), recovered, last, note, gap_id)
        self._write(lambda conn: conn.execute(sql.RESOLVE_GAP, values))

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._wait(self.writer.submit(fn))

    def _wait(self, future: Future[T]) -> T:
        while True:
            try:
                return future.result(timeout=1.0)
            except FutureTimeout:
                if self.stop.is_set():
                    raise Stopped from None
            except WriterFatalError:
                # The database is gone: the daemon's supervision ends the run with the
                # writer's message; this thread only stops, without a traceback of its own.
                raise Stopped from None


def _label(task: Task) -> str:
    if isinstance(task, CatchUp):
        return f"{task.symbol} catch-up from id {task.from_id}"
    if isinstance(task, Fill):
        return f"{task.symbol} gap ids {task.first}..{task.last} ({task.reason})"
    return f"{task.symbol} hole scan"


def missing_ids(rows: list[tuple], start: int) -> list[tuple[int, int]]:
    """The id ranges from ``start`` to the last row's id that ``rows`` (sorted) lack."""
    holes, expected = [], start
    for row in rows:
        trade_id = row[2]
        if trade_id > expected:
            holes.append((expected, trade_id - 1))
        expected = max(expected, trade_id + 1)
    return holes


def _subtract(span: tuple[int, int], cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``span`` (inclusive) not covered by any of ``cuts``."""
    pieces = [span]
    for c0, c1 in cuts:
        nxt = []
        for a, b in pieces:
            if c1 < a or c0 > b:
                nxt.append((a, b))
                continue
            if a < c0:
                nxt.append((a, c0 - 1))
            if c1 < b:
                nxt.append((c1 + 1, b))
        pieces = nxt
    return pieces
