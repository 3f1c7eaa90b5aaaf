"""History from klines: the market before the daemon started, and outages trades cannot fill.

``--history DURATION`` (default ``24h``, ``0`` off): on start, for every live symbol, the
period from ``now - DURATION`` up to its first stored trade (on an empty database: up to
now) is filled from Binance's klines, so the page has hours of market at once instead of
"waiting":

- **spot**: 1-second klines (``/api/v3/klines``, 1000 a request, weight 2) become the
  same ``bars_1s`` rows the page reads, exactly (open, high, low, close, volume, quote
  volume, taker buy volume, trade count), marked ``from_klines = 1`` (they have no trade
  rows, so trade ids 0). 24 hours of one symbol is 87 requests;
- **USD-M**: there are no 1-second klines; 1-minute klines (``/fapi/v1/klines``, 1000 a
  request, weight 5) become ``kline_bars`` rows (``interval_s = 60``), which the page
  merges with finer bars.

A kline with no trade makes no bar: seconds without trades stay without bars, as they are
for trades. Kline bars stop strictly before the interval holding the first stored trade,
so the bars of trades (whose first second may be partial: the stream began within it) are
never touched. ``kline_spans`` records each period fetched; a restart asks only for what no
span covers. The first stored trade is read in the writer's transaction that stores each
page, so a live trade that lands meanwhile is always where the tape begins.

**Outages**: once the history is in, every ``poll_s`` the open gaps trades could not fill
this run (``beyond --max-catchup``, older than REST serves) and abandoned ones get kline
bars for the intervals strictly between the stored trades around them; the gap row's
``covered_by`` says so. When a later start recovers the gap's trades, the trades' bars
replace the klines' (the schema's trigger ``bars_1s_trades_replace_klines``).

**Polite, in the background**: requests go through the market's
:class:`~pairs_monitor.ingest.binance.rest.RestClient` (its weight budget, ``Retry-After``
and retries) and besides spend from a budget of their own of ``share`` (half) of it, so a
gap fill of the live stream always finds weight left. ``workers`` threads fetch pages,
newest first (the page's default lookback is the last hour), each page written through the
writer (``TradeWriter.submit``) as one small call: live trades never wait for history.
An answer no exchange sends (a price that is not a plain decimal, a time outside the page
asked for, a low above the high) is refused whole: nothing of it is stored and its period
is asked again by the next start.

The daemon builds one :class:`HistoryBackfill` per market beside its feed (the feed's
``rest``), ``start()`` s it with the feed and ``close()`` s it on the way out.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.binance.rest import (
    RestBanned,
    RestClient,
    RestError,
    Stopped,
    WeightBudget,
)
from pairs_monitor.ingest.reading import Database, one_row
from pairs_monitor.ingest.validate import RateLimitedLog, shown
from pairs_monitor.store import connection, klines
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.klines import KlineBar
from pairs_monitor.store.target import parse_target
from pairs_monitor.store.writer import TradeWriter, WriterFatalError

log = logging.getLogger("ingest.binance.history")

DEFAULT_DURATION = "24h"
MAX_DURATION_S = 31 * 86_400  # a month of 1-second bars is 2.7 million rows a symbol
SHARE = 0.5  # of the market's weight budget the history may spend; the rest stays for gaps
WORKERS = 4  # pages fetched at once: Binance's ~100-300 ms a request, four at a time
POLL_S = 30.0  # how often open gaps are looked at for kline cover, once the history is in
RETRY_S = 10.0  # a page that failed (network, 5xx, after the client's own retries) waits
TRIES = 3  # failed pages are asked this many times; then the next start asks again
PASSES = 3  # history passes: the second reaches a tape that began while the first ran
_DURATION = re.compile(r"(?P<number>[0-9]+)(?P<unit>[smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_AMOUNT = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?")
# Notes the gap filler writes on open gaps it leaves for a later start (gaps.py).
_LEFT_OPEN = ("beyond --max-catchup%", "older than the 3 months%")


@dataclass(frozen=True)
class KlineSpec:
    """The klines a market's history is made of.

    :param interval: Binance's name of the interval (``1s``, ``1m``).
    :param seconds: its length.
    :param page: klines asked in one request.
    :param weight: the request weight of a request for ``limit`` klines.
    :param label: for ``gaps.covered_by``.
    """

    interval: str
    seconds: int
    page: int
    weight: Callable[[int], int]
    label: str


def _usdm_weight(limit: int) -> int:
    """``/fapi/v1/klines``: [1,100) 1, [100,500) 2, [500,1000] 5, above 10 (Binance's docs)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# Spot: weight 2 whatever the limit (binance-spot-api-docs rest-api.md); USD-M: no 1s, and
# 1000 a page (weight 5) costs less a kline than 1500 (weight 10).
SPOT_KLINES = KlineSpec("1s", 1, 1000, lambda limit: 2, "1s klines")
USDM_KLINES = KlineSpec("1m", 60, 1000, _usdm_weight, "1m klines")
KLINES = {"spot": SPOT_KLINES, "usdm": USDM_KLINES}


def parse_duration(text: str) -> int:
    """Seconds from ``--history``'s value: ``0`` (off), or a number with a unit ``s``,
    ``m``, ``h`` or ``d`` (``90m``, ``24h``, ``7d``), at most 31 days.

    :raises argparse.ArgumentTypeError: with what to write instead.
    """
    text = text.strip().lower()
    if text == "0":
        return 0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a number and a unit, s, m, h or d "
            "(e.g. 90m, 24h, 7d), or 0 for no history"
        )
    seconds = int(match["number"]) * _UNITS[match["unit"]]
    if seconds > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"{text} is more than the 31 days --history reaches back (a month of 1-second "
            "bars is 2.7 million rows a symbol): ask for less"
        )
    return seconds


class KlinesRefused(ValueError):
    """A klines answer no exchange sends; nothing of it is stored."""


def kline_bars(payload: object, start_s: int, end_s: int, interval_s: int) -> list[KlineBar]:
    """The bars of one klines answer asked for ``[start_s, end_s)``: its klines with trades.

    Example row: ``[1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
    "148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397",
    "28.46694368", "0"]`` (open time, open, high, low, close, volume, close time, quote
    volume, trades, taker buy volume, taker buy quote volume, ignore). A kline of 0 trades
    makes no bar.

    :raises KlinesRefused: the answer is not a list of klines of that period, or one row
        holds a value no exchange sends (the message says which row and why).
    """
    if not isinstance(payload, list):
        raise KlinesRefused(f"not a list but {shown(payload)}")
    bars: list[KlineBar] = []
    previous = None
    for number, row in enumerate(payload):
        try:
            bar = _bar(row, start_s, end_s, interval_s)
        except ValueError as exc:
            raise KlinesRefused(f"row {number}: {exc}") from None
        if previous is not None and bar[0] <= previous:
            raise KlinesRefused(f"row {number}: open time not after the row before it")
        previous = bar[0]
        if bar.trade_count:
            bars.append(bar)
    return bars


def _bar(row: object, start_s: int, end_s: int, interval_s: int) -> KlineBar:
    if not isinstance(row, list) or len(row) < 11:
        raise ValueError(f"not a kline of 12 fields: {shown(row)}")
    open_ms, count = row[0], row[8]
    if type(open_ms) is not int or open_ms % (interval_s * 1000):
        raise ValueError(f"open time {shown(open_ms)} is not on a {interval_s} s boundary")
    if not start_s * 1000 <= open_ms < end_s * 1000:
        raise ValueError(f"open time {open_ms} is outside the period asked for")
    if type(count) is not int or count < 0:
        raise ValueError(f"trade count {shown(count)} is not a count")
    names = ("open", "high", "low", "close", "volume")
    o, h, low, c, volume = (_amount(row[k + 1], name) for k, name in enumerate(names))
    quote, taker = _amount(row[7], "quote volume"), _amount(row[9], "taker buy volume")
    if count and not (0 < low <= min(o, c) and max(o, c) <= h and taker <= volume):
        raise ValueError(
            f"prices or volumes that cannot be (open {o}, high {h}, low {low}, close {c}, "
            f"volume {volume}, taker buy {taker})"
        )
    return KlineBar(open_ms // 1000, o, h, low, c, volume, quote, taker, count)


def _amount(value: object, name: str) -> float:
    """A plain decimal string, 0 allowed (a kline of no trade has volume 0)."""
    if type(value) is not str or not _AMOUNT.fullmatch(value):
        raise ValueError(f"{name} {shown(value)} is not a plain decimal string")
    return float(value)


@dataclass(order=True)
class Piece:
    """One request's worth of klines of one symbol: ``[start_s, end_s)``.

    ``gap``: the id of the gap it covers (None: history before the tape).
    """

    priority: tuple[int, int]  # newest first
    symbol: str = field(compare=False)
    start_s: int = field(compare=False)
    end_s: int = field(compare=False)
    gap: int | None = field(default=None, compare=False)


@dataclass
class HistoryStats:
    """What the backfill did this run (logged, and read by tests and the benchmark)."""

    requests: int = 0
    weight: int = 0
    bars: int = 0  # rows inserted
    pieces: int = 0  # periods stored
    refused: int = 0  # answers refused
    failed: int = 0  # periods given up for this run
    gaps_covered: int = 0
    started: float = field(default_factory=time.monotonic)
    landed_s: float | None = None  # seconds from start until the history was in


class HistoryBackfill:
    """Klines for the time before one market's tape begins, and for outages.

    :param rest: the market feed's REST client (``feed.rest``): its weight budget, and it
        raises ``Stopped`` once the feed stops.
    :param writer: the writer thread; every row goes through ``writer.submit``.
    :param venue: the feed's venue (``binance-spot``, ``binance-usdm``).
    :param symbols: its symbols, upper case.
    :param db_path: the database, read (read-only) for what is stored already.
    :param duration_s: how far back from now (``parse_duration``); 0 does nothing.
    :param klines: :data:`SPOT_KLINES` or :data:`USDM_KLINES` (``KLINES[market]``).
    :param share: the part of the client's weight budget the history may spend.
    :param workers: requests in flight at once.
    :param poll_s: how often open gaps are looked at once the history is in.
    """

    def __init__(
        self,
        rest: RestClient,
        writer: TradeWriter,
        venue: str,
        symbols: Sequence[str],
        db_path: Database,
        *,
        duration_s: int,
        klines: KlineSpec,
        share: float = SHARE,
        workers: int = WORKERS,
        poll_s: float = POLL_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.rest = rest
        self.writer = writer
        self.venue = venue
        self.symbols = list(symbols)
        self.db_path = parse_target(db_path)
        self.duration_s = duration_s
        self.spec = klines
        self.workers = workers
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.stop = threading.Event()
        self.landed = threading.Event()  # set once the history before the tapes is in
        self.stats = HistoryStats()
        self._budget = WeightBudget(rest.budget.per_minute * share)
        self._refused_symbols: set[str] = set()
        self._bad = RateLimitedLog(log)
        self._seq = itertools.count()
        self.thread = threading.Thread(target=self._run, name="history", daemon=True)

    @property
    def threads(self) -> list[threading.Thread]:
        """The coordinating thread (its fetch workers come and go with each batch)."""
        return [self.thread]

    def start(self) -> None:
        """Start fetching in the background; returns at once."""
        if self.duration_s <= 0:
            self.landed.set()
            return
        self.stats.started = time.monotonic()
        self.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop: requests in flight end within the client's timeout; nothing half-stored."""
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)

    # -- the coordinating thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            for number in range(PASSES):
                pieces = self._history_pieces(first_pass=number == 0)
                if not pieces:
                    break
                if number == 0:
                    self._announce(pieces)
                self._fetch(pieces)
            self.stats.landed_s = time.monotonic() - self.stats.started
            self.landed.set()
            log.info(
                "%s history in: %d bars from %d requests (weight %d) in %.1f s%s",
                self.venue,
                self.stats.bars,
                self.stats.requests,
                self.stats.weight,
                self.stats.landed_s,
                f"; {self.stats.failed} period(s) left for the next start"
                if self.stats.failed
                else "",
            )
            while not self.stop.is_set():
                pieces = self._gap_pieces()
                if pieces:
                    self._fetch(pieces)
                if self.stop.wait(self.poll_s):
                    break
        except (Stopped, WriterFatalError):
            pass
        finally:
            self.landed.set()

    def _announce(self, pieces: list[Piece]) -> None:
        for symbol in self.symbols:
            mine = [p for p in pieces if p.symbol == symbol]
            if mine:
                log.info(
                    "%s %s: history from %s klines, %s to %s (%d requests)",
                    self.venue,
                    symbol,
                    self.spec.interval,
                    _utc(min(p.start_s for p in mine)),
                    _utc(max(p.end_s for p in mine)),
                    len(mine),
                )

    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        conn = connection.connect_read_only(self.db_path)
        try:
            return fn(conn)
        finally:
            conn.close()

    def _window(self) -> tuple[int, int]:
        """``[now - duration, now)`` on the interval's grid (the interval now open left out)."""
        size = self.spec.seconds
        now_s = now_ms() // 1000
        return (now_s - self.duration_s) // size * size, now_s // size * size

    def _history_pieces(self, *, first_pass: bool) -> list[Piece]:
        """The requests still needed before each tape (after the first pass: only for a
        tape that has begun, so a symbol without trades is not chased up to now)."""
        size = self.spec.seconds
        start, now_end = self._window()

        def plan(
            conn: Any,
        ) -> list[Piece]:  # either store's; store/klines.py's hints say sqlite3 only
            pieces: list[Piece] = []
            for symbol in self.symbols:
                if symbol in self._refused_symbols:
                    continue
                (first_us,) = one_row(conn.execute(klines.TAPE_START_US, (self.venue, symbol)))
                if first_us is None and not first_pass:
                    continue
                end = now_end if first_us is None else first_us // 1_000_000 // size * size
                covered = klines.spans(conn, self.venue, symbol, size)
                for a, b in klines.missing(start, end, covered):
                    pieces += self._split(symbol, a, b)
            return pieces

        return sorted(self._read(plan))

    def _gap_pieces(self) -> list[Piece]:
        """Requests for the gaps trades cannot fill this run, within the window."""
        size = self.spec.seconds
        start, _ = self._window()
        query = (
            "SELECT gap_id, symbol, first_missing_id, last_missing_id FROM gaps "
            "WHERE venue = ? AND covered_by IS NULL AND (status = 'abandoned' OR "
            "(status = 'open' AND (note LIKE ? OR note LIKE ?)))"
        )

        def plan(
            conn: Any,
        ) -> list[Piece]:  # either store's; store/klines.py's hints say sqlite3 only
            pieces: list[Piece] = []
            for gap_id, symbol, first, last in conn.execute(query, (self.venue, *_LEFT_OPEN)):
                if symbol not in self.symbols or symbol in self._refused_symbols:
                    continue
                window = _gap_window(conn, self.venue, symbol, first, last, size)
                if window is None:
                    continue
                covered = klines.spans(conn, self.venue, symbol, size)
                for a, b in klines.missing(max(window[0], start), window[1], covered):
                    pieces += self._split(symbol, a, b, gap_id)
            return pieces

        return sorted(self._read(plan))

    def _split(self, symbol: str, start_s: int, end_s: int, gap: int | None = None) -> list[Piece]:
        """``[start_s, end_s)`` in requests of at most a page, the newest first."""
        step = self.spec.seconds * self.spec.page
        pieces = []
        end = end_s
        while end > start_s:
            begin = max(start_s, end - step)
            pieces.append(Piece((-end, next(self._seq)), symbol, begin, end, gap))
            end = begin
        return pieces

    # -- fetching ----------------------------------------------------------------------------

    def _fetch(self, pieces: list[Piece]) -> None:
        """Fetch and store ``pieces`` with up to ``workers`` threads; return when done."""
        todo = list(pieces)
        lock = threading.Lock()

        def work() -> None:
            while not self.stop.is_set():
                with lock:
                    if not todo:
                        return
                    piece = todo.pop(0)
                try:
                    self._piece(piece)
                except (Stopped, WriterFatalError):
                    self.stop.set()  # the daemon is stopping or the writer is gone
                    return
                except Exception:  # a bug or a write SQLite refused: this period only
                    self.stats.failed += 1
                    log.exception(
                        "%s %s: klines %s to %s not stored (the next start asks again)",
                        self.venue,
                        piece.symbol,
                        _utc(piece.start_s),
                        _utc(piece.end_s),
                    )

        threads = [
            threading.Thread(target=work, name=f"history-{k}", daemon=True)
            for k in range(min(self.workers, len(todo)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.stop.is_set():
            raise Stopped

    def _piece(self, piece: Piece) -> None:
        """One request and its store, retried on passing failures."""
        size = self.spec.seconds
        limit = (piece.end_s - piece.start_s) // size
        weight = self.spec.weight(limit)
        params = {
            "symbol": piece.symbol,
            "interval": self.spec.interval,
            "startTime": piece.start_s * 1000,
            "endTime": piece.end_s * 1000 - 1,
            "limit": limit,
        }
        for attempt in range(1, TRIES + 1):
            if piece.symbol in self._refused_symbols:
                return
            self._budget.spend(weight, self.stop)
            self.stats.requests += 1
            self.stats.weight += weight
            try:
                payload = self.rest.get("klines", params, weight, attempts=3)
            except RestBanned as exc:
                log.warning(
                    "%s: klines rate limited; waiting %.0f s", piece.symbol, exc.retry_after
                )
                if self.stop.wait(exc.retry_after):
                    raise Stopped from None
                continue
            except RestError as exc:
                self._refused_symbols.add(piece.symbol)
                log.error(
                    "%s %s: klines refused (%s): no history for it this run",
                    self.venue,
                    piece.symbol,
                    exc,
                )
                return
            except requests.RequestException as exc:
                log.warning(
                    "%s: klines failed (%s), try %d of %d", piece.symbol, exc, attempt, TRIES
                )
                if self.stop.wait(self.retry_s):
                    raise Stopped from None
                continue
            try:
                bars = kline_bars(payload, piece.start_s, piece.end_s, size)
            except KlinesRefused as exc:
                self.stats.refused += 1
                self._bad.report(
                    "klines refused",
                    "%s %s: klines answer refused, nothing stored from it (the next start "
                    "asks again): %s",
                    self.venue,
                    piece.symbol,
                    exc,
                )
                return
            store = partial(self._store, piece, bars)
            self.stats.bars += self.writer.submit(store).result()
            self.stats.pieces += 1
            return
        self.stats.failed += 1

    def _store(self, piece: Piece, bars: list[KlineBar], conn: Any) -> int:
        """In the writer's transaction: the bars that belong, and the span they cover."""
        size = self.spec.seconds
        key = (self.venue, piece.symbol)
        if piece.gap is None:
            (first_us,) = one_row(conn.execute(klines.TAPE_START_US, key))
            low, high = piece.start_s, piece.end_s
            if first_us is not None:  # the tape may have begun since the plan
                high = min(high, first_us // 1_000_000 // size * size)
        else:
            state = conn.execute(
                "SELECT status, first_missing_id, last_missing_id FROM gaps WHERE gap_id = ?",
                (piece.gap,),
            ).fetchone()
            window = None
            if state is not None and state[0] in ("open", "abandoned"):
                window = _gap_window(conn, *key, state[1], state[2], size)
            if window is None:
                return 0  # filled meanwhile
            low, high = max(piece.start_s, window[0]), min(piece.end_s, window[1])
        kept = [bar for bar in bars if low <= bar.open_s and bar.open_s + size <= high]
        stored = klines.store_bars(conn, *key, size, kept)
        klines.add_span(conn, *key, size, low, high, "rest")
        if piece.gap is not None and high > low:
            self.stats.gaps_covered += conn.execute(
                "UPDATE gaps SET covered_by = ? WHERE gap_id = ? AND covered_by IS NULL",
                (self.spec.label, piece.gap),
            ).rowcount
        return stored


def _gap_window(
    conn: Connection, venue: str, symbol: str, first_id: int, last_id: int, size: int
) -> tuple[int, int] | None:
    """The whole intervals strictly between the stored trades around ids
    ``first_id..last_id`` (None: a side has no stored trade yet, or nothing fits)."""
    before = conn.execute(klines.TIME_BEFORE_ID, (venue, symbol, first_id)).fetchone()
    after = conn.execute(klines.TIME_AFTER_ID, (venue, symbol, last_id)).fetchone()
    if before is None or after is None:
        return None
    low = -(-(before[0] // 1_000_000 + 1) // size) * size
    high = after[0] // 1_000_000 // size * size
    return (low, high) if high > low else None


def _utc(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat(timespec="seconds")
