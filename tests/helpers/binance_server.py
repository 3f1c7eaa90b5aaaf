"""A local stand-in for Binance that the tests and the benchmark script the daemon against.

One port serves both protocols, as facts in ``../shared/BINANCE.md`` describe them:

- WebSocket combined streams ``/stream?streams=btcusdt@trade/...`` (``websockets``);
- REST ``/api/v3/exchangeInfo``, ``/api/v3/historicalTrades``, ``/api/v3/trades`` (and the
  same under ``/fapi/v1``), answered from ``process_request`` before any handshake.

Each symbol has a tape of consecutive trade ids. :meth:`BinanceServer.publish` appends
trades to it (REST sees every published trade) and sends them to the connected clients
unless told not to (a range withheld from the socket that only REST can provide), and
leaves out of REST the trades told so (as USD-M futures never returns its insurance-fund
and ADL trades, which use up ids all the same). The test scripts the failures: abrupt
drops, close 1001, ``serverShutdown``, silence, malformed and unknown frames, duplicates
re-sent on connect, 429 with ``Retry-After``, 5xx, connections reset or left unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

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

    def ws_frame(self) -> str:
        return orjson.dumps(
            {
                "stream": f"{self.symbol.lower()}@trade",
                "data": {
                    "e": "trade",
                    "E": self.time_ms + 1,
                    "s": self.symbol,
                    "t": self.id,
                    "p": self.price,
                    "q": self.qty,
                    "T": self.time_ms,
                    "m": self.buyer_is_maker,
                    "M": True,
                },
            }
        ).decode()

    def rest_item(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "price": self.price,
            "qty": self.qty,
            "quoteQty": f"{float(self.price) * float(self.qty):.8f}",
            "time": self.time_ms,
            "isBuyerMaker": self.buyer_is_maker,
            "isBestMatch": True,
        }

    def stored(self) -> tuple[int, int, float, float, int]:
        """The row the daemon must store: (trade_id, trade_time_us, price, qty, maker)."""
        return (
            self.id,
            self.time_ms * 1000,
            float(self.price),
            float(self.qty),
            int(self.buyer_is_maker),
        )


def make_trade(symbol: str, trade_id: int) -> Trade:
    """A deterministic trade: several share a millisecond, prices wander, both sides."""
    base = 100.0 if symbol.startswith("ETH") else 50_000.0
    return Trade(
        symbol,
        trade_id,
        f"{base + (trade_id * 7919 % 1000) / 100:.2f}",
        f"{0.001 * (1 + trade_id % 13):.3f}",
        BASE_TIME_MS + trade_id // 3,
        trade_id % 3 == 0,
    )


@dataclass
class Client:
    connection: ServerConnection
    symbols: set[str]
    connected_at: float = field(default_factory=time.monotonic)


class BinanceServer:
    """Binance's market-data protocol on ``127.0.0.1:port``, scriptable from another thread.

    :param symbols: the symbols listed by exchangeInfo (upper case).
    :param first_id: id of each symbol's first trade.
    :param ping_interval: seconds between server pings (None: no pings, like a silent one).
    :param ping_timeout: seconds the server waits for a pong before dropping the client.
    :param prefix: the REST path prefix (``/fapi/v1`` for USD-M futures).
    :param port: the port to listen on (0: a free one).
    """

    def __init__(
        self,
        symbols: list[str],
        *,
        first_id: int = 1_000_000,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        prefix: str = "/api/v3",
        port: int = 0,
    ) -> None:
        self.symbols = [s.upper() for s in symbols]
        self.tapes: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self.next_id = dict.fromkeys(self.symbols, first_id)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.prefix = prefix
        self.clients: list[Client] = []
        self.connections_total = 0
        self.silent = False  # see set_silent()
        self.resend_on_connect = 0  # re-send the last N trades of each symbol on connect
        self.rest_429 = 0  # answer this many historicalTrades requests with 429
        self.rest_errors = 0  # answer this many historicalTrades requests with HTTP 400
        self.retry_after: int | str = 1  # the Retry-After header of a 429, as sent
        # Answer the next exchangeInfo requests with these, in order (429 with
        # ``retry_after``, or any failure ``rest_failures`` takes); each is used once.
        self.info_failures: list[int | str] = []
        # Answer the next historicalTrades requests with these, in order: an HTTP status
        # (500, 502, 503), RESET or STALL; each is used once.
        self.rest_failures: list[int | str] = []
        self.stall_s = 5.0
        # When set, every historicalTrades page answered from the tape goes through it: it
        # gets the page's items and returns the body to send (hostile items spliced in, an
        # HTML page with status 200, ...), or None to send the page as usual.
        self.rest_mangle: Callable[[list[dict[str, Any]]], bytes | None] | None = None
        # Longer request targets get "414 Request-URI Too Long", as nginx answers past its
        # 8 KB header buffer.
        self.max_path = 8000
        self.rest_calls: list[tuple[str, dict[str, str]]] = []
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
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop()).result(timeout)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise RuntimeError("the local Binance server is not started")
        return self.loop

    # -- scripting (test thread) --------------------------------------------------------

    def publish(
        self, symbol: str, count: int, *, live: bool = True, in_rest: bool = True
    ) -> list[Trade]:
        """Append ``count`` trades to the tape; send them on the socket when ``live``.

        :param in_rest: False for trades REST never returns (their ids are used up all the
            same), as USD-M futures does with insurance-fund and ADL trades.
        """
        return self.call(self._publish(symbol.upper(), count, live, in_rest))

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

    def expected(self, symbol: str) -> list[tuple[int, int, float, float, int]]:
        """The tape as the daemon must store it."""
        return [t.stored() for t in self.tapes[symbol.upper()]]

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
            self._ready.set()
            await self._stop.wait()
            for client in list(self.clients):
                client.connection.transport.abort()

    async def _handler(self, connection: ServerConnection) -> None:
        if connection.request is None:  # the handshake never completed
            return
        query = urllib.parse.urlparse(connection.request.path).query
        streams = urllib.parse.parse_qs(query).get("streams", [""])[0].split("/")
        symbols = {s.split("@")[0].upper() for s in streams if s.endswith("@trade")}
        client = Client(connection, symbols)
        self.connections_total += 1
        if self.resend_on_connect:
            for symbol in symbols:
                for trade in self.tapes.get(symbol, [])[-self.resend_on_connect :]:
                    await connection.send(trade.ws_frame())
        self.clients.append(client)
        try:
            async for _ in connection:
                pass  # the daemon sends nothing we need to act on
        except Exception:
            pass
        finally:
            self.clients.remove(client)

    async def _publish(self, symbol: str, count: int, live: bool, in_rest: bool) -> list[Trade]:
        trades = []
        for _ in range(count):
            trade = make_trade(symbol, self.next_id[symbol])
            trade.in_rest = in_rest
            self.next_id[symbol] += 1
            self.tapes[symbol].append(trade)
            trades.append(trade)
        if live and not self.silent:
            for client in list(self.clients):
                if symbol in client.symbols:
                    for trade in trades:
                        try:
                            await client.connection.send(trade.ws_frame())
                        except Exception:
                            break  # that client is gone; it will catch up over REST
        return trades

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
                    await self._publish(symbol, count, True, True)

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
        url = urllib.parse.urlparse(request.path)
        if url.path == "/stream":
            return None  # go on with the WebSocket handshake
        params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        endpoint = url.path.removeprefix(self.prefix)
        self.rest_calls.append((endpoint, params))
        if endpoint == "/exchangeInfo" and self.info_failures:
            failure = self.info_failures.pop(0)
            if failure == 429:
                response = _json(connection, 429, {"code": -1003, "msg": "Too many requests."})
                response.headers["Retry-After"] = str(self.retry_after)
                return response
            failed = await self._fail(connection, failure)
            if failed is not None:
                return failed
        if endpoint == "/exchangeInfo":
            body = {"symbols": [{"symbol": s, "status": "TRADING"} for s in self.symbols]}
            return _json(connection, 200, body)
        if endpoint not in ("/historicalTrades", "/trades"):
            return _json(connection, 404, {"code": -1, "msg": f"no endpoint {url.path}"})
        symbol = params.get("symbol", "")
        if symbol not in self.tapes:
            return _json(connection, 400, {"code": -1121, "msg": "Invalid symbol."})
        if endpoint == "/historicalTrades" and self.rest_429 > 0:
            self.rest_429 -= 1
            response = _json(
                connection, 429, {"code": -1003, "msg": "Too many requests; banned soon."}
            )
            response.headers["Retry-After"] = str(self.retry_after)
            return response
        if endpoint == "/historicalTrades" and self.rest_errors > 0:
            self.rest_errors -= 1
            return _json(connection, 400, {"code": -1100, "msg": "Illegal characters found."})
        if endpoint == "/historicalTrades" and self.rest_failures:
            failed = await self._fail(connection, self.rest_failures.pop(0))
            if failed is not None:
                return failed
        limit = min(int(params.get("limit", 500)), 1000)
        tape = self.tapes[symbol]
        if endpoint == "/historicalTrades" and "fromId" in params:
            start = max(int(params["fromId"]) - (tape[0].id if tape else 0), 0)
            later = (tape[i] for i in range(start, len(tape)))
            page = list(itertools.islice((t for t in later if t.in_rest), limit))
        else:
            newest = (t for t in reversed(tape) if t.in_rest)
            page = list(itertools.islice(newest, limit))[::-1]
        items = [t.rest_item() for t in page]
        if endpoint == "/historicalTrades" and self.rest_mangle is not None:
            mangled = self.rest_mangle(items)
            if mangled is not None:
                return _answer(connection, 200, "application/json", mangled)
        return _json(connection, 200, items)

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
