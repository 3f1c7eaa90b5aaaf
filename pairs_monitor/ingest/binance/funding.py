"""Funding of USD-M perpetuals: settled rates from REST, the live rate from ``@markPrice``.

A :class:`FundingRecorder` serves one USD-M feed (``ingest/binance/cli.py`` sets it as the
feed's ``funding``; the feed then subscribes ``<symbol>@markPrice`` and hands every
``markPriceUpdate`` payload to :meth:`FundingRecorder.on_mark_price`):

- **history**: at start, ``/fapi/v1/fundingRate`` of each symbol from the earliest stored
  trade of that (venue, symbol) (none stored: the last :data:`HISTORY_DAYS` days), paged
  by ``startTime``, into ``funding_rates``. Rows stored by an earlier run that already
  reach back that far are not asked again: the fetch goes on from the last one;
- **live**: the latest mark price, index price, rate and next funding time of each
  symbol, upserted into ``funding_live`` at most once a second per symbol;
- **settlement**: when an event's next funding time ``T`` moves past the previous one,
  the funding at the previous ``T`` has settled: its rate is fetched from
  ``fundingRate`` (the settled rate, not the last estimate on the socket), tried again
  every :data:`SETTLE_RETRY_S` until Binance publishes it.

The receive thread only parses and files the payload (no lock, no I/O, nothing that can
wait); two threads of the recorder do the rest: ``funding`` (REST, through the feed's
:class:`~pairs_monitor.ingest.binance.rest.RestClient` and so its weight budget, paced
besides to Binance's own limit on ``fundingRate``) and ``funding-live`` (the once-a-second
upserts). Every write goes through the writer (``writer.submit``).

An answer no exchange sends (not a list, a rate like 5.0 or ``NaN``, a time out of range,
another symbol's row) is refused whole with a message naming the symbol, and nothing of it
is stored; the other symbols and the live rate go on.
"""

from __future__ import annotations

import collections
import datetime
import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.binance.rest import RestBanned, RestClient, RestError, Stopped
from pairs_monitor.ingest.reading import READ_ERRORS, Database, one_row, open_reader
from pairs_monitor.ingest.validate import (
    RateLimitedLog,
    Refused,
    check_decimal,
    check_time_ms,
    shown,
)
from pairs_monitor.store.target import parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest.binance.funding")

HISTORY_DAYS = 7  # how far back the history goes for a symbol with no trade stored
PAGE = 1000  # fundingRate's largest page
FUNDING_RATE_WEIGHT = 1
# Binance: fundingRate shares 500 requests per 5 minutes per IP with fundingInfo, apart
# from the weight budget; 400 leaves room for other tools on the address.
MAX_REQUESTS = 400
REQUEST_WINDOW_S = 300.0
# Binance caps funding at a few tenths of a percent per interval (3 % for the wildest
# symbols); a rate beyond 10 % is no rate Binance sets but a broken answer.
MAX_ABS_RATE = 0.1
# Funding every 8 h for most symbols (4 h or 1 h for some): a stored history whose first
# row is within this of where it must start already reaches back far enough.
MAX_INTERVAL_MS = 8 * 3600 * 1000
# A next funding time further than this from its event's time is not one Binance sends.
MAX_NEXT_FUNDING_MS = 24 * 3600 * 1000
LIVE_FLUSH_S = 1.0
RETRY_S = 60.0  # a fetch that failed (network, 5xx) is tried again after this long
SETTLE_RETRY_S = 10.0
SETTLE_TRIES = 30  # five minutes for Binance to publish a settled rate
# A settled row's fundingTime may lag the announced T by a few milliseconds.
SETTLE_SLACK_MS = 60_000

_RATE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

UPSERT_FUNDING_RATE = """
INSERT INTO funding_rates (venue, symbol, funding_time_ms, rate, mark_price)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol, funding_time_ms) DO UPDATE SET
    rate = excluded.rate, mark_price = coalesce(excluded.mark_price, funding_rates.mark_price)
"""
UPSERT_FUNDING_LIVE = """
INSERT INTO funding_live
    (venue, symbol, event_time_ms, mark_price, index_price, rate, next_funding_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol) DO UPDATE SET
    event_time_ms = excluded.event_time_ms, mark_price = excluded.mark_price,
    index_price = excluded.index_price, rate = excluded.rate,
    next_funding_ms = excluded.next_funding_ms
WHERE excluded.event_time_ms >= funding_live.event_time_ms
"""
EARLIEST_TRADE = "SELECT min(trade_time_us) FROM trades WHERE venue = ? AND symbol = ?"
STORED_FUNDING = (
    "SELECT min(funding_time_ms), max(funding_time_ms) FROM funding_rates "
    "WHERE venue = ? AND symbol = ?"
)

FundingRow = tuple[str, str, int, float, float | None]  # as funding_rates' columns
LiveRow = tuple[str, str, int, float, float | None, float, int]  # as funding_live's


class FundingRefused(ValueError):
    """A ``fundingRate`` answer no exchange sends; nothing of it is stored."""


def check_rate(value: object, field: str = "fundingRate") -> float:
    """A funding rate from Binance's decimal string: finite, at most :data:`MAX_ABS_RATE`.

    :raises Refused: numbers, ``"NaN"``, exponents, ``"5.0"``.
    """
    if type(value) is not str or not _RATE.fullmatch(value):
        raise Refused(field, value, "a funding rate must be a plain decimal string")
    rate = float(value)
    if abs(rate) > MAX_ABS_RATE:
        raise Refused(field, value, f"beyond +-{MAX_ABS_RATE:g}: no rate Binance sets")
    return rate


def funding_rows(
    venue: str, symbol: str, payload: object, start_ms: int, *, now: int | None = None
) -> list[FundingRow]:
    """The ``funding_rates`` rows of one ``fundingRate`` answer asked from ``start_ms``.

    Example item: ``{"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime":
    1570636800000, "markPrice": "34287.54619963"}`` (``markPrice`` may be empty or absent
    on old rows: NULL).

    :raises FundingRefused: the answer is not a list, or one item is not a funding row of
        ``symbol`` at or after ``start_ms`` and not ahead of now (the message says which
        and why); the whole answer is refused.
    """
    if not isinstance(payload, list):
        raise FundingRefused(f"not a list but {shown(payload)}")
    rows = []
    for number, item in enumerate(payload):
        try:
            if not isinstance(item, dict):
                raise Refused("item", item, "not an object")
            if item.get("symbol") != symbol:
                raise Refused("symbol", item.get("symbol"), f"not {symbol}")
            time_ms = check_time_ms(item.get("fundingTime"), "fundingTime", now_ms=now)
            if time_ms < start_ms:
                raise Refused("fundingTime", time_ms, f"before the startTime asked, {start_ms}")
            rate = check_rate(item.get("fundingRate"))
            mark = item.get("markPrice")
            mark_price = None if mark in (None, "") else check_decimal(mark, "markPrice")
        except Refused as exc:
            raise FundingRefused(f"item {number}: {exc}") from None
        rows.append((venue, symbol, time_ms, rate, mark_price))
    return rows


def live_row(venue: str, payload: Any, symbols: Collection[str]) -> LiveRow | None:
    """The ``funding_live`` row of one ``markPriceUpdate`` payload; None for a contract
    without funding (a delivery contract: ``"r": ""``, ``"T": 0``).

    Example payload: ``{"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p":
    "11794.15000000", "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167",
    "T": 1562306400000}``.

    :raises Refused: a value no exchange sends, or a symbol not recorded here.
    """
    if not isinstance(payload, dict):
        raise Refused("payload", payload, "not an object")
    symbol = payload.get("s")
    if not isinstance(symbol, str) or symbol not in symbols:
        raise Refused("s", symbol, "not a symbol recorded here")
    if payload.get("r") == "" and payload.get("T") == 0:
        return None
    event_ms = check_time_ms(payload.get("E"), "E")
    mark_price = check_decimal(payload.get("p"), "p")
    index = payload.get("i")
    index_price = None if index in (None, "") else check_decimal(index, "i")
    rate = check_rate(payload.get("r"), "r")
    next_ms = payload.get("T")
    if type(next_ms) is not int or abs(next_ms - event_ms) > MAX_NEXT_FUNDING_MS:
        raise Refused("T", next_ms, "not a funding time within a day of the event")
    return (venue, symbol, event_ms, mark_price, index_price, rate, next_ms)


@dataclass(order=True)
class _Fetch:
    """One ``fundingRate`` request to make: from ``start_ms``, due at ``due`` (monotonic).

    ``settles``: the funding time whose settled rate this fetch is for (retried until
    the answer has it), or None for history.
    """

    due: float
    seq: int
    symbol: str = field(compare=False)
    start_ms: int = field(compare=False)
    settles: int | None = field(default=None, compare=False)
    tries: int = field(default=0, compare=False)


class _Pacer:
    """At most ``count`` requests in any ``window`` seconds (a sliding window)."""

    def __init__(self, count: int, window: float) -> None:
        self.count = count
        self.window = window
        self.times: collections.deque[float] = collections.deque()

    def wait(self, stop: threading.Event) -> None:
        """Return when a request is allowed (and count it).

        :raises Stopped: when ``stop`` is set meanwhile.
        """
        while True:
            now = time.monotonic()
            while self.times and now - self.times[0] >= self.window:
                self.times.popleft()
            if len(self.times) < self.count:
                self.times.append(now)
                return
            if stop.wait(min(self.window - (now - self.times[0]), 1.0)):
                raise Stopped


class FundingRecorder:
    """Funding history, settlements and the live rate of one USD-M feed's symbols.

    :param rest: the feed's REST client (its weight budget; it raises ``Stopped`` once
        the feed stops).
    :param writer: the writer thread; every row goes through ``writer.submit``.
    :param venue: the feed's venue (``binance-usdm``).
    :param symbols: its symbols, upper case.
    :param db_path: the database, read (read-only) at start for where history begins.
    """

    def __init__(
        self,
        rest: RestClient,
        writer: TradeWriter,
        venue: str,
        symbols: Sequence[str],
        db_path: Database,
        *,
        max_requests: int = MAX_REQUESTS,
        request_window: float = REQUEST_WINDOW_S,
    ) -> None:
        self.rest = rest
        self.writer = writer
        self.venue = venue
        self.symbols = list(symbols)
        self.db_path = parse_target(db_path)
        self.stop = threading.Event()
        self.rates_stored = 0  # funding_rates rows handed to the writer
        self.refused = 0  # fundingRate answers and markPrice events refused
        self._symbol_set = frozenset(self.symbols)
        self._latest: dict[str, LiveRow] = {}  # written by receive threads, popped by live
        self._next_funding: dict[str, int] = {}  # each symbol's T as its events say
        self._settled: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._last_stored: dict[str, int] = {}  # the latest funding time stored per symbol
        self._history_rows: collections.Counter[str] = collections.Counter()
        self._history_since: dict[str, int] = {}
        self._tasks: list[_Fetch] = []
        self._seq = itertools.count()
        self._pacer = _Pacer(max_requests, request_window)
        self._bad = RateLimitedLog(log)
        self.threads = [
            threading.Thread(target=self._fetch_loop, name="funding", daemon=True),
            threading.Thread(target=self._live_loop, name="funding-live", daemon=True),
        ]

    # -- the receive thread --------------------------------------------------------------

    def on_mark_price(self, payload: dict) -> None:
        """File one ``markPriceUpdate`` payload (receive thread: parses, never waits)."""
        try:
            row = live_row(self.venue, payload, self._symbol_set)
        except Refused as exc:
            self.refused += 1
            self._bad.report(f"markPrice {exc.refusal.field}", "markPrice refused: %s", exc)
            return
        if row is None:
            return
        symbol, next_ms = row[1], row[6]
        previous = self._next_funding.get(symbol)
        if next_ms != previous:
            # Forward: the funding at the previous time has settled. Back (a funding
            # brought forward): nothing settled yet; the new time is the one to watch.
            self._next_funding[symbol] = next_ms
            if previous is not None and next_ms > previous:
                self._settled.put((symbol, previous))
        self._latest[symbol] = row

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start fetching the history and writing the live rates."""
        for thread in self.threads:
            thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop; the latest live rates are handed to the writer on the way out."""
        self.stop.set()
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(timeout)

    # -- funding_live --------------------------------------------------------------------

    def _live_loop(self) -> None:
        while not self.stop.wait(LIVE_FLUSH_S):
            self._flush_live()
        self._flush_live()

    def _flush_live(self) -> None:
        # pop, not a swap of dicts: an event filed meanwhile stays for the next flush
        rows = [row for s in self.symbols if (row := self._latest.pop(s, None)) is not None]
        if rows:
            self.writer.submit(lambda conn: conn.executemany(UPSERT_FUNDING_LIVE, rows))

    # -- funding_rates -------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        try:
            self._history_since = self._history_starts()
            for symbol, start_ms in self._history_since.items():
                self._add(symbol, start_ms)
            while not self.stop.is_set():
                self._take_settlements()
                task = self._tasks[0] if self._tasks else None
                if task is None or task.due > time.monotonic():
                    self.stop.wait(0.1)
                    continue
                heapq.heappop(self._tasks)
                self._pacer.wait(self.stop)
                self._fetch(task)
        except Stopped:
            pass

    def _add(
        self,
        symbol: str,
        start_ms: int,
        *,
        after: float = 0.0,
        settles: int | None = None,
        tries: int = 0,
    ) -> None:
        due = time.monotonic() + after
        heapq.heappush(self._tasks, _Fetch(due, next(self._seq), symbol, start_ms, settles, tries))

    def _history_starts(self) -> dict[str, int]:
        """Where each symbol's history fetch begins (see the module docstring)."""
        default = now_ms() - HISTORY_DAYS * 86_400_000
        starts = dict.fromkeys(self.symbols, default)
        try:
            conn = open_reader(self.db_path)
        except READ_ERRORS as exc:
            log.warning(
                "cannot read %s (%s): funding from the last %d days",
                self.db_path,
                exc,
                HISTORY_DAYS,
            )
            return starts
        if conn is None:  # nothing stored yet
            return starts
        try:
            for symbol in self.symbols:
                key = (self.venue, symbol)
                (earliest_us,) = one_row(conn.execute(EARLIEST_TRADE, key))
                start = default if earliest_us is None else earliest_us // 1000
                first, last = one_row(conn.execute(STORED_FUNDING, key))
                if first is not None and first <= start + MAX_INTERVAL_MS:
                    start = last + 1
                    self._last_stored[symbol] = last
                starts[symbol] = start
        except READ_ERRORS as exc:
            log.warning(
                "cannot read %s (%s): funding from the last %d days",
                self.db_path,
                exc,
                HISTORY_DAYS,
            )
        finally:
            conn.close()
        return starts

    def _take_settlements(self) -> None:
        while True:
            try:
                symbol, funding_ms = self._settled.get_nowait()
            except queue.Empty:
                return
            # from the last rate stored: settlements missed meanwhile come along
            start = funding_ms - SETTLE_SLACK_MS
            last = self._last_stored.get(symbol)
            self._add(symbol, start if last is None else min(last + 1, start), settles=funding_ms)

    def _fetch(self, task: _Fetch) -> None:
        symbol = task.symbol
        params = {"symbol": symbol, "startTime": task.start_ms, "limit": PAGE}
        try:
            payload = self.rest.get("fundingRate", params, FUNDING_RATE_WEIGHT, attempts=3)
        except RestBanned as exc:
            log.warning(
                "%s: fundingRate rate limited; asking again in %.0f s", symbol, exc.retry_after
            )
            self._add(
                symbol, task.start_ms, after=exc.retry_after, settles=task.settles, tries=task.tries
            )
            return
        except RestError as exc:
            log.error(
                "%s: fundingRate refused (%s): its funding is not recorded this run", symbol, exc
            )
            return
        except requests.RequestException as exc:
            log.warning("%s: fundingRate failed (%s); asking again in %.0f s", symbol, exc, RETRY_S)
            self._add(symbol, task.start_ms, after=RETRY_S, settles=task.settles, tries=task.tries)
            return
        try:
            rows = funding_rows(self.venue, symbol, payload, task.start_ms)
        except FundingRefused as exc:
            self.refused += 1
            log.error("%s: fundingRate answer refused, nothing stored from it: %s", symbol, exc)
            return
        if rows:
            self.writer.submit(lambda conn: conn.executemany(UPSERT_FUNDING_RATE, rows))
            self.rates_stored += len(rows)
            latest = max(row[2] for row in rows)
            self._last_stored[symbol] = max(self._last_stored.get(symbol, latest), latest)
            if task.settles is not None:
                for row in rows:
                    if row[2] >= task.settles - SETTLE_SLACK_MS:
                        log.info("%s: funding at %s settled, rate %s", symbol, _utc(row[2]), row[3])
        full = len(rows) >= PAGE
        if full:  # there may be more
            self._add(symbol, max(row[2] for row in rows) + 1, settles=task.settles)
        if task.settles is None:
            self._history_rows[symbol] += len(rows)
            if not full:
                log.info(
                    "%s: %d funding rate(s) stored from fundingRate since %s",
                    symbol,
                    self._history_rows[symbol],
                    _utc(self._history_since[symbol]),
                )
            return
        if full or any(row[2] >= task.settles - SETTLE_SLACK_MS for row in rows):
            return
        if task.tries + 1 >= SETTLE_TRIES:
            log.warning(
                "%s: fundingRate still has no settlement at %s after %d tries; the "
                "next start fetches it",
                symbol,
                _utc(task.settles),
                SETTLE_TRIES,
            )
            return
        self._add(
            symbol, task.start_ms, after=SETTLE_RETRY_S, settles=task.settles, tries=task.tries + 1
        )


def _utc(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds")
