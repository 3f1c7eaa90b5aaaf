"""The live source: Binance trade streams, every trade stored exactly once.

Where to look:

- ``ingest/binance/ws.py``: the connection, its reconnect loop (backoff, serverShutdown,
  connection-attempt limit, pong budget) and the watchdog;
- ``ingest/binance/rest.py``: the REST client (weight budget, 429/418, retries);
- ``ingest/binance/tape.py``: each symbol's continuity state, shared with the gap filler,
  and the state a start resumes from;
- ``ingest/binance/gaps.py``: catch-up after each (re)connect, gap filling, the start-up
  hole scan, the gaps table;
- ``ingest/binance/cli.py``: the flags, ``--symbols`` words (``usdm:``, ``top:N``), the
  API key from the environment, one feed per market; ``multi.py`` runs them side by side;
  ``funding.py`` records funding; ``history.py`` fills the past from klines;
- this module: what differs between the markets (:class:`Market`), symbol validation,
  the frame parser, trade-id continuity, non-market trades, the wrong-route check, and
  the batching of rows into the writer.

Threads: one per connection (receive and parse only), a flusher that hands batches to
the writer every few milliseconds, the gap filler, the watchdog, the route check. The
writer thread (store/writer.py) is the only one that touches SQLite for writing.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import orjson
import requests

from pairs_monitor.clock import Backoff, now_ms
from pairs_monitor.ingest.binance.gaps import CatchUp, Fill, GapFiller, ScanHoles
from pairs_monitor.ingest.binance.rest import BadApiKey, RestClient, RestError, Stopped
from pairs_monitor.ingest.binance.tape import SymbolTape, load_start_state
from pairs_monitor.ingest.binance.ws import (
    SPOT_ROUTE,
    USDM_ROUTE,
    AttemptLimiter,
    ServerShutdown,
    StreamConnection,
    Watchdog,
    plan_connections,
    stream_url,
    symbol_streams,
)
from pairs_monitor.ingest.reading import Database
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.ingest.validate import (
    NonMarketRow,
    RateLimitedLog,
    Refusal,
    Rejects,
    shown,
    socket_nonmarket,
    socket_trade,
)
from pairs_monitor.store import sql
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest.binance")
_loads = orjson.loads

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Market:
    """Where one Binance market lives and how it answers (docs/sources.md).

    ``ws_url`` and ``rest_url`` are the default host bases; the feed appends ``ws_route``
    (the combined-stream path) and ``rest_prefix``.
    """

    venue: str
    ws_url: str
    rest_url: str
    rest_prefix: str
    name: str = "spot"
    ws_route: str = SPOT_ROUTE
    trades_page: int = 1000  # historicalTrades' largest page
    trades_weight: int = 25  # historicalTrades' weight
    trades_need_key: bool = False  # historicalTrades wants X-MBX-APIKEY
    recent_weight: int = 25  # trades?limit=1 (the newest id)
    history_ms: int | None = None  # how far back REST serves trades; None: all of it
    nonmarket: bool = False  # trades of type X other than MARKET exist (never in REST)


MARKETS = {
    "spot": Market(
        "binance-spot", "wss://stream.binance.com:9443", "https://api.binance.com", "/api/v3"
    ),
    # Since 2026-04-23 (../shared/BINANCE.md): streams under /market, historicalTrades
    # with a key only, 500 a page, weight 20, three months back; insurance-fund and ADL
    # trades on the socket only.
    "usdm": Market(
        "binance-usdm",
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
        "/fapi/v1",
        name="usdm",
        ws_route=USDM_ROUTE,
        trades_page=500,
        trades_weight=20,
        trades_need_key=True,
        recent_weight=5,
        history_ms=90 * DAY_MS,
        nonmarket=True,
    ),
}

DEFAULT_MAX_CATCHUP = 100_000
# About 40% of Binance's per-IP limits, leaving room for other tools on the address.
DEFAULT_REST_WEIGHT = {"spot": 2400, "usdm": 1000}
DEFAULT_WATCHDOG = 30.0
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTION_AGE = 23.5 * 3600
FLUSH_INTERVAL = 0.01  # seconds between hand-overs of parsed rows to the writer
MAX_PENDING = 10_000  # parsed rows held before the receive thread hands them over itself
DRAIN_CHUNK = 2_000  # most rows in one writer queue item
# Continuity plausibility (docs/sources.md): a live id more than this past the frontier
# is refused until REST's newest id shows the ids in between exist. Binance's socket
# skips nothing while connected; after a reconnect the catch-up moves the frontier over
# REST, so a real jump this large is rare and costs one request to confirm.
MAX_UNCONFIRMED_JUMP = 10_000
# An id this far below the frontier is not a late repeat but a value no exchange sends.
MAX_BEHIND = 100_000
CONFIRM_INTERVAL = 5.0  # seconds between two confirmations of one symbol
# A connection up this long without a single trade while REST shows one of its symbols
# trading is on the wrong route (USD-M's legacy /stream accepts, pings and sends nothing).
SILENT_ROUTE_S = 60.0


class FeedError(Exception):
    """The live source cannot start as asked (e.g. an unknown symbol)."""


class MarkPriceSink(Protocol):
    """Where ``markPriceUpdate`` events go (``funding.FundingRecorder``)."""

    def on_mark_price(self, payload: dict) -> None:
        """Take one event; called in the receive thread, so it must not block."""


class BinanceFeed:
    """Live trades of some symbols of one Binance market, with continuity and backfill.

    :param market: which market (venue, routes, REST facts).
    :param symbols: upper-case symbols.
    :param writer: the writer thread.
    :param db_path: the database (read-only reads at start: last ids, holes, open gaps).
    :param ws_url: WebSocket host base; the market's route is appended.
    :param rest_url: REST host base; the market's prefix is appended.
    :param api_key: ``BINANCE_API_KEY``: sent in ``X-MBX-APIKEY`` to historicalTrades
        where the market needs it (USD-M), nowhere else; never logged nor stored.
    :param silent_route_s: seconds a connection may deliver no trade, while REST shows
        one of its symbols trading, before it is reported as on the wrong route.
    :raises FeedError: for an API key that cannot be sent as a header.

    ``funding``: set it before :meth:`run` to an object with ``on_mark_price(payload)``;
    the feed then also subscribes ``<symbol>@markPrice`` and hands it every
    ``markPriceUpdate`` event (in the receive thread).
    """

    def __init__(
        self,
        market: Market,
        symbols: list[str],
        writer: TradeWriter,
        *,
        db_path: Database,
        ws_url: str,
        rest_url: str,
        max_catchup: int = DEFAULT_MAX_CATCHUP,
        rest_weight_per_min: int = DEFAULT_REST_WEIGHT["spot"],
        watchdog: float = DEFAULT_WATCHDOG,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
        api_key: str | None = None,
        silent_route_s: float = SILENT_ROUTE_S,
    ) -> None:
        self.market = market
        self.venue = market.venue
        self.symbols = [s.upper() for s in dict.fromkeys(symbols)]
        self.writer = writer
        self.db_path = parse_target(db_path)
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.max_catchup = max_catchup
        self.watchdog_s = watchdog
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.max_connection_age = max_connection_age
        self.stats = [FeedStats(self.venue, s, "live") for s in self.symbols]
        self.tapes = {st.symbol: SymbolTape(st.symbol, st) for st in self.stats}
        self.silent_route_s = silent_route_s
        # Only a market whose historicalTrades wants the key is given it.
        key = api_key if market.trades_need_key else None
        self.params = {
            "market": market.name,
            "ws_url": self.ws_url,
            "ws_route": market.ws_route,
            "rest_url": self.rest_url,
            "api_key": key is not None,  # whether one was given; never the key
            "max_catchup": max_catchup,
            "rest_weight_per_min": rest_weight_per_min,
            "watchdog_s": watchdog,
        }
        self.stop = threading.Event()  # internal: set once run() is asked to stop
        try:
            self.rest = RestClient(
                self.rest_url,
                market.rest_prefix,
                weight_per_min=rest_weight_per_min,
                stop=self.stop,
                timeout=connect_timeout,
                api_key=key,
            )
        except BadApiKey as exc:
            raise FeedError(f"BINANCE_API_KEY cannot be used: {exc}") from None
        self.filler = GapFiller(
            self.rest,
            writer,
            self.venue,
            self.tapes,
            db_path,
            max_catchup=max_catchup,
            stop=self.stop,
            market=market,
            flush=self._drain,
        )
        self.funding: MarkPriceSink | None = None
        self.connections: list[StreamConnection] = []
        self.connected = threading.Event()  # set while at least one connection is up
        self._pending: collections.deque[tuple] = collections.deque()
        self._nonmarket: collections.deque[NonMarketRow] = collections.deque()
        self._drain_lock = threading.Lock()
        self._bad = RateLimitedLog(log)
        self._rejects = Rejects(log, "socket")
        self.rest.feed_stats = {st.symbol: st for st in self.stats}
        self.confirmer = _Confirmer(self.rest, self.filler, self.tapes, self.stop)
        # Hands parsed rows to the writer; an attribute so the daemon's supervision sees it.
        self.flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
        self._ever_connected: set[str] = set()
        self.route_check = _RouteCheck(self)

    # -- start-up --------------------------------------------------------------------

    def validate_symbols(self) -> None:
        """Check the symbols against exchangeInfo; warn and go on when it cannot be reached.

        :raises FeedError: when a symbol is not listed.
        """
        try:
            listed = self.rest.exchange_symbols(timeout=min(self.connect_timeout, 5.0))
        except (
            requests.RequestException,
            RestError,
            Stopped,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            log.warning(
                "cannot check the symbols against exchangeInfo at %s (%s); going on with %s",
                self.rest_url,
                exc,
                ", ".join(self.symbols),
            )
            return
        unknown = [s for s in self.symbols if s not in listed]
        if unknown:
            other = "usdm" if self.market.venue == "binance-spot" else "spot"
            raise FeedError(
                f"unknown symbol(s) for {self.venue}: {', '.join(unknown)}. Binance lists "
                f"symbols like BTCUSDT (letters only, base then quote asset); check the "
                f"spelling, or whether you meant --market {other}."
            )
        for symbol in self.symbols:
            if listed[symbol] not in ("TRADING", ""):
                log.warning("%s is listed with status %s: expect no trades", symbol, listed[symbol])

    def _load_start_state(self) -> None:
        """Queue the start-up work: catch-up from the stored tape, open gaps, hole scan."""
        stored, open_gaps = load_start_state(self.db_path, self.venue, self.symbols)
        for symbol in self.symbols:
            tape = self.tapes[symbol]
            rows = open_gaps[symbol]
            high = stored[symbol]
            if rows:
                high = max(high or 0, max(last for _, _, last in rows))
            tape.high = high
            if high is not None:
                tape.awaiting = CatchUp(symbol, high + 1)
                self.filler.add(tape.awaiting)
            if rows:
                log.info(
                    "%s: %d gap(s) left open by an earlier run; filling them", symbol, len(rows)
                )
            for gap_id, first, last in rows:
                tape.stats.gaps_open += 1
                self.filler.add(Fill(symbol, first, last, "earlier run", gap_id))
            last_stored = stored[symbol]
            if last_stored is not None:
                self.filler.add(ScanHoles(symbol, last_stored, [(a, b) for _, a, b in rows]))
            log.info("%s: last stored trade id %s", symbol, last_stored)

    # -- running ---------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Produce until ``stop_event`` is set; then stop reading and hand over all rows."""
        if self.market.trades_need_key:
            log.info(
                "%s: gaps and catch-ups from %s",
                self.venue,
                "historicalTrades (API key set)"
                if self.rest.has_key
                else "aggTrades (no API key: 1-second bars exact, each trade's quantity "
                "its aggregate's share)",
            )
        self._load_start_state()
        self.filler.start()
        self.confirmer.start()
        self.flusher.start()
        limiter = AttemptLimiter()
        kinds = ("trade", "markPrice") if self.funding is not None else ("trade",)
        route = self.market.ws_route
        # Split by Binance's 1,024 streams and by URL length (5,000 symbols in one URL
        # got "414 Request-URI Too Long" for ever); a non-ASCII symbol rides alone.
        planned = plan_connections(self.ws_url, self.symbols, route=route, kinds=kinds)
        for number, symbols in enumerate(planned):
            conn = StreamConnection(
                stream_url(self.ws_url, symbol_streams(symbols, kinds), route),
                name=f"ws-{number}",
                on_message=self._on_message,
                on_connect=functools.partial(self._on_connect, symbols, number),
                on_disconnect=functools.partial(self._on_disconnect, symbols),
                stop=self.stop,
                limiter=limiter,
                connect_timeout=self.connect_timeout,
                backoff=Backoff(0.5, self.backoff_max),
            )
            self.connections.append(conn)
            self.route_check.watch(conn, symbols)
        watchdog = Watchdog(
            self.connections,
            self.stop,
            silent_after=self.watchdog_s,
            max_age=self.max_connection_age,
        )
        for conn in self.connections:
            conn.start()
        watchdog.start()
        self.route_check.start()
        stop_event.wait()
        self.shutdown()
        self.flusher.join(5)

    def shutdown(self) -> None:
        """Stop reading and fetching; every parsed row reaches the writer queue."""
        log.info("live source stopping: closing %d connection(s)", len(self.connections))
        self.stop.set()
        for conn in self.connections:
            conn.abort("stopping")
        for conn in self.connections:
            conn.join(5)
        self.filler.join(2)
        for thread in (self.confirmer, self.route_check):
            if thread.is_alive():
                thread.join(2)
        self._drain()
        log.info("live source stopped: %d trades received on the socket", self.received)

    @property
    def received(self) -> int:
        """Trades parsed from the socket so far (repeats included)."""
        return sum(stats.trades_total for stats in self.stats)

    def _flush_loop(self) -> None:
        seen = {id(stats): 0 for stats in self.stats}
        while not self.stop.wait(FLUSH_INTERVAL):
            self._drain()
            # The receive thread leaves the clock alone; the time of the last message is
            # stamped here, to within one flush interval.
            now = now_ms()
            for stats in self.stats:
                if stats.trades_total != seen[id(stats)]:
                    seen[id(stats)] = stats.trades_total
                    stats.last_message_ms = now
        self._drain()

    def _drain(self) -> None:
        """Hand every parsed row to the writer; wait while it is behind (backpressure).

        The writer's backlog is bounded in items, not rows: items of at most
        ``DRAIN_CHUNK`` rows keep the rows in flight (and the memory) bounded when the
        writer stalls. The final drain after a stop does not wait.
        """
        with self._drain_lock:
            pending = self._pending
            popleft = pending.popleft
            count = len(pending)
            while count:
                take = min(count, DRAIN_CHUNK)
                rows = [popleft() for _ in range(take)]
                self.writer.put_trades(rows, block=True, stop=self.stop)
                count -= take
            nonmarket = self._nonmarket
            if nonmarket:
                taken = [nonmarket.popleft() for _ in range(len(nonmarket))]
                self.writer.submit(functools.partial(_store_nonmarket, taken))

    def _on_connect(self, symbols: list[str], number: int | None = None) -> None:
        """A connection is up: catch up every symbol from its last id (receive thread)."""
        if number is not None:
            self.route_check.connected(number)
        for symbol in symbols:
            tape = self.tapes[symbol]
            with tape.lock:
                tape.stats.connected = True
                if symbol in self._ever_connected:
                    tape.stats.reconnects += 1
                self._ever_connected.add(symbol)
                if tape.high is not None and tape.awaiting is None:
                    tape.awaiting = CatchUp(symbol, tape.high + 1, after_ms=_time_ms(tape.stats))
                    self.filler.add(tape.awaiting)
        self.connected.set()

    def _on_disconnect(self, symbols: list[str]) -> None:
        for symbol in symbols:
            self.tapes[symbol].stats.connected = False
        if not any(conn.connected_at for conn in self.connections):
            self.connected.clear()

    # -- the parser: the hot path ------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        """Parse one combined-stream frame and queue its trade (receive thread).

        Expected frame: ``{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,
        "s":"BTCUSDT","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}``
        (times in ms; stored in µs); on USD-M ``{"e":"trade","E":1787137583835,
        "T":1787137583835,"s":"BTCUSDT","t":7978350772,"p":"64486.00","q":"0.002",
        "X":"MARKET","m":false,"st":1}``, where an ``X`` other than ``MARKET`` is a
        non-market trade (:meth:`_nonmarket_trade`). Anything else is handled by
        :meth:`_other_frame`.
        """
        msg = None
        try:
            msg = _loads(data)
            payload = msg["data"]
            if payload["e"] != "trade":
                return self._other_frame(msg, data)
            # "MARKET" as a literal: a constant costs nothing, a global a lookup per frame.
            if payload.get("X", "MARKET") != "MARKET":  # == validate.MARKET_TRADE
                return self._nonmarket_trade(msg, payload, data)
            row = socket_trade(self.venue, payload)
            if isinstance(row, Refusal):
                return self._refused(msg, payload, row, data)
            tape = self.tapes[row[1]]
        except ServerShutdown:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return self._other_frame(msg, data, exc)
        trade_id = row[2]
        high = tape.high
        if trade_id - 1 == high and tape.awaiting is None:
            # The common case, without the lock: only this thread moves ``high`` while
            # no catch-up is awaiting the live stream.
            tape.high = trade_id
            stats = tape.stats
            stats.trades_total += 1
            stats.last_trade_id = trade_id
            stats.last_trade_time_us = row[3]
        elif not self._continuity(tape, trade_id, row[3]):
            return
        pending = self._pending
        pending.append(row)
        if len(pending) > MAX_PENDING:
            self._drain()  # the writer is behind: wait here (backpressure to the socket)

    def _nonmarket_trade(self, msg: object, payload: dict, data: bytes) -> None:
        """A trade whose ``X`` is not ``MARKET`` (USD-M insurance fund, ADL): its id moves
        the tape on like a trade's, without a gap; it goes to ``nonmarket_trades``, never
        to trades or bars, and is counted in ``FeedStats.nonmarket``."""
        if not self.market.nonmarket:
            kind = payload.get("X")
            refusal = Refusal("X", shown(kind), f"{self.venue} has no trade types")
            return self._refused(msg, payload, refusal, data)
        row = socket_nonmarket(self.venue, payload)
        if isinstance(row, Refusal):
            return self._refused(msg, payload, row, data)
        tape = self.tapes.get(row[1])
        if tape is None:
            return self._other_frame(msg, data, KeyError(row[1]))
        tape.nonmarket_seen += 1
        trade_time_us = row[3]
        assert trade_time_us is not None  # the socket's always has its time
        if self._continuity(tape, row[2], trade_time_us, market=False):
            tape.stats.nonmarket += 1
            self._nonmarket.append(row)

    def _refused(self, msg: object, payload: dict, refusal: Refusal, data: bytes) -> None:
        """A trade with a value no exchange sends: counted for its symbol, logged."""
        symbol = payload.get("s")
        tape = self.tapes.get(symbol) if type(symbol) is str else None
        if tape is None:
            return self._other_frame(msg, data, ValueError(str(refusal)))
        self._rejects.report(tape.symbol, refusal, tape.stats)

    def _continuity(
        self, tape: SymbolTape, trade_id: int, trade_time_us: int, *, market: bool = True
    ) -> bool:
        """A trade that is not simply ``high + 1``: the first, a jump, a repeat, a hand-over.

        :param market: False for a non-market trade: it moves the frontier alike, and is
            not counted among the trades received.
        :returns: whether to store it: not a repeat (at or below the frontier, already
            stored or being fetched), nor an implausible id (refused, see docs/sources.md).
        """
        stats = tape.stats
        with tape.lock:
            high = tape.high
            if high is None:
                tape.high = trade_id  # nothing stored: the tape starts here
            elif trade_id > high:
                if trade_id - high > MAX_UNCONFIRMED_JUMP and not self._confirmed(tape, trade_id):
                    tape.unconfirmed = max(tape.unconfirmed or 0, trade_id)
                    self._ask_confirmation(tape)
                    behind = "" if tape.awaiting is None else " (catching up over REST)"
                    refusal = Refusal(
                        "t",
                        shown(trade_id),
                        f"{trade_id - high} ids past the tape's {high}{behind}, more "
                        f"than {MAX_UNCONFIRMED_JUMP} that REST has not confirmed",
                    )
                    self._rejects.report(tape.symbol, refusal, stats)
                    return False
                task = tape.awaiting
                if task is not None:
                    # First new trade since the (re)connect: the catch-up stops before it.
                    tape.awaiting = None
                    task.until = trade_id - 1
                    self.filler.bound_catch_up(task)
                elif trade_id > high + 1:
                    self.filler.add(
                        Fill(
                            tape.symbol,
                            high + 1,
                            trade_id - 1,
                            "live-jump",
                            after_ms=_time_ms(stats),
                        )
                    )
                    log.warning(
                        "%s: trade id jumped from %d to %d; gap of %d queued for REST",
                        tape.symbol,
                        high,
                        trade_id,
                        trade_id - high - 1,
                    )
                tape.high = trade_id
            elif high - trade_id > MAX_BEHIND:
                refusal = Refusal(
                    "t",
                    shown(trade_id),
                    f"{high - trade_id} ids behind the tape's {high}: not a late repeat",
                )
                self._rejects.report(tape.symbol, refusal, stats)
                return False
            else:  # a repeat (re-sent after a reconnect, or already fetched over REST)
                if market:
                    stats.trades_total += 1
                return False
            if market:
                stats.trades_total += 1
                if stats.last_trade_id is None or trade_id > stats.last_trade_id:
                    stats.last_trade_id = trade_id
                    stats.last_trade_time_us = trade_time_us
            return True

    @staticmethod
    def _confirmed(tape: SymbolTape, trade_id: int) -> bool:
        """Whether REST's newest id, when last asked, vouches for ``trade_id`` (lock held)."""
        return tape.confirmed is not None and trade_id - tape.confirmed <= MAX_UNCONFIRMED_JUMP

    def _ask_confirmation(self, tape: SymbolTape) -> None:
        """Have REST's newest id looked up, at most every ``CONFIRM_INTERVAL`` (lock held)."""
        now = time.monotonic()
        if tape.confirming or now < tape.confirm_due:
            return
        tape.confirming = True
        tape.confirm_due = now + CONFIRM_INTERVAL
        self.confirmer.ask(tape.symbol)

    def _other_frame(self, msg: object, data: bytes, exc: Exception | None = None) -> None:
        """Frames that are not trades: serverShutdown, answers, unknown or malformed ones."""
        if isinstance(msg, dict):
            payload = msg.get("data", msg)
            event = payload.get("e") if isinstance(payload, dict) else None
            if event == "serverShutdown" or msg.get("stream") == "!serverShutdown":
                raise ServerShutdown
            if "id" in msg and "result" in msg:
                log.debug("answer to request %s: %s", msg["id"], msg["result"])
                return
            if event == "markPriceUpdate" and self.funding is not None:
                try:
                    self.funding.on_mark_price(payload)
                except Exception as trouble:  # the recorder's must not cost the trades
                    self._bad.report("mark-price", "markPrice event not taken (%r)", trouble)
                return
            if event == "trade" and exc is not None:
                self._bad.report(
                    "bad-trade", "trade with bad fields skipped (%r): %.200r", exc, data
                )
                return
            self._bad.report("unknown", "unknown frame skipped: %.200r", data)
            return
        self._bad.report("malformed", "malformed frame skipped (%r): %.200r", exc, data)


class _Confirmer(threading.Thread):
    """Looks up REST's newest trade id of a symbol whose live id jumped implausibly far.

    The receive thread never waits for REST: it refuses the trade and queues the symbol
    here. When REST's newest id (``SymbolTape.confirmed``) comes within
    ``MAX_UNCONFIRMED_JUMP`` of the refused id, the jump is real: the frontier moves to
    that REST id and the ids up to it (the refused trades included) are filled over REST;
    later live ids within ``MAX_UNCONFIRMED_JUMP`` of it are taken as ordinary jumps. A
    bogus id stays refused and moves nothing.
    """

    def __init__(
        self,
        rest: RestClient,
        filler: GapFiller,
        tapes: dict[str, SymbolTape],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="jump-confirmer", daemon=True)
        self.rest = rest
        self.filler = filler
        self.tapes = tapes
        self.stop = stop
        self.asked: queue.Queue[str] = queue.Queue()

    def ask(self, symbol: str) -> None:
        """Queue a look-up; never blocks."""
        self.asked.put(symbol)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                symbol = self.asked.get(timeout=0.2)
            except queue.Empty:
                continue
            tape = self.tapes[symbol]
            newest = None
            try:
                newest = self.rest.latest_trade_id(symbol, weight=self.filler.market.recent_weight)
            except Stopped:
                break
            except Exception as exc:  # REST down or answering nonsense: ask again later
                log.warning("%s: cannot confirm a trade-id jump over REST (%s)", symbol, exc)
            with tape.lock:
                tape.confirming = False
                if newest is None:
                    continue
                tape.confirmed = max(tape.confirmed or 0, newest)
                ahead, tape.unconfirmed = tape.unconfirmed, None
                high = tape.high
                real = ahead is not None and ahead - newest <= MAX_UNCONFIRMED_JUMP
                # While a catch-up awaits the live stream, it fetches up to REST's newest
                # itself and moves the frontier when done.
                if real and tape.awaiting is None and high is not None and newest > high:
                    tape.high = newest
                    self.filler.add(
                        Fill(symbol, high + 1, newest, "live-jump", after_ms=_time_ms(tape.stats))
                    )
            if real:
                log.warning(
                    "%s: trade id jump to %s confirmed by REST (newest id %d, tape at %s); "
                    "the ids in between are fetched over REST",
                    symbol,
                    ahead,
                    newest,
                    high,
                )
            elif ahead is not None:
                log.warning(
                    "%s: trade id %d refused for good: REST's newest id is %d (tape at %s)",
                    symbol,
                    ahead,
                    newest,
                    high,
                )


class _RouteCheck(threading.Thread):
    """Tells a wrong stream route from a quiet market.

    USD-M's legacy ``/stream`` accepts a connection and answers pings but sends nothing:
    the watchdog is content, and the tape would silently stop. A connection that has been
    up ``silent_route_s`` without a single trade frame is checked against REST: when
    REST's newest id of one of its symbols is past the tape, the route is wrong. That is
    logged as an error naming the URL, set as ``problem`` of its symbols (feed_status,
    the page), and the ids REST shows are fetched as a ``silent-socket`` gap, again every
    ``silent_route_s``, until the socket delivers (which clears the problem).
    """

    LOOK_AT = 5  # symbols asked about per look (REST weight), in turn

    def __init__(self, feed: BinanceFeed) -> None:
        super().__init__(name="route-check", daemon=True)
        self.feed = feed
        self.watched: list[tuple[StreamConnection, list[str]]] = []
        self.baseline: dict[int, int] = {}  # connection -> its symbols' count at connect
        self.reported: set[int] = set()
        self._turn: dict[int, int] = {}

    def watch(self, conn: StreamConnection, symbols: list[str]) -> None:
        """Watch one more connection (before :meth:`start`)."""
        self.watched.append((conn, symbols))

    def connected(self, number: int) -> None:
        """Connection ``number`` is up: what it delivers from now on is counted."""
        if number < len(self.watched):
            self.baseline[number] = self._delivered(self.watched[number][1])

    def _delivered(self, symbols: list[str]) -> int:
        tapes = self.feed.tapes
        return sum(tapes[s].stats.trades_total + tapes[s].nonmarket_seen for s in symbols)

    def run(self) -> None:
        feed = self.feed
        tick = max(0.05, min(1.0, feed.silent_route_s / 4))
        due: dict[int, float] = {}
        while not feed.stop.wait(tick):
            now = time.monotonic()
            for number, (conn, symbols) in enumerate(self.watched):
                if self._delivered(symbols) > self.baseline.get(number, 0):
                    if number in self.reported:
                        self._clear(number, conn, symbols)
                    continue
                started = conn.connected_at
                if started is None or now - started < feed.silent_route_s:
                    continue
                if now < due.get(number, 0.0):
                    continue
                due[number] = now + feed.silent_route_s
                try:
                    self._look(number, conn, symbols, now - started)
                except Stopped:
                    return
                except Exception as exc:  # REST down: look again next time
                    log.warning(
                        "%s: cannot compare the silent socket with REST (%s)", conn.name, exc
                    )

    def _look(self, number: int, conn: StreamConnection, symbols: list[str], silent: float) -> None:
        feed = self.feed
        start = self._turn.get(number, 0)
        asked = [
            symbols[(start + k) % len(symbols)] for k in range(min(self.LOOK_AT, len(symbols)))
        ]
        self._turn[number] = start + len(asked)
        behind: list[tuple[str, int, int | None]] = []
        for symbol in asked:
            newest = feed.rest.latest_trade_id(symbol, weight=feed.market.recent_weight)
            tape = feed.tapes[symbol]
            if newest is not None and (tape.high is None or newest > tape.high):
                behind.append((symbol, newest, tape.high))
        if not behind:
            return  # a quiet market: nothing traded that the tape lacks
        symbol, newest, high = behind[0]
        problem = (
            f"no trade on {conn.name} for {silent:.0f} s while REST shows {symbol} trading "
            f"(newest id {newest}, tape at {high}): wrong stream route? "
            f"{_short_url(conn.url)} delivers nothing; USD-M serves trade streams under "
            "/market/stream since 2026-04-23, and --ws-url takes the host only (e.g. "
            "wss://fstream.binance.com). Missing trades are fetched over REST meanwhile."
        )
        if number not in self.reported:
            self.reported.add(number)
            log.error("%s", problem)
        for name in symbols:
            feed.tapes[name].stats.problem = problem
        for name, newest, _ in behind:
            self._recover(name, newest)

    def _recover(self, symbol: str, newest: int) -> None:
        """Fetch the ids up to REST's newest as a gap, and move the frontier there."""
        feed = self.feed
        tape = feed.tapes[symbol]
        with tape.lock:
            if tape.awaiting is not None:
                return  # the catch-up in flight fetches them and hands over
            high = tape.high
            tape.high = newest
            if high is None or newest <= high:
                return  # nothing stored yet: the tape starts at REST's newest
            feed.filler.add(
                Fill(symbol, high + 1, newest, "silent-socket", after_ms=_time_ms(tape.stats))
            )

    def _clear(self, number: int, conn: StreamConnection, symbols: list[str]) -> None:
        self.reported.discard(number)
        for name in symbols:
            self.feed.tapes[name].stats.problem = None
        log.warning(
            "%s: trades arrive on the socket again; the route problem is cleared", conn.name
        )


def _store_nonmarket(rows: list[NonMarketRow], conn: Connection) -> None:
    conn.executemany(sql.UPSERT_NONMARKET, rows)


def _time_ms(stats: FeedStats) -> int | None:
    """The time (ms) of the feed's newest trade: at or before any id after the tape's."""
    time_us = stats.last_trade_time_us
    return None if time_us is None else time_us // 1000


def _short_url(url: str) -> str:
    return url if len(url) < 100 else url[:97] + "..."
