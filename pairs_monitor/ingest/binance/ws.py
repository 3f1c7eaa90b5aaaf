"""The WebSocket side of the live Binance source: one connection and its reconnect loop.

:class:`StreamConnection` is a thread that owns one combined-stream connection (up to
1024 streams) and reconnects it for ever, until told to stop:

- exponential backoff with full jitter between attempts, capped, reset after a good
  connection (one that delivered data); no wait at all after ``serverShutdown``;
- a process-wide bound on connection attempts (Binance allows 300 per 5 minutes per IP);
- pings are answered (websocket-client does it while receiving), at most
  ``MAX_OUTGOING_PER_S`` frames a second, as Binance allows 5;
- :class:`Watchdog` closes a socket that has been silent too long and reconnects before
  the 24-hour limit Binance puts on a connection;
- the whole connect (TCP, TLS and the WebSocket handshake) has one deadline, however
  slowly the server dribbles its answer; a frame larger than ``MAX_FRAME_BYTES`` is
  refused before it is read, and the connection is made anew;
- the thread survives anything its loop raises (logged, then it reconnects);
  :attr:`StreamConnection.crashes` counts such surprises and ``is_alive()`` stays the
  supervisor's check;
- :func:`plan_connections` and :func:`stream_url` split the streams over connections
  (at most 1024 streams and ``MAX_URL_CHARS`` of URL each, a non-ASCII symbol on a
  connection of its own), put them on the market's route (``/stream`` on spot,
  ``/market/stream`` on USD-M futures) and percent-encode the stream names (RFC 3986,
  UTF-8).

The receive loop is kept bare on purpose: the socket stays blocking (a timeout would add
a ``poll`` per read), frames are taken as bytes (no decode, no UTF-8 check: orjson
rejects invalid text anyway) and handed to ``on_message``. Stopping or the watchdog
unblock it by shutting the socket down from another thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import websocket
from websocket import ABNF

from pairs_monitor.clock import Backoff

log = logging.getLogger("ingest.binance.ws")

MAX_STREAMS_PER_CONNECTION = 1024
# Binance: 5 incoming messages a second per connection (pings, pongs, control frames);
# we stay below it.
MAX_OUTGOING_PER_S = 4
# Binance: 300 connection attempts per 5 minutes per IP; keep a margin for other tools.
MAX_ATTEMPTS = 250
ATTEMPT_WINDOW_S = 300.0
# The longest combined-stream URL we send. Servers and proxies refuse long request lines
# with "414 Request-URI Too Long" (8 KB is a common default, nginx and Python's websockets
# among them); 4,000 characters stays well below, about 270 streams of 15 characters.
MAX_URL_CHARS = 4000
# The largest frame accepted. A Binance trade frame is about 250 bytes and no market-data
# frame we subscribe to comes near 64 KB; 1 MiB leaves room for any future field while a
# hostile or broken server cannot make us buffer more than that per frame.
MAX_FRAME_BYTES = 1 << 20


# Combined streams: spot serves them at /stream, USD-M futures at /market/stream since
# 2026-04-23 (its legacy /stream accepts the connection and sends nothing).
SPOT_ROUTE = "/stream"
USDM_ROUTE = "/market/stream"


def stream_url(base_url: str, streams: Sequence[str], route: str = SPOT_ROUTE) -> str:
    """The combined-stream URL for ``streams`` on the host ``base_url``, each name
    percent-encoded.

    Binance puts a symbol's own characters into its stream name, and lists symbols with
    non-ASCII characters since 2025 (its spot API CHANGELOG, 2025-12-15, "Clarification
    Regarding UTF-8 Encoding": a stream request naming such a symbol gets its events in
    UTF-8). A URL is ASCII (RFC 3986): the name's UTF-8 bytes go percent-encoded, as its
    REST API expects of every parameter; ``@`` and the ``/`` between names stay literal.

    :param base_url: the host base, e.g. ``wss://fstream.binance.com``.
    :param route: the market's combined-stream path (:data:`SPOT_ROUTE`, :data:`USDM_ROUTE`).
    """
    names = "/".join(urllib.parse.quote(name, safe="@") for name in streams)
    return f"{base_url.rstrip('/')}{route}?streams={names}"


def plan_connections(
    base_url: str,
    symbols: Sequence[str],
    *,
    route: str = SPOT_ROUTE,
    kinds: Sequence[str] = ("trade",),
    max_streams: int = MAX_STREAMS_PER_CONNECTION,
    max_url: int = MAX_URL_CHARS,
) -> list[list[str]]:
    """The symbols of each connection: at most ``max_streams`` streams (``kinds`` per
    symbol) and ``max_url`` characters.

    A symbol with non-ASCII characters gets a connection of its own: if a server refuses
    its name, only that connection is refused, not the other symbols'.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    streams = 0
    empty = len(stream_url(base_url, [], route))
    length = empty
    for symbol in symbols:
        if not symbol.isascii():
            groups.append([symbol])
            continue
        names = symbol_streams([symbol], kinds)
        extra = sum(len(urllib.parse.quote(n, safe="@")) + 1 for n in names) - (0 if current else 1)
        if current and (streams + len(names) > max_streams or length + extra > max_url):
            groups.append(current)
            current, length, streams = [], empty, 0
            extra -= 1
        current.append(symbol)
        length += extra
        streams += len(names)
    if current:
        groups.append(current)
    return groups


def trade_streams(symbols: Sequence[str]) -> list[str]:
    """The ``<symbol>@trade`` stream names of ``symbols``."""
    return [_trade_stream(s) for s in symbols]


def symbol_streams(symbols: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """The stream names ``<symbol>@<kind>`` of ``symbols``, e.g. kinds trade, markPrice."""
    return [f"{s.lower()}@{kind}" for s in symbols for kind in kinds]


def _trade_stream(symbol: str) -> str:
    return f"{symbol.lower()}@trade"


class AttemptLimiter:
    """A sliding-window bound on connection attempts, shared by all connections."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS, window: float = ATTEMPT_WINDOW_S):
        self.max_attempts = max_attempts
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def wait_turn(self, stop: threading.Event) -> bool:
        """Block until an attempt is allowed; False when ``stop`` was set meanwhile."""
        while not stop.is_set():
            with self._lock:
                now = time.monotonic()
                while self._times and now - self._times[0] > self.window:
                    self._times.popleft()
                if len(self._times) < self.max_attempts:
                    self._times.append(now)
                    return True
                wait = self.window - (now - self._times[0])
            log.warning("connection attempt limit reached; waiting %.0f s", wait)
            stop.wait(min(wait, 5.0))
        return False


class LiveWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket, reading in large chunks and sending politely.

    Reads: websocket-client asks the socket for each frame's header, length and payload
    separately, three system calls a message, each of which lets the writer thread take
    the GIL and makes this thread wait to get it back. Reading up to ``READ_SIZE`` bytes
    at once and serving those asks from memory takes one call per hundreds of messages.

    Sends: Binance disconnects (and eventually bans) a client sending more than 5
    messages a second. Pings are answered while receiving, and the watchdog pings a quiet
    socket; a ping or pong over the budget of ``MAX_OUTGOING_PER_S`` is left out (the
    server waits a minute for a pong, and the next ping is answered).
    """

    READ_SIZE = 1 << 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # websocket.WebSocket's
        super().__init__(*args, **kwargs)
        self._sent: collections.deque[float] = collections.deque(maxlen=MAX_OUTGOING_PER_S)
        self._budget_lock = threading.Lock()
        self._chunk = b""
        self._offset = 0
        # Refuse an oversized frame from its header, before its payload is buffered.
        buffer = self.frame_buffer
        read_length = buffer.recv_length

        def recv_length() -> None:
            read_length()
            if buffer.length is not None and buffer.length > MAX_FRAME_BYTES:
                raise FrameTooLarge(buffer.length)

        buffer.recv_length = recv_length  # type: ignore[method-assign]

    def _recv(self, bufsize: int) -> bytes:
        offset = self._offset
        chunk = self._chunk
        if offset >= len(chunk):
            chunk = super()._recv(self.READ_SIZE)  # raises when the peer has closed
            offset = 0
            self._chunk = chunk
        piece = chunk[offset : offset + bufsize]
        self._offset = offset + len(piece)
        return piece

    def pong(self, payload: str | bytes = "") -> None:
        if self._may_send("pong"):
            super().pong(payload)

    def ping(self, payload: str | bytes = "") -> None:
        if self._may_send("ping"):
            super().ping(payload)

    def _may_send(self, what: str) -> bool:
        with self._budget_lock:
            now = time.monotonic()
            if len(self._sent) == MAX_OUTGOING_PER_S and now - self._sent[0] < 1.0:
                log.debug("%s skipped: outgoing message budget spent", what)
                return False
            self._sent.append(now)
            return True


class FrameTooLarge(websocket.WebSocketException):
    """The server announced a frame larger than :data:`MAX_FRAME_BYTES`."""

    def __init__(self, length: int) -> None:
        super().__init__(f"frame of {length} bytes refused (at most {MAX_FRAME_BYTES})")
        self.length = length


class HandshakeTimeout(websocket.WebSocketException):
    """TCP, TLS and the WebSocket handshake together took longer than allowed."""


class StreamConnection(threading.Thread):
    """One combined-stream connection, reconnected until ``stop`` is set.

    :param url: full URL, ``<host><route>?streams=a@trade/b@trade``.
    :param on_message: called with each text frame's bytes, in the receive thread; it
        raises :class:`ServerShutdown` to have the connection replaced at once.
    :param on_connect: called after each successful connect, before the first frame.
    :param on_disconnect: called after each connection ends.
    :param stop: set to stop for good.
    :param limiter: shared bound on connection attempts.
    :param connect_timeout: seconds allowed for TCP, TLS and the WebSocket handshake.
    :param backoff: the reconnect delays.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        on_message: Callable[[bytes], None],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None],
        stop: threading.Event,
        limiter: AttemptLimiter,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.url = _ascii_url(url)
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.stop = stop
        self.limiter = limiter
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.ws: websocket.WebSocket | None = None
        self.connected_at: float | None = None  # monotonic, None while down
        self.last_rx: float = 0.0  # monotonic time of the last frame of any kind
        self.connections = 0
        self.frames = 0
        self._reconnect_now = False
        self._abort_reason: str | None = None
        self._dialing: socket.socket | None = None  # the raw socket while connecting
        self.crashes = 0  # surprises the loop survived (each logged with its traceback)

    # -- called from other threads ---------------------------------------------------

    def abort(self, reason: str, *, reconnect_now: bool = False) -> None:
        """Close the socket from outside; the receive loop ends and the thread reconnects."""
        ws = self.ws
        sock = ws.sock if ws is not None else self._dialing
        if sock is None:
            return
        self._abort_reason = reason
        self._reconnect_now = reconnect_now
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)

    def ping(self) -> None:
        """Ping the server (watchdog thread): a live server answers, a dead one does not."""
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):  # a broken socket: the receive loop sees it
                ws.ping(b"watchdog")

    # -- the thread --------------------------------------------------------------------

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self._attempt():
                    break
            except Exception:  # a bug anywhere in the loop: the thread must not die of it
                self.crashes += 1
                log.exception(
                    "%s: unexpected error in the connection loop; reconnecting", self.name
                )
                self.stop.wait(1.0)
        log.info("%s: stopped after %d connection(s)", self.name, self.connections)

    def _attempt(self) -> bool:
        """One connection attempt, its life and the wait after it; False: stop."""
        if not self.limiter.wait_turn(self.stop):
            return False
        good = False
        try:
            ws = self._connect()
        except Exception as exc:  # DNS, refused, TLS, handshake: all mean "try later"
            if self.stop.is_set():
                return False
            log.warning("%s: connect failed: %s", self.name, _describe(exc))
        else:
            good = self._serve(ws)
        if self.stop.is_set():
            return False
        if good:
            self.backoff.reset()
        if self._reconnect_now:
            self._reconnect_now = False
            return True
        delay = self.backoff.next_delay()
        log.info("%s: reconnecting in %.2f s", self.name, delay)
        self.stop.wait(delay)
        return True

    def _connect(self) -> websocket.WebSocket:
        """TCP, TLS and the handshake, all within ``connect_timeout`` seconds in total.

        websocket-client's own timeout bounds each read, so a server answering one byte
        a second would hold the handshake for ever; a timer shuts the raw socket down at
        the deadline instead (``stop`` does the same through :meth:`abort`).
        """
        parts = urllib.parse.urlsplit(self.url)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        expired = threading.Event()
        started = time.monotonic()
        raw = socket.create_connection((host, port), timeout=self.connect_timeout)
        self._dialing = raw
        if self.stop.is_set():
            self._dialing = None
            raw.close()
            raise websocket.WebSocketException("stopping")

        def expire() -> None:
            expired.set()
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)

        left = self.connect_timeout - (time.monotonic() - started)
        timer = threading.Timer(max(0.0, left), expire)
        timer.daemon = True
        timer.start()
        try:
            sock: socket.socket = raw
            if secure:
                sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            return websocket.create_connection(
                self.url,
                timeout=self.connect_timeout,
                class_=LiveWebSocket,
                socket=sock,
                skip_utf8_validation=True,
                enable_multithread=True,  # the watchdog pings from its thread
            )
        except Exception as exc:
            raw.close()
            if expired.is_set():
                raise HandshakeTimeout(
                    f"no complete handshake within {self.connect_timeout:g} s ({_describe(exc)})"
                ) from exc
            raise
        finally:
            timer.cancel()
            self._dialing = None

    def _serve(self, ws: websocket.WebSocket) -> bool:
        """Receive until the connection ends; True when it delivered data (a good one)."""
        ws.settimeout(None)  # blocking: the watchdog and stop() unblock it
        self.ws = ws
        if self.stop.is_set():  # the stop may have come before self.ws was set
            self.ws = None
            self._close(ws)
            return False
        self.connections += 1
        self.last_rx = time.monotonic()
        self.connected_at = self.last_rx
        self._abort_reason = None
        frames_before = self.frames
        log.info("%s: connected (%s)", self.name, _short(self.url))
        try:
            self.on_connect()
            self._receive(ws)
        except ServerShutdown:
            log.warning("%s: serverShutdown received; reconnecting now", self.name)
            self._reconnect_now = True
        except Exception as exc:  # lost, aborted, or a bug in a handler: reconnect, log
            if not isinstance(exc, websocket.WebSocketException | OSError):
                log.exception("%s: unexpected error; reconnecting", self.name)
            elif self.stop.is_set():
                log.info("%s: closed (stopping)", self.name)
            elif self._abort_reason:
                log.warning("%s: closed (%s)", self.name, self._abort_reason)
            else:
                log.warning("%s: connection lost: %s", self.name, _describe(exc))
        finally:
            self.connected_at = None
            self.ws = None
            self._close(ws)
            self.on_disconnect()
        return self.frames > frames_before

    def _receive(self, ws: websocket.WebSocket) -> None:
        on_message = self.on_message
        recv = ws.recv_data_frame
        monotonic = time.monotonic
        text, binary, close = ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CLOSE
        while True:
            opcode, frame = recv(True)
            self.last_rx = monotonic()
            if opcode in (text, binary):
                self.frames += 1
                on_message(frame.data)
            elif opcode == close:
                code, reason = _close_status(frame.data)
                log.warning("%s: server closed the connection: %s %s", self.name, code, reason)
                return
            # pings were answered inside recv; pongs need nothing

    def _close(self, ws: websocket.WebSocket) -> None:
        # close() skips a socket whose close frame was already answered inside recv, so
        # shut it down as well: the server waits for our end of the TCP connection.
        with contextlib.suppress(Exception):
            ws.close(timeout=0.2)
        with contextlib.suppress(Exception):
            ws.shutdown()


class ServerShutdown(Exception):
    """Raised by ``on_message`` when the server announces it is going away."""


class Watchdog(threading.Thread):
    """Closes dead connections and recycles old ones before Binance's 24-hour limit.

    A socket without any frame for half of ``silent_after`` is pinged: a quiet market on
    a live server still answers with a pong. Still nothing at ``silent_after``: the
    socket is dead, and it is closed so the connection's thread reconnects.

    :param connections: the connections to watch.
    :param silent_after: seconds without any frame (data, ping, pong) before closing.
    :param max_age: seconds after which a connection is closed and opened afresh.
    """

    def __init__(
        self,
        connections: list[StreamConnection],
        stop: threading.Event,
        *,
        silent_after: float,
        max_age: float,
    ) -> None:
        super().__init__(name="ws-watchdog", daemon=True)
        self.connections = connections
        self.stop = stop
        self.silent_after = silent_after
        self.max_age = max_age

    def run(self) -> None:
        tick = max(0.05, min(1.0, self.silent_after / 8))
        pinged: dict[int, float] = {}  # connection -> the last_rx it was pinged for
        while not self.stop.wait(tick):
            now = time.monotonic()
            for conn in self.connections:
                started = conn.connected_at
                if started is None:
                    continue
                last_rx = conn.last_rx
                silent = now - last_rx
                if silent > self.silent_after:
                    log.warning(
                        "%s: silent for %.1f s (watchdog %.1f s); reconnecting",
                        conn.name,
                        silent,
                        self.silent_after,
                    )
                    conn.abort(f"watchdog: silent {silent:.1f} s")
                elif silent > self.silent_after / 2 and pinged.get(id(conn)) != last_rx:
                    pinged[id(conn)] = last_rx
                    log.debug("%s: quiet for %.1f s; pinging", conn.name, silent)
                    conn.ping()
                elif now - started > self.max_age:
                    log.info(
                        "%s: %.0f s old; reconnecting before the 24 h limit",
                        conn.name,
                        now - started,
                    )
                    conn.abort("proactive reconnect", reconnect_now=True)


def _close_status(data: bytes) -> tuple[int | None, str]:
    if len(data) >= 2:
        return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")
    return None, ""


def _ascii_url(url: str) -> str:
    """``url`` with every non-ASCII character percent-encoded as UTF-8 (RFC 3986)."""
    return url if url.isascii() else urllib.parse.quote(url, safe=":/?=&@%+,;~")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _short(url: str) -> str:
    return url if len(url) < 120 else url[:117] + "..."
