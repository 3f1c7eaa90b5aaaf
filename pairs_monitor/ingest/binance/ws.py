"""The WebSocket side of the live Binance source: one connection and its reconnect loop.

:class:`StreamConnection` is a thread that owns one combined-stream connection (up to
1024 streams) and reconnects it for ever, until told to stop:

- exponential backoff with full jitter between attempts, capped, reset after a good
  connection (one that delivered data); no wait at all after ``serverShutdown``;
- a process-wide bound on connection attempts (Binance allows 300 per 5 minutes per IP);
- pings are answered while receiving, at most ``MAX_OUTGOING_PER_S`` frames a second,
  as Binance allows 5;
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
a ``poll`` per read), each read takes up to 64 KB (hundreds of trade frames when they
wait), :class:`FrameDecoder` cuts the frames out of it, and each message goes to
``on_message`` as bytes (no decode, no UTF-8 check: orjson rejects invalid text anyway).
websocket-client does the handshake, the sending and the closing. Stopping or the
watchdog unblock the loop by shutting the socket down from another thread.
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
# Bytes asked of the socket at once: hundreds of trade frames when they are waiting.
READ_SIZE = 1 << 16


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

    Reads: the receive loop takes whatever the socket holds, up to :data:`READ_SIZE`
    bytes, with :meth:`read_chunk` and cuts the frames out itself (:class:`FrameDecoder`).
    websocket-client's own frame reading, still used when closing, asks the socket for
    each frame's header, length and payload separately, three system calls a message:
    :meth:`_recv` serves those asks from one large read as well, and an oversized frame is
    refused from its header.

    Sends: Binance disconnects (and eventually bans) a client sending more than 5
    messages a second. Pings are answered while receiving, and the watchdog pings a quiet
    socket; a ping or pong over the budget of ``MAX_OUTGOING_PER_S`` is left out (the
    server waits a minute for a pong, and the next ping is answered).
    """

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

    def read_chunk(self) -> bytes:
        """What the socket holds, up to :data:`READ_SIZE` bytes; waits for at least one.

        :raises websocket.WebSocketConnectionClosedException: the server has closed.
        """
        return super()._recv(READ_SIZE)

    def _recv(self, bufsize: int) -> bytes:
        offset = self._offset
        chunk = self._chunk
        if offset >= len(chunk):
            chunk = super()._recv(READ_SIZE)  # raises when the peer has closed
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


class FrameDecoder:
    """Server-to-client WebSocket frames (RFC 6455) cut out of the bytes a socket delivers.

    The receive loop reads up to ``READ_SIZE`` bytes at once and hands them to :meth:`feed`,
    which returns every message they complete. websocket-client's own frame reading costs
    a dozen Python calls and an ``ABNF`` object per frame (header, length and payload read
    one after the other): the receive thread spent 9.1 µs of CPU a trade with it, 3.8 µs
    with this (docs/benchmarks.md), which is why the live feed decodes frames itself and
    leaves websocket-client the handshake, the sending and the closing.

    Refused, as the RFC asks of a client (:class:`websocket.WebSocketProtocolException`, the
    connection is made anew): reserved bits set (no extension is negotiated), a masked
    frame, an unknown opcode, a fragmented or over-long control frame, a continuation
    without its start and a new message inside a fragmented one. A frame or fragmented
    message over :data:`MAX_FRAME_BYTES` is refused from its header
    (:class:`FrameTooLarge`), before its payload is buffered.
    """

    def __init__(self) -> None:
        self._rest = b""  # the start of a frame whose end has not arrived yet
        self._fragments: list[bytes] | None = None  # a fragmented message being gathered
        self._fragments_opcode = 0
        self._fragments_size = 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """The messages and control frames ``chunk`` completes, as ``(opcode, payload)``;
        a fragmented message comes whole, under its first frame's opcode."""
        data = self._rest + chunk if self._rest else chunk
        end = len(data)
        pos = 0
        messages: list[tuple[int, bytes]] = []
        append = messages.append
        while end - pos >= 2:
            first = data[pos]
            length = data[pos + 1]
            if length & 0x80 or first & 0x70:
                raise websocket.WebSocketProtocolException(
                    "masked frame from the server" if length & 0x80 else "reserved bits set"
                )
            if length < 126:
                start = pos + 2
            elif length == 126:
                start = pos + 4
                if start > end:
                    break
                length = data[pos + 2] << 8 | data[pos + 3]
            else:
                start = pos + 10
                if start > end:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            if length > MAX_FRAME_BYTES:
                raise FrameTooLarge(length)
            stop = start + length
            if stop > end:
                break
            opcode = first & 0x0F
            if first & 0x80 and 0 < opcode < 3 and self._fragments is None:
                append((opcode, data[start:stop]))  # the common case: a whole text frame
            else:
                self._unusual(opcode, bool(first & 0x80), data[start:stop], append)
            pos = stop
        self._rest = data[pos:]
        return messages

    def _unusual(
        self, opcode: int, fin: bool, payload: bytes, append: Callable[[tuple[int, bytes]], None]
    ) -> None:
        """Control frames and fragments."""
        if opcode >= ABNF.OPCODE_CLOSE:
            if opcode > ABNF.OPCODE_PONG or not fin or len(payload) > 125:
                raise websocket.WebSocketProtocolException(
                    f"invalid control frame (opcode {opcode}, fin {fin}, {len(payload)} bytes)"
                )
            append((opcode, payload))
            return
        if opcode > ABNF.OPCODE_BINARY:
            raise websocket.WebSocketProtocolException(f"unknown opcode {opcode}")
        if (opcode == ABNF.OPCODE_CONT) != (self._fragments is not None):
            raise websocket.WebSocketProtocolException(
                "continuation frame without a start"
                if opcode == ABNF.OPCODE_CONT
                else "new message inside a fragmented one"
            )
        if self._fragments is None:
            self._fragments, self._fragments_opcode, self._fragments_size = [], opcode, 0
        self._fragments_size += len(payload)
        if self._fragments_size > MAX_FRAME_BYTES:
            raise FrameTooLarge(self._fragments_size)
        self._fragments.append(payload)
        if fin:
            append((self._fragments_opcode, b"".join(self._fragments)))
            self._fragments = None


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
        self.ws: LiveWebSocket | None = None
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

    def _connect(self) -> LiveWebSocket:
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
            ws = websocket.create_connection(
                self.url,
                timeout=self.connect_timeout,
                class_=LiveWebSocket,
                socket=sock,
                skip_utf8_validation=True,
                enable_multithread=True,  # the watchdog pings from its thread
            )
            assert isinstance(ws, LiveWebSocket)  # class_ above
            return ws
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

    def _serve(self, ws: LiveWebSocket) -> bool:
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

    def _receive(self, ws: LiveWebSocket) -> None:
        on_message = self.on_message
        read_chunk = ws.read_chunk
        messages_in = FrameDecoder().feed
        monotonic = time.monotonic
        close, ping = ABNF.OPCODE_CLOSE, ABNF.OPCODE_PING
        while True:
            messages = messages_in(read_chunk())
            if not messages:
                continue  # part of a frame: a server dribbling bytes is not alive for that
            self.last_rx = monotonic()
            for opcode, payload in messages:
                if opcode < close:  # text or binary
                    self.frames += 1
                    on_message(payload)
                elif opcode == close:
                    code, reason = _close_status(payload)
                    log.warning("%s: server closed the connection: %s %s", self.name, code, reason)
                    with contextlib.suppress(Exception):  # answered as websocket-client does
                        ws.send_close()
                    return
                elif opcode == ping:
                    ws.pong(payload)
                # pongs need nothing

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
