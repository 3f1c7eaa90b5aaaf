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

:class:`SymbolTape` is the continuity bookkeeping shared by the live stream and this
thread; its comments explain how they hand over to each other without fetching twice.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from pairs_monitor.clock import Backoff, now_ms
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.store import schema
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest.binance.rest")

PAGE = 1000  # historicalTrades' largest page
HISTORICAL_TRADES_WEIGHT = 25
RECENT_TRADES_WEIGHT = 25
EXCHANGE_INFO_WEIGHT = 20


class RestError(Exception):
    """Binance answered a request with an error that retrying will not cure (a 4xx)."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status}, code {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


class Stopped(Exception):
    """The daemon is stopping; the REST work in hand is left for the next start."""


class WeightBudget:
    """A token bucket of request weight: ``per_minute`` weight, refilled continuously.

    Binance allows 6,000 weight a minute per IP on spot (2,400 on USD-M futures); the
    default budget leaves room for other tools sharing the address.
    """

    def __init__(self, per_minute: float) -> None:
        self.per_minute = float(per_minute)
        self.tokens = self.per_minute
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def spend(self, weight: float, stop: threading.Event) -> None:
        """Wait until ``weight`` is available, then take it.

        :raises Stopped: when ``stop`` is set while waiting.
        """
        weight = min(weight, self.per_minute)
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(
                    self.per_minute, self.tokens + (now - self.stamp) * self.per_minute / 60
                )
                self.stamp = now
                if self.tokens >= weight:
                    self.tokens -= weight
                    return
                wait = (weight - self.tokens) * 60 / self.per_minute
            if stop.wait(min(wait, 1.0)):
                raise Stopped


class RestClient:
    """Binance market-data REST calls, polite: weight budget, ``Retry-After``, retries.

    :param base_url: e.g. ``https://api.binance.com``.
    :param prefix: ``/api/v3`` (spot) or ``/fapi/v1`` (USD-M futures).
    :param weight_per_min: request weight allowed per minute.
    :param stop: set when the daemon stops; waits end early and raise :class:`Stopped`.
    :param timeout: seconds for connect and for each read.
    """

    def __init__(
        self,
        base_url: str,
        prefix: str,
        *,
        weight_per_min: float,
        stop: threading.Event,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self.budget = WeightBudget(weight_per_min)
        self.stop = stop
        self.timeout = timeout
        self.session = requests.Session()  # certificate checks stay on (verify=True)
        self.requests = 0
        self.rate_limited = 0

    def get(
        self,
        endpoint: str,
        params: dict,
        weight: int,
        *,
        attempts: int | None = None,
        timeout: float | None = None,
    ):
        """GET ``prefix/endpoint`` and return the decoded JSON.

        Network errors and 5xx are retried with backoff (``attempts`` times, or until
        stopped when None); 429 and 418 wait for ``Retry-After`` and do not count.

        :raises RestError: for a 4xx answer other than 429/418.
        :raises Stopped: when the daemon stops meanwhile.
        :raises requests.RequestException: when ``attempts`` run out.
        :param timeout: seconds for connect and each read, if not the client's own.
        """
        url = f"{self.base_url}{self.prefix}/{endpoint}"
        failures = 0
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            if self.stop.is_set():
                raise Stopped
            self.budget.spend(weight, self.stop)
            self.requests += 1
            try:
                response = self.session.get(url, params=params, timeout=timeout or self.timeout)
            except requests.RequestException as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise
                delay = backoff.next_delay()
                log.warning("GET %s failed (%s); retrying in %.1f s", endpoint, exc, delay)
                self._sleep(delay)
                continue
            status = response.status_code
            if status in (429, 418):
                self.rate_limited += 1
                wait = _retry_after(response.headers.get("Retry-After"))
                log.warning(
                    "GET %s: HTTP %d (rate limited%s); waiting %.0f s as Retry-After asks",
                    endpoint,
                    status,
                    ", IP banned" if status == 418 else "",
                    wait,
                )
                self._sleep(wait)
                continue
            if status >= 500:
                failures += 1
                if attempts is not None and failures >= attempts:
                    response.raise_for_status()
                delay = backoff.next_delay()
                log.warning("GET %s: HTTP %d; retrying in %.1f s", endpoint, status, delay)
                self._sleep(delay)
                continue
            if status >= 400:
                code, msg = _error_of(response)
                raise RestError(status, code, msg)
            return orjson.loads(response.content)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def historical_trades(self, venue: str, symbol: str, from_id: int, limit: int = PAGE):
        """Trades of ``symbol`` from id ``from_id`` on, as writer rows, ascending by id."""
        payload = self.get(
            "historicalTrades",
            {"symbol": symbol, "fromId": from_id, "limit": limit},
            HISTORICAL_TRADES_WEIGHT,
        )
        return [rest_row(venue, symbol, item) for item in payload]

    def latest_trade_id(self, symbol: str) -> int | None:
        """The id of the most recent trade of ``symbol`` (None when it never traded)."""
        payload = self.get("trades", {"symbol": symbol, "limit": 1}, RECENT_TRADES_WEIGHT)
        return int(payload[-1]["id"]) if payload else None

    def exchange_symbols(self, timeout: float | None = None) -> dict[str, str]:
        """Every symbol listed by ``exchangeInfo`` with its status (e.g. TRADING); one try."""
        payload = self.get("exchangeInfo", {}, EXCHANGE_INFO_WEIGHT, attempts=1, timeout=timeout)
        return {item["symbol"]: item.get("status", "") for item in payload["symbols"]}


def rest_row(venue: str, symbol: str, item: dict) -> tuple:
    """A writer row from one ``historicalTrades`` item.

    Example item: ``{"id": 28457, "price": "4.00000100", "qty": "12.00000000",
    "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": true,
    "isBestMatch": true}`` (time in ms; stored in µs).
    """
    return (
        venue,
        symbol,
        int(item["id"]),
        int(item["time"]) * 1000,
        float(item["price"]),
        float(item["qty"]),
        1 if item["isBuyerMaker"] else 0,
    )


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 60.0
    except ValueError:
        return 60.0


def _error_of(response: requests.Response) -> tuple[int | None, str]:
    try:
        body = orjson.loads(response.content)
        return body.get("code"), body.get("msg", "")
    except (orjson.JSONDecodeError, AttributeError):
        return None, response.text[:200]


# -- continuity bookkeeping ------------------------------------------------------------


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


@dataclass(eq=False)
class SymbolTape:
    """Where the tape of one symbol stands, shared by the live stream and the gap filler.

    ``high`` is the frontier: every id up to it is stored, queued for storage, or
    recorded as a gap. The live stream advances it trade by trade and reports a jump as
    a gap. After a (re)connect a :class:`CatchUp` is ``awaiting`` the first live trade:
    that trade does not open a gap, it tells the catch-up where to stop. If the catch-up
    finishes first (a quiet symbol), it moves ``high`` to what REST delivered and live
    continuity resumes from there.
    """

    symbol: str
    stats: FeedStats
    high: int | None = None
    awaiting: CatchUp | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


# -- the gap filler thread --------------------------------------------------------------


@dataclass
class Fill:
    """Fetch the ids ``first..last`` of ``symbol``; ``gap_id`` when its row exists already."""

    symbol: str
    first: int
    last: int
    reason: str
    gap_id: int | None = None


@dataclass
class ScanHoles:
    """Look for holes inside the stored range (ids up to ``upto``) of ``symbol``."""

    symbol: str
    upto: int
    skip: list[tuple[int, int]]  # ranges already queued as open gaps


_OPEN_GAP = (
    "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, status, "
    "detected_ms, resolved_ms, trades_recovered, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RESOLVE_GAP = (
    "UPDATE gaps SET status = ?, resolved_ms = ?, trades_recovered = trades_recovered + ?, "
    "last_missing_id = ?, note = ? WHERE gap_id = ?"
)
_HOLES = """
SELECT trade_id + 1, next_id - 1 FROM (
    SELECT trade_id, lead(trade_id) OVER (ORDER BY trade_id) AS next_id
    FROM trades WHERE venue = ? AND symbol = ? AND trade_id <= ?)
WHERE next_id > trade_id + 1
ORDER BY trade_id
"""


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
        self.tasks: queue.Queue[Any] = queue.Queue()
        self.trades_recovered = 0

    def add(self, task: CatchUp | Fill | ScanHoles) -> None:
        """Queue a task; safe from any thread, never blocks."""
        self.tasks.put(task)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                task = self.tasks.get(timeout=0.2)
            except queue.Empty:
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
            except Exception:  # a bug or a surprise from REST: report, keep the thread
                log.exception("gap filler: %r failed; the gap stays open", task)
                if isinstance(task, CatchUp):
                    self._release(task)
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
            rows = [r for r in page if r[2] >= cursor and (until is None or r[2] <= until)]
            if rows:
                self.writer.put_trades(rows)
                recovered += len(rows)
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
        if recovered:
            self._record(
                symbol,
                task.from_id,
                cursor - 1,
                "catch-up",
                "filled",
                recovered,
                "fetched over REST after a (re)connect",
            )
            tape.stats.gaps_filled += 1
        log.info("%s: catch-up done, %d trade(s) recovered", symbol, recovered)
        if remainder_end is not None and remainder_end >= cursor:
            if bounded:
                note = f"beyond --max-catchup={self.max_catchup}; the next start fetches it"
                self._record(symbol, cursor, remainder_end, "catch-up", "open", 0, note)
                tape.stats.gaps_open += 1
                log.warning(
                    "%s: ids %d..%d left as an open gap (%s)", symbol, cursor, remainder_end, note
                )
            else:  # REST lags the live stream: fill it as an ordinary gap, with retries
                self.add(Fill(symbol, cursor, remainder_end, "catch-up"))

    def _release(self, task: CatchUp) -> None:
        """Hand a failed catch-up's range on, so that something still covers it.

        Before the first live trade: the trade's jump will open a gap from the same id.
        After it: the range up to that trade becomes an ordinary gap to fill.
        """
        tape = self.tapes[task.symbol]
        with tape.lock:
            task.done = True
            if tape.awaiting is task:
                tape.awaiting = None
            until = task.until
        if until is not None and until >= task.from_id:
            self.add(Fill(task.symbol, task.from_id, until, "catch-up"))

    # -- gap fill --------------------------------------------------------------------

    def _fill(self, task: Fill) -> None:
        symbol, first, last = task.symbol, task.first, task.last
        stats = self.tapes[symbol].stats
        gap_id = task.gap_id
        if gap_id is None:
            gap_id = self._record(symbol, first, last, task.reason, "open", 0, None)
            stats.gaps_open += 1
        log.info("%s: filling gap %s, ids %d..%d (%s)", symbol, gap_id, first, last, task.reason)
        cursor, recovered, empty = first, 0, 0
        rest_lag = Backoff(base=0.5, cap=4.0)
        while cursor <= last and recovered < self.max_catchup:
            want = min(PAGE, last - cursor + 1, self.max_catchup - recovered)
            page = self.rest.historical_trades(self.venue, symbol, cursor, want)
            rows = [r for r in page if cursor <= r[2] <= last]
            if not rows:
                # REST may lag the socket by a moment; give it a few tries.
                empty += 1
                if empty > 4:
                    break
                if self.stop.wait(rest_lag.next_delay()):
                    raise Stopped
                continue
            empty = 0
            rest_lag.reset()
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
            holes = conn.execute(_HOLES, (self.venue, task.symbol, task.upto)).fetchall()
        finally:
            conn.close()
        found = 0
        for first, last in holes:
            for a, b in _subtract((first, last), task.skip):
                found += 1
                self.add(Fill(task.symbol, a, b, "stored-hole"))
        log.info(
            "%s: %d hole(s) inside the stored range (scan took %.2f s)",
            task.symbol,
            found,
            time.monotonic() - started,
        )

    # -- gaps table --------------------------------------------------------------------

    def _record(self, symbol, first, last, reason, status, recovered, note) -> int | None:
        now = now_ms()
        resolved = None if status == "open" else now
        values = (self.venue, symbol, first, last, reason, status, now, resolved, recovered, note)
        return self._write(lambda conn: conn.execute(_OPEN_GAP, values).lastrowid)

    def _resolve(self, gap_id, status, recovered, last, note) -> None:
        values = (status, now_ms(), recovered, last, note, gap_id)
        self._write(lambda conn: conn.execute(_RESOLVE_GAP, values))

    def _write(self, fn: Callable[[sqlite3.Connection], Any]):
        future = self.writer.submit(fn)
        while True:
            try:
                return future.result(timeout=1.0)
            except FutureTimeout:
                if self.stop.is_set():
                    raise Stopped from None


def load_start_state(
    db_path: Path, venue: str, symbols: Iterable[str]
) -> tuple[dict[str, int | None], dict[str, list[tuple[int, int, int]]]]:
    """Stored last trade id and open gap rows ``(gap_id, first, last)`` of each symbol."""
    symbols = list(symbols)
    stored = dict.fromkeys(symbols)
    open_gaps: dict[str, list[tuple[int, int, int]]] = {s: [] for s in symbols}
    if not Path(db_path).exists():
        return stored, open_gaps
    conn = schema.connect_read_only(db_path)
    try:
        for symbol in symbols:
            stored[symbol] = conn.execute(
                "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ?",
                (venue, symbol),
            ).fetchone()[0]
            open_gaps[symbol] = conn.execute(
                "SELECT gap_id, first_missing_id, last_missing_id FROM gaps "
                "WHERE venue = ? AND symbol = ? AND status = 'open' ORDER BY first_missing_id",
                (venue, symbol),
            ).fetchall()
    finally:
        conn.close()
    return stored, open_gaps


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
