"""A local stand-in for Binance that the tests and the benchmark script the daemon against.

One port serves both protocols of one market, spot or USD-M futures, as Binance answers
today (``../shared/BINANCE.md``; what that file does not say is listed below with its
source):

- spot: WebSocket ``/stream?streams=btcusdt@trade/...`` (combined) and ``/ws/<stream>``
  (raw); REST under ``/api/v3``.
- USD-M (``market="usdm"``): WebSocket only under ``/market/stream?streams=...`` and
  ``/market/ws/<stream>``; the legacy ``/stream`` and ``/ws`` routes accept the connection,
  answer pings and control messages, and never send market data (a silent socket). REST
  under ``/fapi/v1``. Trade frames carry ``X`` (``MARKET``, or ``INSURANCE_FUND`` for the
  non-market trades :meth:`BinanceServer.publish` makes with ``nonmarket=True``: price and
  quantity ``"0"``, ids used up, never returned over REST) and no ``M``. Market trades come
  in runs of 1 to 4 that share time, price and side, so aggregates of several trades exist.
  ``<symbol>@markPrice`` and ``<symbol>@markPrice@1s`` send ``markPriceUpdate`` events.
- REST of both: ``exchangeInfo``, ``historicalTrades``, ``trades``, ``aggTrades``,
  ``ticker/24hr``, ``klines``; USD-M adds ``fundingRate``. Klines are the tape's own
  trades from its first trade on, and a deterministic made-up history of
  ``kline_history_s`` before it (the time before a daemon started recording). Every answer carries
  ``X-MBX-USED-WEIGHT-1M``. Every call is recorded in ``rest_calls`` with its headers.

Each symbol has a tape of consecutive trade ids. :meth:`BinanceServer.publish` appends
trades to it (REST sees every published market trade) and sends them to the connected
clients unless told not to (a range withheld from the socket that only REST can provide).
The test scripts the failures: abrupt drops, close 1001, ``serverShutdown``, silence,
malformed and unknown frames, duplicates re-sent on connect, 429 with ``Retry-After``,
5xx, connections reset or left unanswered.

Facts beyond BINANCE.md, and where they come from (Binance's USD-M documentation as
mirrored in rosssaunders/coincise ``docs/binance/usdm/...`` and qiuham/crypto-api-docs,
the spot documentation mirrored in rosssaunders/coincise ``docs/binance/spot/...``, and
threads in ccxt/ccxt and sammchardy/python-binance):

- ``/fapi/v1/historicalTrades``: weight 20; limit default 100, max 500; only the last three
  months; market trades only (coincise ``get_fapi_v1_historicaltrades.md``). A limit above
  the maximum on fapi is HTTP 400 ``{"code":-1130,"msg":"Data sent for parameter 'limit'
  is not valid."}`` (ccxt/ccxt#9904, #14498, #19247; spot instead caps a large limit
  silently, #19247). Missing or unknown key: HTTP 401 ``-2015`` "Invalid API-key, IP, or
  permissions for action."; malformed key: ``-2014`` "API-key format invalid." (coincise
  ``error_codes.md``; BINANCE.md for the status). Keys are 64 letters and digits, as every
  example key in the docs. NOT FOUND in any source: what a ``fromId`` older than three
  months gets. This server answers ``200 []`` (nothing is claimed about those ids); a
  client should judge a gap's age by time, not by the answer's shape.
- ``/fapi/v1/aggTrades``: weight 20; limit default 500, max 1000; ``startTime`` and
  ``endTime`` "must be less than 1 hour" apart, else HTTP 400 ``{"code":-1127,"msg":"More
  than 1 hours between startTime and endTime."}`` (coincise ``get_fapi_v1_aggtrades.md``,
  ``error_codes.md``; python-binance#66). Here 3,600,000 ms apart or more is refused:
  keep a window strictly under an hour. Rows ``{"a","p","q","f","l","T","m"}``; spot adds
  ``"M"`` (coincise ``get_api_v3_aggtrades.md``, weight 4, the same limits). Only market
  trades are aggregated; at most one year back. Binance aggregates "market trades that
  fill in 100ms with the same price and the same taking side"; this server aggregates
  consecutive ids with the same time, price and side, published in the same
  :meth:`~BinanceServer.publish` call, so an aggregate never grows after REST served it.
  With only ``startTime`` the aggregates from it are served, with only ``endTime`` the last
  ones up to it (an assumption: the docs do not say).
- ``/fapi/v1/fundingRate``: ``symbol``, ``startTime``, ``endTime``, ``limit`` (default 100,
  max 1000), ascending, "return as startTime + limit" when more match; rows ``{"symbol",
  "fundingRate","fundingTime","markPrice"}``, rates and prices as strings (coincise
  ``get_fapi_v1_fundingrate.md``). Its own limit of 500 per 5 min per IP is not request
  weight, so it counts 0 here.
- ``/fapi/v1/ticker/24hr``: weight 1 for one symbol, 40 for all; fields ``symbol,
  priceChange, priceChangePercent, weightedAvgPrice, lastPrice, lastQty, openPrice,
  highPrice, lowPrice, volume, quoteVolume, openTime, closeTime, firstId, lastId, count``
  (coincise ``get_fapi_v1_ticker_24hr.md``); spot adds ``prevClosePrice``, bid and ask
  (weight 2, all symbols 80). ``/fapi/v1/trades``: weight 5, limit default 500 max 1000,
  market trades only, rows with ``isRPITrade`` where spot has ``isBestMatch`` (coincise
  ``get_fapi_v1_trades.md``).
- ``X-MBX-USED-WEIGHT-1M``: "every request will contain X-MBX-USED-WEIGHT-(intervalNum)
  (intervalLetter) in the response headers" (coincise ``rate_limits.md``).
- ``<symbol>@markPrice`` (every 3 s) or ``<symbol>@markPrice@1s``: ``{"e":"markPriceUpdate",
  "E","s","p" mark price,"i" index price,"P" estimated settle price,"r" funding rate,"T"
  next funding time}`` (qiuham/crypto-api-docs ``Mark-Price-Stream.md``).
- USD-M ``exchangeInfo`` symbols carry ``pair``, ``contractType`` (``PERPETUAL``) and
  ``status`` (examples in public connectors' tests and the docs).
- Funding every 8 h at 00:00, 08:00 and 16:00 UTC (BINANCE.md: most symbols).
- ``/api/v3/klines``: weight 2; limit default 500, max 1000 (a larger one is capped, as
  spot caps historicalTrades'; JKorf/Binance.Net#76: "could not get more than 1000");
  intervals ``1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M``, anything else HTTP 400
  ``-1120 "Invalid interval."``; a missing symbol or interval ``-1102`` "Mandatory
  parameter '%s' was not sent, was empty/null, or malformed." (binance-spot-api-docs
  ``rest-api.md``, ``errors.md``). ``/fapi/v1/klines``: no ``1s``; limit default 500, max
  1500 (above: ``-1130``); weight by limit: [1,100) 1, [100,500) 2, [500,1000] 5, above 10
  (coincise ``get_fapi_v1_klines.md``). Rows ``[open time, open, high, low, close, volume,
  close time, quote volume, trades, taker buy volume, taker buy quote volume, "0"]``,
  decimals as strings (spot 8 places; USD-M the symbol's precision, here 2/3/5); the kline
  now open is served; an interval without trades is a kline of 0 trades at the last close
  ("Kline always generate even if there is no trade", a Binance maintainer in
  binance-public-data#153). With ``startTime``: the first ``limit`` open times at or after
  it (up to ``endTime``); without: the last ``limit`` up to ``endTime`` or now. Weeks open
  on Mondays; ``1M`` on the first of the month; ``3d`` on multiples of 3 days since the
  epoch (an assumption). ``startTime`` after ``endTime`` gets ``[]`` (an assumption).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import functools
import http
import itertools
import re
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import orjson
import websockets.http11
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

# The server reads request lines of up to 64 KB itself, so that a long URL reaches
# process_request and gets the 414 that nginx answers (max_path), as Binance's front
# does; websockets' own 8 KB limit would otherwise drop the connection without an answer
# (websockets 14, the floor) or answer in its own words.
websockets.http11.MAX_LINE_LENGTH = 64 * 1024

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: spot trade times start here

SPOT = "spot"
USDM = "usdm"
MARKET = "MARKET"  # the USD-M trade type of order-book trades
INSURANCE_FUND = "INSURANCE_FUND"

# A well-formed key (64 letters and digits) for tests to put in ``api_keys``.
TEST_API_KEY = "pairsMonitorLocalTestKey" + "0" * 40

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
THREE_MONTHS_MS = 90 * DAY_MS  # historicalTrades on USD-M serves no older trade
ONE_YEAR_MS = 365 * DAY_MS  # aggTrades on USD-M serves no older aggregate
FUNDING_INTERVAL_MS = 8 * HOUR_MS  # 00:00, 08:00, 16:00 UTC
FUNDING_HISTORY_MS = 120 * DAY_MS  # fundingRate rows go back this far from the start
# The live rate a markPrice event shows is an estimate; the settled one differs from its
# last estimate by this much, so a test can tell which of the two a client stored.
ESTIMATE_DRIFT = Decimal("0.00001")
USDM_LEAD_MS = 10 * 60 * 1000  # USD-M trade times start this long before the server did

T = TypeVar("T")

# What a scripted REST failure (``BinanceServer.rest_failures``) answers instead of trades.
RESET = "reset"  # the TCP connection is cut with no answer (the client sees a reset)
STALL = "stall"  # no answer for ``stall_s`` seconds (the client's read times out)
HTML_200 = "html-200"  # a CDN's HTML page with status 200 instead of the JSON
# Binance's own body for an internal error (code -1001, DISCONNECTED); a 502 comes from
# the gateway in front of it, as HTML.
_INTERNAL_ERROR = {"code": -1001, "msg": "Internal error; unable to process your request."}
_BAD_GATEWAY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_CDN_PAGE = b"<!DOCTYPE html><html><body>Checking your browser before accessing</body></html>"
_API_KEY = re.compile(r"[A-Za-z0-9]{64}")
# The REST endpoints that page trades: the scripted failures and rest_mangle act on these.
_TRADE_PAGES = ("/historicalTrades", "/aggTrades")


@dataclass
class Trade:
    """One published trade, with its wire forms."""

    symbol: str
    id: int
    price: str
    qty: str
    time_ms: int
    buyer_is_maker: bool
    in_rest: bool = True  # False: REST never returns it (USD-M insurance-fund, ADL)
    market: str = SPOT
    trade_type: str = MARKET  # the USD-M ``X``; spot trades are all market trades

    @property
    def is_market(self) -> bool:
        return self.trade_type == MARKET

    def payload(self) -> dict[str, Any]:
        """The ``@trade`` event as the market sends it."""
        if self.market == USDM:
            return {
                "e": "trade",
                "E": self.time_ms + 1,
                "T": self.time_ms,
                "s": self.symbol,
                "t": self.id,
                "p": self.price,
                "q": self.qty,
                "X": self.trade_type,
                "m": self.buyer_is_maker,
                "st": 1,
            }
        return {
            "e": "trade",
            "E": self.time_ms + 1,
            "s": self.symbol,
            "t": self.id,
            "p": self.price,
            "q": self.qty,
            "T": self.time_ms,
            "m": self.buyer_is_maker,
            "M": True,
        }

    def ws_frame(self, raw: bool = False) -> str:
        """The frame on a combined stream (``raw``: on a ``/ws/<stream>`` one)."""
        if raw:
            return orjson.dumps(self.payload()).decode()
        stream = f"{self.symbol.lower()}@trade"
        return orjson.dumps({"stream": stream, "data": self.payload()}).decode()

    def rest_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "price": self.price,
            "qty": self.qty,
            "quoteQty": f"{float(self.price) * float(self.qty):.8f}",
            "time": self.time_ms,
            "isBuyerMaker": self.buyer_is_maker,
        }
        if self.market == USDM:
            item["isRPITrade"] = False
        else:
            item["isBestMatch"] = True
        return item

    def stored(self) -> tuple[int, int, float, float, int]:
        """The row the daemon must store: (trade_id, trade_time_us, price, qty, maker)."""
        return (
            self.id,
            self.time_ms * 1000,
            float(self.price),
            float(self.qty),
            int(self.buyer_is_maker),
        )


@dataclass
class Aggregate:
    """One ``aggTrades`` row: the consecutive trade ids ``first..last`` at one price."""

    id: int
    price: str
    qty: Decimal
    first: int
    last: int
    time_ms: int
    buyer_is_maker: bool
    closed: bool = False  # True once REST may have served it: it never grows after

    def rest_item(self, market: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "a": self.id,
            "p": self.price,
            "q": format(self.qty, "f"),
            "f": self.first,
            "l": self.last,
            "T": self.time_ms,
            "m": self.buyer_is_maker,
        }
        if market == SPOT:
            item["M"] = True
        return item


def _base_price(symbol: str) -> float:
    return 100.0 if symbol.startswith("ETH") else 50_000.0


def _qty(trade_id: int) -> str:
    return f"{0.001 * (1 + trade_id % 13):.3f}"


def make_trade(symbol: str, trade_id: int, base_time_ms: int = BASE_TIME_MS) -> Trade:
    """A deterministic spot trade: several share a millisecond, prices wander, both sides."""
    return Trade(
        symbol,
        trade_id,
        f"{_base_price(symbol) + (trade_id * 7919 % 1000) / 100:.2f}",
        _qty(trade_id),
        base_time_ms + trade_id // 3,
        trade_id % 3 == 0,
    )


@dataclass
class _Run:
    """USD-M trades that share time, price and side (one taker order filling)."""

    first_id: int
    length: int
    time_ms: int
    price_cents: int
    buyer_is_maker: bool


def funding_rate(symbol: str, funding_time_ms: int) -> str:
    """The rate settled at ``funding_time_ms``, as fundingRate shows it (some negative)."""
    steps = zlib.crc32(f"{symbol}:{funding_time_ms}".encode()) % 61 - 15
    return f"{Decimal(steps) * Decimal('0.00001'):.8f}"


class RestCall(tuple[str, dict[str, str]]):
    """One REST request as the server saw it.

    It unpacks as ``(endpoint, params)`` like the records before headers were kept;
    ``headers`` are the request's own (names case-insensitive).
    """

    headers: Headers
    at: float  # time.monotonic() when the request arrived
    weight: int  # the request weight Binance counts for it

    def __new__(
        cls, endpoint: str, params: dict[str, str], headers: Headers, weight: int = 0
    ) -> RestCall:
        call = super().__new__(cls, (endpoint, params))
        call.headers = headers
        call.at = time.monotonic()
        call.weight = weight
        return call

    @property
    def endpoint(self) -> str:
        return self[0]

    @property
    def params(self) -> dict[str, str]:
        return self[1]


class _Refused(Exception):
    """A request Binance refuses: the HTTP status and its ``{"code","msg"}`` body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Client:
    connection: ServerConnection
    symbols: set[str]  # those whose @trade stream it gets
    raw: bool = False  # a /ws/<stream> connection: payloads without the combined wrapper
    delivers: bool = True  # False on USD-M's legacy routes: connected, never any data
    mark_streams: dict[str, str] = field(default_factory=dict)  # symbol -> stream name
    connected_at: float = field(default_factory=time.monotonic)


@dataclass
class _Route:
    streams: list[str]
    raw: bool
    delivers: bool


class BinanceServer:
    """Binance's market-data protocol on ``127.0.0.1:port``, scriptable from another thread.

    :param symbols: the symbols listed by exchangeInfo (upper case), each with a tape.
    :param market: ``"spot"`` or ``"usdm"``: the routes, frames and REST rules it serves.
    :param api_keys: the keys USD-M historicalTrades accepts in ``X-MBX-APIKEY``.
    :param base_time_ms: the first trade's time (spot: 2026-01-01; USD-M: ten minutes
        before the server starts, so that trades are inside the three months REST serves
        and never ahead of the clock).
    :param first_id: id of each symbol's first trade.
    :param first_agg_id: id of each symbol's first aggregate (aggTrades).
    :param quote_volumes: ticker/24hr ``quoteVolume`` by symbol (default: the first symbol
        1e9, the next 1e9 / 2, ...: the order given is the order of activity).
    :param statuses: exchangeInfo ``status`` by symbol (default ``TRADING``).
    :param mark_interval: seconds between markPriceUpdate events (None: Binance's 3 s, or
        1 s for ``@markPrice@1s``).
    :param ping_interval: seconds between server pings (None: no pings, like a silent one).
    :param ping_timeout: seconds the server waits for a pong before dropping the client.
    :param port: the port to listen on (0: a free one).
    :param kline_history_s: how long before the tape starts the symbols traded: klines of
        that time are made up (deterministic, :func:`history_second`), as if the tape
        had been recorded only from its first trade on.
    :param tape_start_ms: where the made-up history ends and the tape's own trades begin
        (default: the first trade's time: ``base_time_ms + first_id // 3`` on spot,
        ``base_time_ms`` on USD-M).
    """

    def __init__(
        self,
        symbols: list[str],
        *,
        market: str = SPOT,
        api_keys: Iterable[str] = (),
        base_time_ms: int | None = None,
        first_id: int = 1_000_000,
        first_agg_id: int = 500_000,
        quote_volumes: Mapping[str, float] | None = None,
        statuses: Mapping[str, str] | None = None,
        mark_interval: float | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        port: int = 0,
        kline_history_s: int = 2 * 86_400,
        tape_start_ms: int | None = None,
    ) -> None:
        if market not in (SPOT, USDM):
            raise ValueError(f"market must be {SPOT!r} or {USDM!r}, not {market!r}")
        self.market = market
        self.started_ms = _now_ms()
        self.symbols = [s.upper() for s in symbols]
        self.tapes: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self.aggregates: dict[str, list[Aggregate]] = {s: [] for s in self.symbols}
        self.next_id = dict.fromkeys(self.symbols, first_id)
        self.first_agg_id = first_agg_id
        self.api_keys = set(api_keys)
        if base_time_ms is None:
            base_time_ms = self.started_ms - USDM_LEAD_MS if market == USDM else BASE_TIME_MS
        self.base_time_ms = base_time_ms
        if tape_start_ms is None:
            tape_start_ms = base_time_ms + (first_id // 3 if market == SPOT else 0)
        # Klines: made-up seconds in [history_start_s, tape_start_s), the tape's after.
        self.tape_start_s = tape_start_ms // 1000
        self.history_start_s = self.tape_start_s - kline_history_s
        self._seconds: dict[str, _TapeSeconds] = {s: _TapeSeconds() for s in self.symbols}
        self.quote_volumes = {s: 1e9 / (i + 1) for i, s in enumerate(self.symbols)}
        self.quote_volumes.update({s.upper(): v for s, v in (quote_volumes or {}).items()})
        self.statuses = dict.fromkeys(self.symbols, "TRADING")
        self.statuses.update({s.upper(): v for s, v in (statuses or {}).items()})
        self.mark_interval = mark_interval
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.prefix = "/fapi/v1" if market == USDM else "/api/v3"  # of every REST path
        self.clients: list[Client] = []
        self.connections_total = 0
        self.silent = False  # see set_silent()
        self.resend_on_connect = 0  # re-send the last N trades of each symbol on connect
        self.rest_429 = 0  # answer this many trade-page requests with 429
        self.rest_errors = 0  # answer this many trade-page requests with HTTP 400
        self.retry_after: int | str = 1  # the Retry-After header of a 429, as sent
        # Answer the next exchangeInfo requests with these, in order (429 with
        # ``retry_after``, or any failure ``rest_failures`` takes); each is used once.
        self.info_failures: list[int | str] = []
        # Answer the next trade-page requests (historicalTrades, aggTrades) with these, in
        # order: an HTTP status (500, 502, 503), RESET or STALL; each is used once.
        self.rest_failures: list[int | str] = []
        self.stall_s = 5.0
        # When set, every historicalTrades or aggTrades page answered from the tape goes
        # through it: it gets the page's items and returns the body to send (hostile items
        # spliced in, an HTML page with status 200, ...), or None to send the page as usual.
        self.rest_mangle: Callable[[list[dict[str, Any]]], bytes | None] | None = None
        # Longer request targets get "414 Request-URI Too Long", as nginx answers past its
        # 8 KB header buffer.
        self.max_path = 8000
        self.rest_calls: list[RestCall] = []
        self.used_weight = 0  # this wall-clock minute's, as X-MBX-USED-WEIGHT-1M says
        self._weight_minute = 0
        # Funding: settled every 8 h on the UTC grid, plus times advance_funding() set.
        self.funding_since_ms = (
            (self.started_ms - FUNDING_HISTORY_MS) // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
        )
        self._funding_extra: list[int] = []
        self._funding_early: int | None = None
        self._runs: dict[str, _Run] = {}
        self._streaming = False
        self.port = port  # 0: any free port, known once started
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (test thread) --------------------------------------------------------

    def start(self) -> BinanceServer:
        self._thread = threading.Thread(target=self._run, name="binance-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local Binance server did not start")
        return self

    def stop(self) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)

    @property
    def ws_url(self) -> str:
        """The host base (``ws://127.0.0.1:port``); the client appends the route."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """The host base (``http://127.0.0.1:port``); the client appends the prefix."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def venue(self) -> str:
        return f"binance-{self.market}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop()).result(timeout)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise RuntimeError("the local Binance server is not started")
        return self.loop

    # -- scripting (test thread) --------------------------------------------------------

    def publish(
        self,
        symbol: str,
        count: int,
        *,
        live: bool = True,
        in_rest: bool = True,
        nonmarket: bool = False,
    ) -> list[Trade]:
        """Append ``count`` trades to the tape; send them on the socket when ``live``.

        :param in_rest: False for market trades REST never returns (their ids are used up
            all the same).
        :param nonmarket: USD-M insurance-fund trades (``X`` ``INSURANCE_FUND``, price and
            quantity ``"0"``): never in REST, in no aggregate, not in :meth:`expected`.
        """
        if nonmarket and self.market != USDM:
            raise ValueError("only USD-M has non-market trades")
        return self.call(self._publish(symbol.upper(), count, live, in_rest, nonmarket))

    def drop(self) -> None:
        """Cut every connection abruptly (no close frame)."""
        self.call(self._each(lambda c: c.connection.transport.abort()))

    def close(self, code: int = 1001, reason: str = "going away") -> None:
        """Close every connection with a close frame."""
        self.call(self._close_all(code, reason))

    def server_shutdown(self) -> None:
        """Announce ``serverShutdown`` on every connection (and keep them open)."""
        frame = orjson.dumps(
            {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": _now_ms()}}
        ).decode()
        self.send_raw(frame)

    def set_silent(self, silent: bool) -> None:
        """A dead socket: send nothing, and read nothing (so pings go unanswered)."""
        self.silent = silent
        self.call(
            self._each(
                lambda c: (
                    c.connection.transport.pause_reading()
                    if silent
                    else c.connection.transport.resume_reading()
                )
            )
        )

    def send_raw(self, text: str | bytes) -> None:
        """Send one frame as is to every client (malformed or unknown frames)."""
        self.call(self._send_all(text))

    def wait_clients(
        self, count: int = 1, timeout: float = 15.0, *, total: int | None = None
    ) -> None:
        """Wait until ``count`` clients are connected (and ``total`` connections were made)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.clients) >= count and (total is None or self.connections_total >= total):
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"{len(self.clients)} client(s), {self.connections_total} connection(s) made; "
            f"wanted {count} (total {total})"
        )

    def start_stream(self, rate: float) -> None:
        """Publish about ``rate`` trades a second, spread over the symbols, until stopped."""
        self._streaming = True
        loop = self._running_loop()
        loop.call_soon_threadsafe(lambda: self._keep(loop.create_task(self._stream(rate))))

    def stop_stream(self) -> None:
        """Stop the stream; returns once no more trades are being published."""
        self._streaming = False
        self.call(asyncio.sleep(0.05))

    def advance_funding(self, delay_s: float = 0.3) -> int:
        """Bring the next funding forward to ``delay_s`` from now; return its time (ms).

        Until then markPriceUpdate events name it as ``T``; once passed it is a settled
        fundingRate row (its rate :func:`funding_rate`, not the last estimate shown) and
        ``T`` moves on to the next 8-hour funding time.
        """
        return self.call(self._advance_funding(delay_s))

    def next_funding_ms(self) -> int:
        """The funding time markPriceUpdate events announce now (``T``)."""
        return self.call(self._next_funding())

    def expected(self, symbol: str) -> list[tuple[int, int, float, float, int]]:
        """The market trades of the tape as the daemon must store them."""
        return [t.stored() for t in self.tapes[symbol.upper()] if t.is_market]

    def expected_nonmarket(self, symbol: str) -> list[int]:
        """The ids of the tape's non-market (insurance-fund) trades."""
        return [t.id for t in self.tapes[symbol.upper()] if not t.is_market]

    def expected_bars(self, symbol: str) -> list[tuple[Any, ...]]:
        """The 1-second bars of the market trades, as ``bars_1s`` holds them.

        Rows ``(bar_time_s, open, high, low, close, volume, quote_volume,
        taker_buy_volume, trade_count, first_trade_id, last_trade_id)`` by second; sums
        in trade-id order (compare sums with a relative tolerance: SQLite adds in its own).
        """
        bars: dict[int, list[Any]] = {}
        for trade in self.tapes[symbol.upper()]:
            if not trade.is_market:
                continue
            price, qty = float(trade.price), float(trade.qty)
            second = trade.time_ms // 1000
            taker_buy = 0.0 if trade.buyer_is_maker else qty
            bar = bars.get(second)
            if bar is None:
                bars[second] = [second, price, price, price, price, qty, price * qty,
                                taker_buy, 1, trade.id, trade.id]  # fmt: skip
                continue
            bar[2], bar[3], bar[4] = max(bar[2], price), min(bar[3], price), price
            bar[5] += qty
            bar[6] += price * qty
            bar[7] += taker_buy
            bar[8] += 1
            bar[10] = trade.id
        return [tuple(bars[second]) for second in sorted(bars)]

    # -- the server (its own thread and loop) -----------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handler,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_queue=None,
            compression=None,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            if self.market == USDM:
                self._keep(self.loop.create_task(self._mark_prices()))
            self._ready.set()
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()
            for client in list(self.clients):
                client.connection.transport.abort()

    def _ws_route(self, path: str) -> _Route | None:
        """The WebSocket route a request path names, or None for a REST path."""
        url = urllib.parse.urlparse(path)
        market_route = self.market == USDM and url.path.startswith("/market/")
        route_path = url.path.removeprefix("/market") if market_route else url.path
        delivers = market_route or self.market == SPOT
        if route_path == "/stream":
            streams = urllib.parse.parse_qs(url.query).get("streams", [""])[0].split("/")
            return _Route([s for s in streams if s], raw=False, delivers=delivers)
        if route_path.startswith("/ws/"):
            stream = urllib.parse.unquote(route_path.removeprefix("/ws/"))
            return _Route([stream] if stream else [], raw=True, delivers=delivers)
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        if connection.request is None:  # the handshake never completed
            return
        route = self._ws_route(connection.request.path)
        if route is None:
            return
        client = Client(connection, set(), raw=route.raw, delivers=route.delivers)
        self._subscribe(client, route.streams)
        self.connections_total += 1
        if self.resend_on_connect and client.delivers:
            for symbol in client.symbols:
                for trade in self.tapes.get(symbol, [])[-self.resend_on_connect :]:
                    await connection.send(trade.ws_frame(client.raw))
        self.clients.append(client)
        try:
            async for message in connection:
                await self._control(client, message)
        except Exception:
            pass
        finally:
            self.clients.remove(client)

    def _subscribe(self, client: Client, streams: Iterable[str], on: bool = True) -> None:
        for stream in streams:
            symbol, _, kind = stream.partition("@")
            symbol = symbol.upper()
            if kind.lower() == "trade" and on:
                client.symbols.add(symbol)
            elif kind.lower() == "trade":
                client.symbols.discard(symbol)
            elif kind.lower() in ("markprice", "markprice@1s") and self.market == USDM:
                if on:
                    client.mark_streams[symbol] = stream
                else:
                    client.mark_streams.pop(symbol, None)

    async def _control(self, client: Client, message: str | bytes) -> None:
        """Answer SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS; ignore anything else."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return
        if not isinstance(request, dict):
            return
        method, params = request.get("method"), request.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and isinstance(params, list):
            self._subscribe(client, [str(p) for p in params], on=method == "SUBSCRIBE")
            result: Any = None
        elif method == "LIST_SUBSCRIPTIONS":
            trades = [f"{s.lower()}@trade" for s in sorted(client.symbols)]
            result = trades + sorted(client.mark_streams.values())
        else:
            return
        with contextlib.suppress(Exception):  # the client is gone
            await client.connection.send(orjson.dumps({"result": result, "id": request.get("id")}))

    async def _publish(
        self, symbol: str, count: int, live: bool, in_rest: bool, nonmarket: bool
    ) -> list[Trade]:
        tape = self.tapes[symbol]
        for _ in range(count):  # one by one: the next trade's time follows the last one's
            tape.append(self._next_trade(symbol, in_rest, nonmarket))
        trades = tape[len(tape) - count :]
        self._aggregate(symbol, trades)
        if live and not self.silent:
            for client in list(self.clients):
                if client.delivers and symbol in client.symbols:
                    for trade in trades:
                        try:
                            await client.connection.send(trade.ws_frame(client.raw))
                        except Exception:
                            break  # that client is gone; it will catch up over REST
        return trades

    def _next_trade(self, symbol: str, in_rest: bool, nonmarket: bool) -> Trade:
        trade_id = self.next_id[symbol]
        self.next_id[symbol] += 1
        if self.market == SPOT:
            trade = make_trade(symbol, trade_id, self.base_time_ms)
            trade.in_rest = in_rest
            return trade
        run = self._runs.get(symbol)
        if nonmarket:
            if run is not None:  # the market run it interrupts does not resume after it
                run.length = min(run.length, trade_id - run.first_id)
            tape = self.tapes[symbol]
            time_ms = tape[-1].time_ms if tape else self.base_time_ms
            return Trade(symbol, trade_id, "0", "0", time_ms, False, in_rest=False,
                         market=USDM, trade_type=INSURANCE_FUND)  # fmt: skip
        if run is None or trade_id >= run.first_id + run.length:
            run = self._runs[symbol] = self._new_run(symbol, trade_id, run)
        return Trade(
            symbol,
            trade_id,
            f"{run.price_cents / 100:.2f}",
            _qty(trade_id),
            run.time_ms,
            run.buyer_is_maker,
            in_rest=in_rest,
            market=USDM,
        )

    def _new_run(self, symbol: str, first_id: int, previous: _Run | None) -> _Run:
        """The next run of USD-M trades: 1 to 4 of them, 20 to 60 ms after the last trade
        (never ahead of the clock), at a price or side other than the previous run's."""
        tape = self.tapes[symbol]
        if tape:
            last = tape[-1].time_ms
            time_ms = max(last, min(last + 20 + first_id % 41, _now_ms()))
        else:
            time_ms = self.base_time_ms
        mixed = first_id * 2_654_435_761 % 2**32  # Knuth's multiplicative hash
        price_cents = round(_base_price(symbol) * 100) + first_id * 7919 % 1000
        buyer_is_maker = mixed >> 16 & 1 == 1
        if previous is not None and (previous.price_cents, previous.buyer_is_maker) == (
            price_cents,
            buyer_is_maker,
        ):
            price_cents += 1
        return _Run(first_id, 1 + (mixed >> 24) % 4, time_ms, price_cents, buyer_is_maker)

    def _aggregate(self, symbol: str, trades: list[Trade]) -> None:
        """Add the trades REST serves to the symbol's aggregates (consecutive ids with the
        same time, price and side); an aggregate closes at the end of each publish."""
        aggregates = self.aggregates[symbol]
        for trade in trades:
            if not (trade.in_rest and trade.is_market):
                continue
            last = aggregates[-1] if aggregates else None
            if (
                last is not None
                and not last.closed
                and last.last == trade.id - 1
                and (last.time_ms, last.price, last.buyer_is_maker)
                == (trade.time_ms, trade.price, trade.buyer_is_maker)
            ):
                last.last = trade.id
                last.qty += Decimal(trade.qty)
                continue
            aggregates.append(
                Aggregate(self.first_agg_id + len(aggregates), trade.price, Decimal(trade.qty),
                          trade.id, trade.id, trade.time_ms, trade.buyer_is_maker)
            )  # fmt: skip
        if aggregates:
            aggregates[-1].closed = True

    async def _stream(self, rate: float) -> None:
        tick, owed = 0.005, 0.0
        last = time.monotonic()
        while self._streaming:
            await asyncio.sleep(tick)
            now = time.monotonic()
            owed += (now - last) * rate / len(self.symbols)
            last = now
            count = int(owed)
            owed -= count
            for symbol in self.symbols:
                if count and self._streaming:
                    await self._publish(symbol, count, True, True, False)

    async def _mark_prices(self) -> None:
        """Send markPriceUpdate events: every tick on ``@1s`` streams (or all streams when
        ``mark_interval`` is set), every third tick on ``@markPrice``."""
        for tick in itertools.count(1):
            await asyncio.sleep(self.mark_interval or 1.0)
            if self.silent:
                continue
            for client in list(self.clients):
                if not client.delivers:
                    continue
                for symbol, stream in list(client.mark_streams.items()):
                    every_second = self.mark_interval is not None or stream.endswith("@1s")
                    if symbol not in self.tapes or not (every_second or tick % 3 == 0):
                        continue
                    payload = self._mark_price_event(symbol)
                    data = payload if client.raw else {"stream": stream, "data": payload}
                    try:
                        await client.connection.send(orjson.dumps(data).decode())
                    except Exception:
                        break  # that client is gone

    def _mark_price_event(self, symbol: str) -> dict[str, Any]:
        next_funding = self._next_funding_now()
        tape = [t for t in self.tapes[symbol][-8:] if t.is_market]
        mark = float(tape[-1].price) if tape else _base_price(symbol)
        estimate = Decimal(funding_rate(symbol, next_funding)) + ESTIMATE_DRIFT
        return {
            "e": "markPriceUpdate",
            "E": _now_ms(),
            "s": symbol,
            "p": f"{mark:.8f}",
            "i": f"{mark * 0.9999:.8f}",
            "P": f"{mark:.8f}",
            "r": f"{estimate:.8f}",
            "T": next_funding,
        }

    # -- funding (server loop) --------------------------------------------------------

    async def _advance_funding(self, delay_s: float) -> int:
        early = _now_ms() + round(delay_s * 1000)
        if early < self._next_funding_now():
            self._funding_early = early
        return self._next_funding_now()

    async def _next_funding(self) -> int:
        return self._next_funding_now()

    def _next_funding_now(self) -> int:
        now = self._settle_funding()
        grid = (now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        return grid if self._funding_early is None else min(grid, self._funding_early)

    def _settle_funding(self) -> int:
        """Move a funding brought forward that has passed into the history; return now."""
        now = _now_ms()
        if self._funding_early is not None and self._funding_early <= now:
            self._funding_extra.append(self._funding_early)
            self._funding_early = None
        return now

    def _funding_times(self, start_ms: int, end_ms: int) -> list[int]:
        """The settled funding times in ``[start_ms, end_ms]``, ascending."""
        end_ms = min(end_ms, self._settle_funding())
        start_ms = max(start_ms, self.funding_since_ms)
        if start_ms > end_ms:
            return []
        first = -(-start_ms // FUNDING_INTERVAL_MS) * FUNDING_INTERVAL_MS
        grid = set(range(first, end_ms + 1, FUNDING_INTERVAL_MS))
        return sorted(grid | {t for t in self._funding_extra if start_ms <= t <= end_ms})

    # -- scripting helpers (server loop) ----------------------------------------------

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a background task until it ends (the loop holds weak ones)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _each(self, fn: Callable[[Client], object]) -> None:
        for client in list(self.clients):
            fn(client)

    async def _close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(
            *(c.connection.close(code, reason) for c in list(self.clients)),
            return_exceptions=True,
        )

    async def _send_all(self, text: str | bytes) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):  # a client already gone
                await client.connection.send(text)

    # -- REST ------------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if len(request.path) > self.max_path:
            return _answer(connection, 414, "text/html", b"<html>414 Request-URI Too Long</html>")
        if self._ws_route(request.path) is not None:
            return None  # go on with the WebSocket handshake
        url = urllib.parse.urlparse(request.path)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        endpoint = url.path.removeprefix(self.prefix)
        weight = self._weight(endpoint, params)
        self.rest_calls.append(RestCall(endpoint, params, request.headers, weight))
        response = await self._rest(connection, request, endpoint, params)
        if response is not None:
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._spend(weight))
        return response

    async def _rest(
        self, connection: ServerConnection, request: Request, endpoint: str, params: dict
    ) -> Response | None:
        handlers: dict[str, Callable[[dict[str, str], Request], Any]] = {
            "/exchangeInfo": self._exchange_info,
            "/historicalTrades": self._historical_trades,
            "/trades": self._recent_trades,
            "/aggTrades": self._agg_trades,
            "/ticker/24hr": self._ticker_24hr,
            "/klines": self._klines,
        }
        if self.market == USDM:
            handlers["/fundingRate"] = self._funding_rate
        handler = handlers.get(endpoint)
        if handler is None:
            path = urllib.parse.urlparse(request.path).path
            return _json(connection, 404, {"code": -1, "msg": f"no endpoint {path}"})
        if endpoint == "/exchangeInfo" and self.info_failures:
            failure = self.info_failures.pop(0)
            if failure == 429:
                return self._too_many(connection, "Too many requests.")
            failed = await self._fail(connection, failure)
            if failed is not None:
                return failed
        if endpoint in _TRADE_PAGES:
            if params.get("symbol", "") not in self.tapes:
                return _json(connection, 400, {"code": -1121, "msg": "Invalid symbol."})
            scripted = await self._scripted_failure(connection)
            if scripted is not None:
                return scripted
        try:
            body = handler(params, request)
        except _Refused as refused:
            return _json(connection, refused.status, {"code": refused.code, "msg": refused.msg})
        if endpoint in _TRADE_PAGES and self.rest_mangle is not None:
            mangled = self.rest_mangle(body)
            if mangled is not None:
                return _answer(connection, 200, "application/json", mangled)
        return _json(connection, 200, body)

    async def _scripted_failure(self, connection: ServerConnection) -> Response | None:
        """The next scripted failure of a trade page (rest_429, rest_errors, rest_failures)."""
        if self.rest_429 > 0:
            self.rest_429 -= 1
            return self._too_many(connection, "Too many requests; banned soon.")
        if self.rest_errors > 0:
            self.rest_errors -= 1
            return _json(connection, 400, {"code": -1100, "msg": "Illegal characters found."})
        if self.rest_failures:
            return await self._fail(connection, self.rest_failures.pop(0))
        return None

    def _too_many(self, connection: ServerConnection, msg: str) -> Response:
        response = _json(connection, 429, {"code": -1003, "msg": msg})
        response.headers["Retry-After"] = str(self.retry_after)
        return response

    def _weight(self, endpoint: str, params: dict[str, str]) -> int:
        """The request weight Binance counts for one call (sources: module docstring)."""
        if self.market == USDM:
            weights = {"/historicalTrades": 20, "/aggTrades": 20, "/trades": 5,
                       "/exchangeInfo": 1, "/fundingRate": 0}  # fmt: skip
            if endpoint == "/ticker/24hr":
                return 1 if "symbol" in params else 40
            if endpoint == "/klines":
                return usdm_klines_weight(params.get("limit", "500"))
        else:
            weights = {"/historicalTrades": 25, "/aggTrades": 4, "/trades": 25,
                       "/exchangeInfo": 20, "/klines": 2}  # fmt: skip
            if endpoint == "/ticker/24hr":
                return 2 if "symbol" in params else 80
        return weights.get(endpoint, 1)

    def _spend(self, weight: int) -> int:
        minute = _now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self.used_weight = minute, 0
        self.used_weight += weight
        return self.used_weight

    def _exchange_info(self, params: dict[str, str], request: Request) -> dict[str, Any]:
        if self.market == USDM:
            rows = [
                {"symbol": s, "pair": s, "contractType": "PERPETUAL", "status": self.statuses[s]}
                for s in self.symbols
            ]
        else:
            rows = [{"symbol": s, "status": self.statuses[s]} for s in self.symbols]
        return {"timezone": "UTC", "serverTime": _now_ms(), "symbols": rows}

    def _limit(self, params: dict[str, str], default: int, maximum: int) -> int:
        """The ``limit`` parameter: USD-M refuses one above its maximum, spot caps it."""
        limit = _int_param(params, "limit", default)
        if self.market == USDM and not 1 <= limit <= maximum:
            raise _Refused(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return max(1, min(limit, maximum))

    def _historical_trades(self, params: dict[str, str], request: Request) -> list[Any]:
        symbol = params["symbol"]
        tape = self.tapes[symbol]
        if self.market == SPOT:
            limit = self._limit(params, 500, 1000)
        else:
            self._check_key(request.headers)
            limit = self._limit(params, 100, 500)
        horizon = _now_ms() - THREE_MONTHS_MS if self.market == USDM else 0
        if "fromId" in params:
            start = max(_int_param(params, "fromId", 0) - (tape[0].id if tape else 0), 0)
            if start < len(tape) and tape[start].time_ms < horizon:
                return []  # not served any more (see the module docstring)
            later = (tape[i] for i in range(start, len(tape)))
            page = list(itertools.islice((t for t in later if t.in_rest), limit))
        else:
            newest = (t for t in reversed(tape) if t.in_rest and t.time_ms >= horizon)
            page = list(itertools.islice(newest, limit))[::-1]
        return [t.rest_item() for t in page]

    def _check_key(self, headers: Headers) -> None:
        key = headers.get("X-MBX-APIKEY")
        if key is not None and not _API_KEY.fullmatch(key):
            raise _Refused(401, -2014, "API-key format invalid.")
        if key not in self.api_keys:
            raise _Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")

    def _recent_trades(self, params: dict[str, str], request: Request) -> list[Any]:
        symbol = params.get("symbol", "")
        if symbol not in self.tapes:
            raise _Refused(400, -1121, "Invalid symbol.")
        limit = self._limit(params, 500, 1000)
        newest = (t for t in reversed(self.tapes[symbol]) if t.in_rest)
        return [t.rest_item() for t in list(itertools.islice(newest, limit))[::-1]]

    def _agg_trades(self, params: dict[str, str], request: Request) -> list[Any]:
        aggregates = self.aggregates[params["symbol"]]
        limit = self._limit(params, 500, 1000)
        start_ms = _int_param(params, "startTime", None)
        end_ms = _int_param(params, "endTime", None)
        if start_ms is not None and end_ms is not None and end_ms - start_ms >= HOUR_MS:
            raise _Refused(400, -1127, "More than 1 hours between startTime and endTime.")
        oldest = _now_ms() - ONE_YEAR_MS if self.market == USDM else 0
        low = bisect.bisect_left(aggregates, max(oldest, start_ms or 0), key=_agg_time)
        high = len(aggregates)
        if end_ms is not None:
            high = bisect.bisect_right(aggregates, end_ms, key=_agg_time)
        if "fromId" in params:
            low = max(low, _int_param(params, "fromId", 0) - self.first_agg_id)
        elif start_ms is None:  # the newest ones (up to endTime)
            low = max(low, high - limit)
        return [a.rest_item(self.market) for a in aggregates[low : min(high, low + limit)]]

    def _ticker_24hr(self, params: dict[str, str], request: Request) -> Any:
        if "symbol" in params:
            if params["symbol"] not in self.tapes:
                raise _Refused(400, -1121, "Invalid symbol.")
            return self._ticker(params["symbol"])
        return [self._ticker(s) for s in self.symbols]

    def _ticker(self, symbol: str) -> dict[str, Any]:
        """The 24 h statistics of the tape's market trades; ``quoteVolume`` as configured."""
        now = _now_ms()
        trades = [t for t in self.tapes[symbol] if t.in_rest and t.time_ms >= now - DAY_MS]
        prices = [float(t.price) for t in trades] or [0.0]
        volume = sum(float(t.qty) for t in trades)
        quote = sum(float(t.price) * float(t.qty) for t in trades)
        row: dict[str, Any] = {
            "symbol": symbol,
            "priceChange": f"{prices[-1] - prices[0]:.8f}",
            "priceChangePercent": f"{(prices[-1] / prices[0] - 1) * 100 if prices[0] else 0:.3f}",
            "weightedAvgPrice": f"{quote / volume if volume else 0:.8f}",
            "lastPrice": f"{prices[-1]:.8f}",
            "lastQty": trades[-1].qty if trades else "0",
            "openPrice": f"{prices[0]:.8f}",
            "highPrice": f"{max(prices):.8f}",
            "lowPrice": f"{min(prices):.8f}",
            "volume": f"{volume:.8f}",
            "quoteVolume": f"{self.quote_volumes.get(symbol, 0.0):.8f}",
            "openTime": now - DAY_MS,
            "closeTime": now,
            "firstId": trades[0].id if trades else -1,
            "lastId": trades[-1].id if trades else -1,
            "count": len(trades),
        }
        if self.market == SPOT:
            row["prevClosePrice"] = row["openPrice"]
            row["bidPrice"] = row["askPrice"] = row["lastPrice"]
            row["bidQty"] = row["askQty"] = "1.00000000"
        return row

    def _funding_rate(self, params: dict[str, str], request: Request) -> list[Any]:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.tapes:
            raise _Refused(400, -1121, "Invalid symbol.")
        limit = self._limit(params, 100, 1000)
        start_ms = _int_param(params, "startTime", None)
        end_ms = _int_param(params, "endTime", None)
        times = self._funding_times(start_ms or 0, end_ms if end_ms is not None else _now_ms())
        rows = [(t, s) for t in times for s in ([symbol] if symbol else self.symbols)]
        rows = rows[:limit] if start_ms is not None else rows[-limit:]
        return [
            {
                "symbol": s,
                "fundingTime": t,
                "fundingRate": funding_rate(s, t),
                "markPrice": f"{_base_price(s):.8f}",
            }
            for t, s in rows
        ]

    def _klines(self, params: dict[str, str], request: Request) -> list[Any]:
        symbol = params.get("symbol")
        interval = params.get("interval")
        for name, value in (("symbol", symbol), ("interval", interval)):
            if not value:
                raise _Refused(
                    400,
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        if symbol not in self.tapes:
            raise _Refused(400, -1121, "Invalid symbol.")
        intervals = USDM_KLINE_INTERVALS if self.market == USDM else KLINE_INTERVALS
        if interval not in intervals:
            raise _Refused(400, -1120, "Invalid interval.")
        limit = self._limit(params, 500, 1500 if self.market == USDM else 1000)
        start_ms = _int_param(params, "startTime", None)
        end_ms = _int_param(params, "endTime", None)
        return self.klines(symbol, interval, start_ms=start_ms, end_ms=end_ms, limit=limit)

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[list[Any]]:
        """The klines ``/klines`` answers, as Binance does: open times from ``start_ms``
        (the first ``limit``), or the last ``limit`` up to ``end_ms`` (default: now).

        A kline covers the made-up history before the tape (:func:`history_second`) and
        the tape's market trades after, to the kline now open (not closed yet, as Binance
        serves it); an interval without trades is a kline of 0 trades at the last close,
        as Binance generates them (binance-public-data#153: "Kline always generate even
        if there is no trade"). A kline before the history began has no row. ``start_ms``
        after ``end_ms`` gets ``[]`` (an assumption: the docs say nothing).
        """
        symbol = symbol.upper()
        seconds = self._seconds[symbol]
        seconds.update(self.tapes[symbol])
        now_s = _now_ms() // 1000
        first = _bucket(self.history_start_s, interval)
        last = _bucket(now_s, interval)
        if end_ms is not None:
            last = min(last, _bucket(end_ms // 1000, interval))
        if start_ms is not None:
            opens: list[int] = []
            cursor = max(first, _bucket(-(-start_ms // 1000), interval))
            if cursor * 1000 < start_ms:
                cursor = _next_bucket(cursor, interval)
            while cursor <= last and len(opens) < limit:
                opens.append(cursor)
                cursor = _next_bucket(cursor, interval)
        else:
            opens = []
            cursor = last
            while cursor >= first and len(opens) < limit:
                opens.append(cursor)
                cursor = _next_bucket(cursor, interval, -1)
            opens.reverse()
        if not opens:
            return []
        return self._kline_rows(symbol, interval, opens, now_s)

    def _kline_rows(
        self, symbol: str, interval: str, opens: list[int], now_s: int
    ) -> list[list[Any]]:
        """The kline rows of the consecutive open times ``opens``."""
        tape = self._seconds[symbol]
        begin, end = opens[0], min(_next_bucket(opens[-1], interval), now_s + 1)
        made_up = np.arange(max(begin, self.history_start_s),
                            min(end, self.tape_start_s), dtype=np.int64)  # fmt: skip
        rows = history_second(symbol, made_up)
        traded = rows[:, 6] > 0
        low = bisect.bisect_left(tape.seconds, max(begin, self.tape_start_s))
        high = bisect.bisect_left(tape.seconds, end)
        recorded = tape.seconds[low:high]
        second = np.concatenate([made_up[traded], np.array(recorded, dtype=np.int64)])
        table = np.concatenate(
            [
                rows[traded],
                np.array([tape.rows[t] for t in recorded], dtype=np.int64).reshape(-1, _FIELDS),
            ]
        )
        bounds = np.searchsorted(second, np.array([*opens, end], dtype=np.int64))
        starts, stops = bounds[:-1], bounds[1:]
        filled = np.flatnonzero(stops > starts)
        aggregate: dict[int, tuple[int, ...]] = {}
        if len(filled):
            at = starts[filled]
            highs = np.maximum.reduceat(table[:, 1], at)
            lows = np.minimum.reduceat(table[:, 2], at)
            sums = np.add.reduceat(table[:, 4:], at, axis=0)
            for k, index in enumerate(filled.tolist()):
                aggregate[index] = (int(table[at[k], 0]), int(highs[k]), int(lows[k]),
                                    int(table[stops[index] - 1, 3]), *sums[k].tolist())  # fmt: skip
        digits = (8, 8, 8) if self.market == SPOT else (PRICE_DIGITS, QTY_DIGITS, QUOTE_DIGITS)
        price, qty, quote = (
            functools.partial(_decimal, scale=scale, digits=wide)
            for scale, wide in zip((PRICE_DIGITS, QTY_DIGITS, QUOTE_DIGITS), digits, strict=True)
        )
        close = self._close_before(symbol, begin)
        out: list[list[Any]] = []
        for index, open_s in enumerate(opens):
            bar = aggregate.get(index)
            if bar is None:
                if close is None:
                    continue  # nothing traded yet: no price to carry, no kline
                bar = (close, close, close, close, 0, 0, 0, 0, 0)
            o, h, lo, c, volume, quote_volume, count, taker, taker_quote = bar
            close = c
            out.append([open_s * 1000, price(o), price(h), price(lo), price(c), qty(volume),
                        _next_bucket(open_s, interval) * 1000 - 1, quote(quote_volume), count,
                        qty(taker), quote(taker_quote), "0"])  # fmt: skip
        return out

    def _close_before(self, symbol: str, second: int) -> int | None:
        """The close of the last second with trades before ``second`` (None: none)."""
        tape = self._seconds[symbol]
        index = bisect.bisect_left(tape.seconds, second)
        if index and tape.seconds[index - 1] >= self.tape_start_s:
            return tape.rows[tape.seconds[index - 1]][3]
        end = min(second, self.tape_start_s)
        while end > self.history_start_s:
            window = np.arange(max(self.history_start_s, end - 600), end, dtype=np.int64)
            rows = history_second(symbol, window)
            traded = np.flatnonzero(rows[:, 6] > 0)
            if len(traded):
                return int(rows[traded[-1], 3])
            end = int(window[0])
        return None

    def expected_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[list[Any]]:
        """Every kline with an open time in ``[start_ms, end_ms]``, as ``/klines`` serves
        them page by page (for comparing what a client stored)."""
        return self.call(self._all_klines(symbol, interval, start_ms, end_ms))

    async def _all_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[list[Any]]:
        rows: list[list[Any]] = []
        while True:
            page = self.klines(symbol, interval, start_ms=start_ms, end_ms=end_ms, limit=1000)
            rows += page
            if len(page) < 1000:
                return rows
            start_ms = page[-1][0] + 1

    async def _fail(self, connection: ServerConnection, failure: int | str) -> Response | None:
        """Play one scripted failure (see ``rest_failures``); None: answer as usual after it."""
        if failure == STALL:
            await asyncio.sleep(self.stall_s)  # the client has given up by now
            return None
        if failure == RESET:
            connection.transport.abort()  # the answer below goes to a closed transport
        elif failure == 502:
            return _answer(connection, 502, "text/html", _BAD_GATEWAY)
        elif failure == HTML_200:
            return _answer(connection, 200, "text/html", _CDN_PAGE)
        elif isinstance(failure, int):
            return _json(connection, failure, _INTERNAL_ERROR)
        return _json(connection, 503, _INTERNAL_ERROR)


# -- klines ---------------------------------------------------------------------------

# Binance's kline intervals and their length in seconds; 1M (a calendar month) has none.
KLINE_INTERVALS: dict[str, int | None] = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14_400, "6h": 21_600, "8h": 28_800, "12h": 43_200, "1d": 86_400,
    "3d": 259_200, "1w": 604_800, "1M": None,
}  # fmt: skip
USDM_KLINE_INTERVALS = {k: v for k, v in KLINE_INTERVALS.items() if k != "1s"}
WEEK_OFFSET_S = 4 * 86_400  # weekly klines open on Mondays; 1970-01-01 was a Thursday
# Fixed-point units of the per-second rows: prices in cents, quantities in thousandths,
# quote volumes in their product (1e-5): every sum is exact, as Binance's decimals are.
PRICE_DIGITS, QTY_DIGITS, QUOTE_DIGITS = 2, 3, 5
# A second's row: open, high, low, close (cents), volume (1e-3), quote volume (1e-5),
# trades, taker buy volume (1e-3), taker buy quote volume (1e-5).
_FIELDS = 9


def usdm_klines_weight(limit: str) -> int:
    """``/fapi/v1/klines``' weight by ``limit``: [1,100) 1, [100,500) 2, [500,1000] 5,
    above 10 (Binance's USD-M docs, Kline-Candlestick-Data)."""
    number = int(limit) if limit.isdigit() else 500
    return 1 if number < 100 else 2 if number < 500 else 5 if number <= 1000 else 10


def _mix(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each value (splitmix64's finaliser), as unsigned integers."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def history_second(symbol: str, seconds: np.ndarray) -> np.ndarray:
    """Made-up one-second rows of ``symbol`` before its tape (shape ``(len, 9)``, the
    fields of a second's row; a second without trades has 0 trades).

    Deterministic: the same second of the same symbol is always the same, so two requests
    that overlap agree. About a quarter of the seconds have no trade.
    """
    with np.errstate(over="ignore"):  # the hash wraps around on purpose
        h = _mix(seconds.astype(np.int64) * 1_000_003 + zlib.crc32(symbol.encode()))
    bits = [((h >> np.uint64(shift)) % np.uint64(mod)).astype(np.int64)
            for shift, mod in ((0, 4), (8, 50), (16, 21), (24, 21), (32, 5), (36, 5),
                               (40, 13), (44, 3))]  # fmt: skip
    count, noise, open_step, close_step, up, down, size, taker = bits
    wave = np.round(200 * np.sin(2 * np.pi * seconds / 3600)).astype(np.int64)
    mid = round(_base_price(symbol) * 100) + wave + noise
    open_, close = mid + open_step - 10, mid + close_step - 10
    high = np.maximum(open_, close) + up
    low = np.minimum(open_, close) - down
    volume = count * (1 + size)
    vwap = (high + low) // 2
    taker_volume = volume * taker // 2
    rows = np.stack([open_, high, low, close, volume, volume * vwap, count, taker_volume,
                     taker_volume * vwap], axis=1)  # fmt: skip
    rows[count == 0, 4:] = 0
    return rows


class _TapeSeconds:
    """The per-second rows of a tape's market trades, kept up to date as it grows."""

    def __init__(self) -> None:
        self.seconds: list[int] = []  # ascending; only seconds with trades
        self.rows: dict[int, list[int]] = {}
        self.taken = 0  # tape trades folded in so far

    def update(self, tape: list[Trade]) -> None:
        for trade in tape[self.taken :]:
            if not trade.is_market:
                continue
            second = trade.time_ms // 1000
            price = round(Decimal(trade.price) * 100)
            qty = round(Decimal(trade.qty) * 1000)
            taker = 0 if trade.buyer_is_maker else qty
            row = self.rows.get(second)
            if row is None:
                self.rows[second] = [price, price, price, price, qty, price * qty, 1, taker,
                                     price * taker]  # fmt: skip
                self.seconds.append(second)
                continue
            row[1], row[2], row[3] = max(row[1], price), min(row[2], price), price
            row[4] += qty
            row[5] += price * qty
            row[6] += 1
            row[7] += taker
            row[8] += price * taker
        self.taken = len(tape)


def _month_start(second: int, months: int = 0) -> int:
    """The start (seconds, UTC) of the month holding ``second``, ``months`` later."""
    day = datetime.datetime.fromtimestamp(second, datetime.UTC)
    index = day.year * 12 + day.month - 1 + months
    start = datetime.datetime(index // 12, index % 12 + 1, 1, tzinfo=datetime.UTC)
    return int(start.timestamp())


def _bucket(second: int, interval: str) -> int:
    """The open time (seconds) of the ``interval`` kline holding ``second``."""
    length = KLINE_INTERVALS[interval]
    if length is None:
        return _month_start(second)
    offset = WEEK_OFFSET_S if interval == "1w" else 0
    return (second - offset) // length * length + offset


def _next_bucket(open_s: int, interval: str, steps: int = 1) -> int:
    length = KLINE_INTERVALS[interval]
    return _month_start(open_s, steps) if length is None else open_s + steps * length


def _decimal(value: int, *, scale: int, digits: int) -> str:
    """``value`` x 10^-scale written with ``digits`` decimals (exact: digits >= scale)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d}{'0' * (digits - scale)}"


def _agg_time(aggregate: Aggregate) -> int:
    return aggregate.time_ms


def _int_param(params: Mapping[str, str], name: str, default: T) -> int | T:
    """An integer query parameter, refused as Binance refuses one that is not digits."""
    value = params.get(name)
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,20}", value):
        raise _Refused(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(value)


def _json(connection: ServerConnection, status: int, body: object) -> Response:
    return _answer(connection, status, "application/json", orjson.dumps(body))


def _answer(connection: ServerConnection, status: int, content_type: str, data: bytes) -> Response:
    response = connection.respond(http.HTTPStatus(status), "")
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(data))
    headers["Connection"] = "close"
    return Response(status, response.reason_phrase, headers, data)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
