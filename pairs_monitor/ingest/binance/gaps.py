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

Where the trades come from depends on the market (``feed.Market``) and the key:

- ``historicalTrades`` (spot; USD-M with an API key, pages of 500): each trade as it was;
- ``aggTrades`` (USD-M without a key, or after Binance refused the key): the aggregate
  covering the first missing id is found by time (from the time of a stored trade before
  it, an hour at a time), then pages follow by aggregate id. Every id ``f..l`` of an
  aggregate becomes a trade at its price, time and side, with an equal share of its
  quantity (the share of the ids not stored yet, when some of them are): the price of
  every id and the volume, quote volume, count and taker volume of every 1-second bar are
  exact, each trade's own size is not. The gap row says ``filled_from = 'aggTrades'``.

On USD-M, an id a complete REST answer passes over (between two returned ids, or before
the first one when that is past the id asked from) is a non-market trade (insurance fund,
ADL), which REST never returns: it is stored in ``nonmarket_trades`` as ``NOT_IN_REST``,
and is no hole. On spot such an id is a hole, as it always was. USD-M serves the last
three months only: older ids are left in an open gap saying so.

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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, TypeVar

from pairs_monitor.clock import Backoff, now_ms
from pairs_monitor.ingest.binance.rest import (
    AGG_PAGE,
    AGG_WINDOW_MS,
    RestBanned,
    RestClient,
    RestError,
    Stopped,
    key_refused,
)
from pairs_monitor.ingest.binance.tape import SymbolTape
from pairs_monitor.ingest.reading import Database, one_row, open_reader
from pairs_monitor.ingest.validate import Aggregate, NonMarketRow
from pairs_monitor.store import connection, sql
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import parse_target
from pairs_monitor.store.writer import TradeRow, TradeWriter, WriterFatalError

if TYPE_CHECKING:  # feed.py imports this module
    from pairs_monitor.ingest.binance.feed import Market

log = logging.getLogger("ingest.binance.gaps")

T = TypeVar("T")

# Retries of a failed task: 1 s, doubling, to 5 minutes (with jitter).
RETRY_BASE_S = 1.0
RETRY_CAP_S = 300.0
# A gap fill that REST refuses (a 4xx other than rate limits) this many times in a row is
# abandoned with the error: a delisted symbol or a missing key does not heal by waiting,
# and endless retries would pile up one task per gap for the life of the daemon.
MAX_REFUSALS = 5
# The longest run of ids a REST answer may pass over and have them taken for non-market
# trades; a longer one (a broken or hostile answer) stays a hole to fetch again.
MAX_NOT_IN_REST = 10_000
# How far back from the hint the search for the aggregate of a missing id starts: an
# aggregate's time is its first fill's, up to 100 ms before its later fills'.
AGG_HINT_MARGIN_MS = 1_000
# Hours stepped back when the first aggregate found starts past the missing id with none
# before it in the answer (the hint was later than the gap's start).
AGG_STEPS_BACK = 24
# A gap is called older than REST serves from this far inside the limit, so that the
# request does not land on the edge of Binance's window.
HISTORY_MARGIN_MS = 60_000
NOT_IN_REST = "NOT_IN_REST"
HISTORICAL = "historicalTrades"
AGGREGATED = "aggTrades"
OLDER_NOTE = "older than the 3 months USD-M REST serves"
NO_HINT_NOTE = "no stored trade before it to find it by time in aggTrades"


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
    # A time (ms) at or before the first missing trade: where aggTrades starts looking.
    after_ms: int | None = field(default=None, repr=False)


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
    # A time (ms) at or before trade ``first``: where aggTrades starts looking.
    after_ms: int | None = field(default=None, repr=False, compare=False)


@dataclass
class ScanHoles:
    """Look for holes inside the stored range (ids up to ``upto``) of ``symbol``."""

    symbol: str
    upto: int
    skip: list[tuple[int, int]]  # ranges already queued as open gaps
    retry: Backoff | None = field(default=None, repr=False)


Task = CatchUp | Fill | ScanHoles


@dataclass
class Chunk:
    """What one REST answer says about the ids from ``start`` to ``reach``: each is in
    ``rows`` (a market trade), ``absent`` (a non-market trade REST leaves out), ``holes``
    (not returned, to fetch again) or ``old`` (older than REST serves)."""

    start: int
    reach: int
    rows: list[TradeRow] = field(default_factory=list)
    absent: list[tuple[int, int]] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)
    old: tuple[int, int] | None = None
    more: bool = False  # the answer was a full page: REST may hold more past reach

    def clip(self, upto: int) -> None:
        """Forget what lies past ``upto`` (the live stream took over from there)."""
        if self.reach <= upto:
            return
        self.reach = upto
        self.rows = [r for r in self.rows if r[2] <= upto]
        self.absent = _clip(self.absent, upto)
        self.holes = _clip(self.holes, upto)
        if self.old is not None:
            self.old = None if self.old[0] > upto else (self.old[0], min(self.old[1], upto))


class GapFiller(threading.Thread):
    """Runs catch-ups, gap fills and the start-up hole scan, one task at a time.

    :param rest: the REST client (with the API key, when there is one).
    :param writer: where recovered trades and gap rows go.
    :param venue: e.g. ``binance-spot``.
    :param tapes: the symbols' continuity state, by upper-case symbol.
    :param db_path: the database, read through its own read-only connection.
    :param max_catchup: most trades one catch-up or one gap fill fetches.
    :param stop: set to stop; unfinished gaps stay open in the table.
    :param market: the market's facts (page size, key, history, non-market trades).
    :param flush: hands the live stream's parsed rows to the writer now (the share of an
        aggregate partly stored is read after them).
    """

    def __init__(
        self,
        rest: RestClient,
        writer: TradeWriter,
        venue: str,
        tapes: dict[str, SymbolTape],
        db_path: Database,
        *,
        max_catchup: int,
        stop: threading.Event,
        market: Market,
        flush: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="gap-filler", daemon=True)
        self.rest = rest
        self.writer = writer
        self.venue = venue
        self.tapes = tapes
        self.db_path = parse_target(db_path)
        self.max_catchup = max_catchup
        self.stop = stop
        self.market = market
        self.flush = flush
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
        self.key_refused = False  # Binance refused the API key: aggTrades from then on

    @property
    def source(self) -> str:
        """Where trades come from now: ``historicalTrades`` or ``aggTrades``."""
        if not self.market.trades_need_key:
            return HISTORICAL
        return HISTORICAL if self.rest.has_key and not self.key_refused else AGGREGATED

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

    def _enqueue(self, task: Task, first: bool = False) -> None:
        symbol_queue = self._queues.get(task.symbol)
        if symbol_queue is None:
            symbol_queue = self._queues[task.symbol] = collections.deque()
        if first or isinstance(task, CatchUp):
            symbol_queue.appendleft(task)  # the live hand-over waits on a catch-up: first
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

    def _key_was_refused(self, task: Task, exc: Exception) -> None:
        """Binance refused the API key: say so once, and go on from aggTrades (the task
        in hand first)."""
        self.key_refused = True
        log.error(
            "BINANCE_API_KEY was refused by Binance (%s): gaps and catch-ups of %s are "
            "recovered from aggTrades instead for the rest of this run (1-second bars "
            "exact, each trade's quantity its aggregate's share). Check the key (a key of "
            "this account, API restrictions, its IP whitelist) and restart to use it.",
            exc,
            self.venue,
        )
        with self._cond:
            self._enqueue(task, first=True)

    def run(self) -> None:
        while not self.stop.is_set():
            task = self._next()
            if task is None:
                continue
            source = self.source
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
                if source == HISTORICAL and self.market.trades_need_key and key_refused(exc):
                    self._key_was_refused(task, exc)
                    continue
                if not isinstance(exc, OSError | ValueError | LookupError | RestError):
                    log.exception("gap filler: %s raised", _label(task))
                if isinstance(task, Fill) and self._refused_for_good(task, exc):
                    continue
                self._retry_later(task, exc)
        log.info("gap filler stopped: %d trades recovered over REST", self.trades_recovered)

    # -- reading REST ----------------------------------------------------------------

    def _reader(self, symbol: str, after_ms: int | None) -> _HistoricalReader | _AggReader:
        if self.source == HISTORICAL:
            return _HistoricalReader(self, symbol, after_ms)
        return _AggReader(self, symbol, after_ms)

    def history_start(self) -> int | None:
        """The oldest trade time (ms) REST serves now, with a margin; None: no limit."""
        if self.market.history_ms is None:
            return None
        return now_ms() - self.market.history_ms + HISTORY_MARGIN_MS

    def hint(self, symbol: str, first: int, after_ms: int | None, *, required: bool) -> int | None:
        """A time (ms) at or before trade ``first``: ``after_ms``, else the time of the
        last stored trade before it (after the trades in flight are committed).

        :raises _NoHint: when ``required`` and none is known.
        """
        if after_ms is not None:
            return after_ms
        found = self._time_before(symbol, first)
        if found is None:
            if self.flush is not None:
                self.flush()
            self._write(lambda conn: None)  # a barrier: what was queued is committed
            found = self._time_before(symbol, first)
        if found is None and required:
            raise _NoHint(first)
        return found

    def _time_before(self, symbol: str, first: int) -> int | None:
        conn = open_reader(self.db_path)
        if conn is None:
            return None
        try:
            row = conn.execute(sql.TIME_BEFORE, (self.venue, symbol, first)).fetchone()
        finally:
            conn.close()
        return None if row is None else row[0] // 1000

    def share(self, symbol: str, agg: Aggregate, first: int, last: int) -> float:
        """The quantity of each id ``first..last`` of ``agg``: an equal share of what the
        ids of it not stored yet hold (all of it when none is stored)."""
        count = agg.last - agg.first + 1
        if first == agg.first and last == agg.last:
            return agg.qty / count
        if self.flush is not None:
            self.flush()  # the live stream's neighbours of the gap are counted as stored
        values = (self.venue, symbol, agg.first, agg.last, first, last)
        stored, stored_qty = self._write(
            lambda conn: one_row(conn.execute(sql.STORED_OF_AGGREGATE, values))
        )
        missing, left = count - stored, agg.qty - stored_qty
        if missing < last - first + 1 or not left > 0:
            return agg.qty / count  # stored copies disagree with REST: an even split
        return left / missing

    def passed_over(self, chunk: Chunk, first: int, last: int, *, proven: bool) -> None:
        """Ids ``first..last`` that an answer passed over: non-market trades when the
        market has them and the answer proves it, else a hole."""
        if proven and self.market.nonmarket and last - first < MAX_NOT_IN_REST:
            chunk.absent.append((first, last))
        else:
            chunk.holes.append((first, last))

    def _store(self, symbol: str, chunk: Chunk) -> int:
        """Queue the chunk's trades and non-market ids; return how many ids are absent."""
        if chunk.rows:
            self.writer.put_trades(chunk.rows)
        absent = 0
        if chunk.absent:
            rows: list[NonMarketRow] = [
                (self.venue, symbol, i, None, NOT_IN_REST)
                for first, last in chunk.absent
                for i in range(first, last + 1)
            ]
            absent = len(rows)
            self.writer.submit(lambda conn: conn.executemany(sql.UPSERT_NONMARKET, rows))
            self.tapes[symbol].stats.nonmarket += absent
        return absent

    def _record_old(self, symbol: str, reason: str, old: tuple[int, int]) -> None:
        """Ids older than REST serves: an open gap saying so (not asked for again)."""
        self._record(symbol, old[0], old[1], reason, "open", 0, OLDER_NOTE)
        self.tapes[symbol].stats.gaps_open += 1
        log.warning("%s: ids %d..%d left as an open gap (%s)", symbol, *old, OLDER_NOTE)

    # -- catch-up ------------------------------------------------------------------------

    def _catch_up(self, task: CatchUp) -> None:
        symbol = task.symbol
        tape = self.tapes[symbol]
        cursor = task.from_id
        recovered = absent = 0
        bounded = False
        reader = self._reader(symbol, task.after_ms)
        log.info("%s: catch-up from id %d (%s)", symbol, cursor, reader.source)
        while True:
            until = task.until
            if until is not None and cursor > until:
                break  # the live stream took over from here
            if recovered >= self.max_catchup:
                bounded = True
                break
            want = self.market.trades_page if until is None else until - cursor + 1
            want = min(want, self.max_catchup - recovered)
            try:
                chunk = reader.read(cursor, lambda: task.until, want)
            except _NoHint:
                break  # nothing stored before it: the remainder is handed on below
            if chunk is None:
                break  # REST has nothing newer (yet)
            until = task.until  # again: the live stream may have taken over meanwhile
            if until is not None:
                if cursor > until:
                    break
                chunk.clip(until)
            absent += self._store(symbol, chunk)
            recovered += len(chunk.rows)
            if chunk.old is not None:
                self._record_old(symbol, "catch-up", chunk.old)
            # Ids are consecutive: one REST skipped (or we refused) is a gap of its own,
            # filled with retries and, failing that, recorded as abandoned: never a
            # silent hole inside a range marked filled.
            for hole in chunk.holes:
                if hole not in task.holes_queued:
                    task.holes_queued.add(hole)
                    self.add(Fill(symbol, *hole, "catch-up", after_ms=task.after_ms))
            cursor = chunk.reach + 1
            if not chunk.more:
                break  # a short page: REST has nothing newer (yet)
        head = None
        if bounded and task.until is None:
            head = self.rest.latest_trade_id(symbol, weight=self.market.recent_weight)
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
        covered = cursor > task.from_id
        if covered:
            note = _absent_note(absent, "fetched over REST after a (re)connect")
            if gap_id is None:
                self._record(
                    symbol,
                    task.from_id,
                    cursor - 1,
                    "catch-up",
                    "filled",
                    recovered,
                    note,
                    reader.source,
                )
            else:
                self._resolve(gap_id, "filled", recovered, cursor - 1, note, reader.source)
                tape.stats.gaps_open -= 1
            tape.stats.gaps_filled += 1
        log.info(
            "%s: catch-up done, %s", symbol, _absent_note(absent, f"{recovered} trade(s) recovered")
        )
        # Nothing covered: the open row (counted open already) still covers cursor..until
        # and is handed on.
        still_open = None if covered else gap_id
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
                self.add(
                    Fill(
                        symbol,
                        cursor,
                        remainder_end,
                        "catch-up",
                        still_open,
                        after_ms=task.after_ms,
                    )
                )

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
        reader = self._reader(symbol, task.after_ms)
        log.info(
            "%s: filling gap %s, ids %d..%d (%s, from %s)",
            symbol,
            gap_id,
            first,
            last,
            task.reason,
            reader.source,
        )
        cursor, recovered, absent, old, empty = first, 0, 0, 0, 0
        while cursor <= last and recovered < self.max_catchup:
            want = min(self.market.trades_page, last - cursor + 1, self.max_catchup - recovered)
            try:
                chunk = reader.read(cursor, lambda: last, want)
            except _NoHint:
                # Nothing stored before it to search aggTrades from: it stays open, and
                # the next start (with what this run stored) tries again.
                self._note(gap_id, cursor, last, NO_HINT_NOTE)
                log.warning("%s: gap %s ids %d..%d: %s", symbol, gap_id, first, last, NO_HINT_NOTE)
                return
            if chunk is None:
                # REST may lag the socket by a moment: 0.5 + 1 + 2 + 4 = 7.5 s in all, a
                # deadline rather than a retry against a busy server, so no jitter.
                empty += 1
                if empty > 4:
                    break
                if self.stop.wait(0.25 * 2**empty):
                    raise Stopped
                continue
            empty = 0
            chunk.clip(last)
            if chunk.old is not None:
                if chunk.old == (first, last):
                    # All of it is older than REST serves: its row stays open, saying so.
                    self._note(gap_id, first, last, OLDER_NOTE)
                    log.warning(
                        "%s: gap %s ids %d..%d: %s", symbol, gap_id, first, last, OLDER_NOTE
                    )
                    return
                self._record_old(symbol, task.reason, chunk.old)
                old += chunk.old[1] - chunk.old[0] + 1
            absent += self._store(symbol, chunk)
            recovered += len(chunk.rows)
            cursor = chunk.reach + 1
        self.trades_recovered += recovered
        stats.gaps_open -= 1
        source = reader.source
        if cursor <= last and recovered >= self.max_catchup:
            # Split: what was fetched is filled; the rest stays open for the next start.
            note = f"beyond --max-catchup={self.max_catchup}; the next start fetches it"
            self._resolve(
                gap_id, "filled", recovered, cursor - 1, _absent_note(absent) or None, source
            )
            self._record(symbol, cursor, last, task.reason, "open", 0, note)
            stats.gaps_filled += 1
            stats.gaps_open += 1
            log.warning("%s: ids %d..%d left as an open gap (%s)", symbol, cursor, last, note)
        elif recovered + absent + old == last - first + 1:
            self._resolve(gap_id, "filled", recovered, last, _absent_note(absent) or None, source)
            stats.gaps_filled += 1
            log.info(
                "%s: gap %s filled (%s)",
                symbol,
                gap_id,
                _absent_note(absent, f"{recovered} trades"),
            )
        else:
            note = _absent_note(absent, f"REST returned {recovered} of {last - first + 1} trades")
            self._resolve(gap_id, "abandoned", recovered, last, note, source if recovered else None)
            stats.gaps_abandoned += 1
            log.error("%s: gap %s ids %d..%d abandoned: %s", symbol, gap_id, first, last, note)

    # -- start-up scan ---------------------------------------------------------------

    def _scan_holes(self, task: ScanHoles) -> None:
        started = time.monotonic()
        conn = connection.connect_read_only(self.db_path)
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
        filled_from: str | None = None,
    ) -> int:
        return self._wait(
            self._submit_record(symbol, first, last, reason, status, recovered, note, filled_from)
        )

    def _submit_record(
        self,
        symbol: str,
        first: int,
        last: int,
        reason: str,
        status: str,
        recovered: int,
        note: str | None,
        filled_from: str | None = None,
    ) -> Future[int]:
        now = now_ms()
        resolved = None if status == "open" else now
        values = (
            self.venue,
            symbol,
            first,
            last,
            reason,
            status,
            now,
            resolved,
            recovered,
            note,
            filled_from,
        )

        def insert(conn: Connection) -> int:
            (gap_id,) = one_row(conn.execute(sql.OPEN_GAP + " RETURNING gap_id", values))
            return int(gap_id)

        return self.writer.submit(insert)

    def _resolve(
        self,
        gap_id: int,
        status: str,
        recovered: int,
        last: int,
        note: str | None,
        filled_from: str | None = None,
    ) -> None:
        values = (status, now_ms(), recovered, last, note, filled_from, gap_id)
        self._write(lambda conn: conn.execute(sql.RESOLVE_GAP, values))

    def _note(self, gap_id: int, first: int, last: int, note: str) -> None:
        """An open gap that stays open: its range and why."""
        values = (first, last, note, gap_id)
        self._write(lambda conn: conn.execute(sql.NOTE_OPEN_GAP, values))

    def _write(self, fn: Callable[[Connection], T]) -> T:
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


def _absent_note(absent: int, before: str = "") -> str:
    """``before``, and how many ids REST passed over (non-market trades), if any."""
    if not absent:
        return before
    said = f"{absent} id(s) not in REST: non-market trades, in nonmarket_trades"
    return f"{before}; {said}" if before else said


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


Bound = Callable[[], "int | None"]  # the last id wanted, read when the answer is in


def _unbounded() -> None:
    return None


class _NoHint(Exception):
    """No time is known before the first missing id, so aggTrades cannot be searched."""


class _HistoricalReader:
    """Pages of ``historicalTrades`` by trade id (spot; USD-M with an API key)."""

    source = HISTORICAL

    def __init__(self, filler: GapFiller, symbol: str, after_ms: int | None) -> None:
        self.filler = filler
        self.symbol = symbol
        self.after_ms = after_ms
        self.history_checked = False

    def read(self, cursor: int, bound: Bound, want: int) -> Chunk | None:
        """What REST says of the ids from ``cursor`` (to ``bound()``); None: nothing yet."""
        filler, market = self.filler, self.filler.market
        if not self.history_checked:
            self.history_checked = True
            old = self._older_than_history(cursor)
            if old is not None:
                chunk = Chunk(cursor, old[1], old=old, more=True)
                upto = bound()
                if upto is not None:
                    chunk.clip(upto)
                return chunk
        limit = max(1, min(market.trades_page, want))
        page = filler.rest.trades_page(
            filler.venue,
            self.symbol,
            cursor,
            limit,
            weight=market.trades_weight,
            keyed=market.trades_need_key,
        )
        rows = [r for r in page.rows if r[2] >= cursor]
        if not rows:
            return None
        more = page.items >= limit
        upto = bound()
        if market.nonmarket and not page.refused:
            # A complete answer from fromId=cursor: every id it passes over up to its last
            # (or up to upto, when it reaches past it) has no market trade.
            top = rows[-1][2]
            reach = top if upto is None else min(top, upto)
            inside = [r for r in rows if r[2] <= reach]
            chunk = Chunk(cursor, reach, inside, more=more)
            for first, last in _missing(inside, cursor, reach):
                filler.passed_over(chunk, first, last, proven=True)
            return chunk
        inside = [r for r in rows if upto is None or r[2] <= upto]
        if not inside:
            return None
        return Chunk(cursor, inside[-1][2], inside, holes=missing_ids(inside, cursor), more=more)

    def _older_than_history(self, cursor: int) -> tuple[int, int] | None:
        """The ids from ``cursor`` older than REST serves, when the gap may reach that far."""
        filler = self.filler
        start = filler.history_start()
        if start is None:
            return None
        hint = filler.hint(self.symbol, cursor, self.after_ms, required=False)
        if hint is None or hint - AGG_HINT_MARGIN_MS >= start:
            return None
        probe = _AggReader(filler, self.symbol, hint).read(cursor, _unbounded, 1)
        return None if probe is None else probe.old


class _AggReader:
    """``aggTrades`` from the aggregate holding ``cursor`` on (USD-M without a key).

    The first read finds that aggregate by time, from ``after_ms`` (the time of a stored
    trade before the gap; trade times do not decrease as ids rise) an hour at a time;
    later reads page by aggregate id.
    """

    source = AGGREGATED

    def __init__(self, filler: GapFiller, symbol: str, after_ms: int | None) -> None:
        self.filler = filler
        self.symbol = symbol
        self.after_ms = after_ms
        self.next_agg: int | None = None  # the aggregate id the next page starts at
        self.found = False  # an aggregate reaching the cursor has been seen
        self.raised = False  # the search started at REST's history limit, not the hint

    def read(self, cursor: int, bound: Bound, want: int) -> Chunk | None:
        """What REST says of the ids from ``cursor`` (to ``bound()``); None: nothing yet.

        :raises _NoHint: when no time before ``cursor`` is known to search from.
        """
        rest = self.filler.rest
        if self.next_agg is None:
            hint = self.filler.hint(self.symbol, cursor, self.after_ms, required=True)
            assert hint is not None  # required=True raises instead
            start = hint - AGG_HINT_MARGIN_MS
            limit = self.filler.history_start()
            if limit is not None and start < limit:
                start, self.raised = limit, True
            newest: Aggregate | None = None
            while True:
                page = rest.agg_trades(self.symbol, start_ms=start)
                full = page.items >= AGG_PAGE
                if any(a.last >= cursor for a in page.aggregates):
                    break
                if page.aggregates and full:
                    # More than a page in this window before the cursor: on by id.
                    self.next_agg = page.aggregates[-1].agg_id + 1
                    return self._by_id(cursor, bound, want)
                if newest is None:
                    # An empty hour: the newest aggregate bounds the walk (a quiet symbol
                    # or a gap older than REST serves must not walk hours up to now).
                    latest = rest.agg_trades(self.symbol, limit=1).aggregates
                    if not latest or latest[-1].last < cursor:
                        return None  # REST holds nothing from the cursor yet
                    newest = latest[-1]
                    if self.raised and newest.time_ms < start:
                        # Every aggregate from the cursor on is older than REST serves.
                        chunk = Chunk(cursor, newest.last, old=(cursor, newest.last), more=True)
                        upto = bound()
                        if upto is not None:
                            chunk.clip(upto)
                        return chunk
                start += AGG_WINDOW_MS + 1
                if start > newest.time_ms:
                    return None  # REST's answers disagree: look again later
            return self._convert(cursor, bound(), want, page.aggregates, page.refused == 0, full)
        return self._by_id(cursor, bound, want)

    def _by_id(self, cursor: int, bound: Bound, want: int) -> Chunk | None:
        while True:
            assert self.next_agg is not None
            asked = self.next_agg
            page = self.filler.rest.agg_trades(self.symbol, from_id=asked)
            aggs = page.aggregates
            if not aggs:
                return None
            complete = page.refused == 0 and aggs[0].agg_id == asked
            full = page.items >= AGG_PAGE
            chunk = self._convert(cursor, bound(), want, aggs, complete, full)
            if chunk is not None or not full:
                return chunk
            # a full page before the cursor: the next one

    def _convert(
        self,
        cursor: int,
        upto: int | None,
        want: int,
        aggs: list[Aggregate],
        complete: bool,
        full: bool,
    ) -> Chunk | None:
        """The trades of ``aggs`` from ``cursor`` (to ``upto``), and what lies between."""
        filler = self.filler
        chunk = Chunk(cursor, cursor - 1, more=full)
        expected = cursor
        previous: Aggregate | None = None
        for agg in aggs:
            if agg.last < expected:
                previous = agg
                self.next_agg = agg.agg_id + 1
                continue
            end = agg.first - 1 if upto is None else min(agg.first - 1, upto)
            if end >= expected:
                if not self.found and self.raised:
                    chunk.old = (expected, end)
                else:
                    # Proven free of market trades only between two consecutive
                    # aggregates of a complete answer (or after the search from the hint).
                    proven = complete and (previous is None or agg.agg_id == previous.agg_id + 1)
                    filler.passed_over(chunk, expected, end, proven=proven)
                expected = end + 1
            self.found = True
            if upto is not None and agg.first > upto:
                self.next_agg = agg.agg_id
                break
            top = agg.last if upto is None else min(agg.last, upto)
            share = filler.share(self.symbol, agg, expected, top)
            time_us = agg.time_ms * 1000
            chunk.rows.extend(
                (filler.venue, self.symbol, i, time_us, agg.price, share, agg.maker)
                for i in range(expected, top + 1)
            )
            expected = top + 1
            previous = agg
            if top < agg.last:  # upto falls inside it: a later read resumes in it
                self.next_agg = agg.agg_id
                break
            self.next_agg = agg.agg_id + 1
            if len(chunk.rows) >= want:
                chunk.more = True
                break
        if expected == cursor:
            return None
        chunk.reach = expected - 1
        return chunk


def _missing(rows: list[TradeRow], start: int, end: int) -> list[tuple[int, int]]:
    """The id ranges in ``start..end`` that ``rows`` (sorted by id) lack."""
    holes, expected = [], start
    for row in rows:
        trade_id = row[2]
        if trade_id > end:
            break
        if trade_id > expected:
            holes.append((expected, trade_id - 1))
        expected = max(expected, trade_id + 1)
    if expected <= end:
        holes.append((expected, end))
    return holes


def _clip(ranges: list[tuple[int, int]], upto: int) -> list[tuple[int, int]]:
    return [(a, min(b, upto)) for a, b in ranges if a <= upto]
