"""One connection's loop against the local server and hostile raw sockets.

A connection thread that meets a surprise keeps reconnecting; a handshake dribbled a byte
a second ends at the connect deadline with a log line; a frame over the size limit is
refused and the connection made anew; a non-ASCII symbol's stream name is percent-encoded
and its trades arrive beside the others'; many symbols are split over connections short
enough for the server to accept.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from websockets.sync.server import ServerConnection, serve

from pairs_monitor.clock import Backoff
from pairs_monitor.ingest.binance.ws import (
    MAX_FRAME_BYTES,
    MAX_URL_CHARS,
    AttemptLimiter,
    StreamConnection,
    plan_connections,
    stream_url,
    trade_streams,
)
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import Daemon, assert_tape_complete, wait_complete


class Received:
    """What a connection delivered: the symbol of each trade frame."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self.lock:
            self.symbols.append(orjson.loads(data)["data"]["s"])


def make_connection(
    url: str, stop: threading.Event, received: Received, **kwargs: object
) -> StreamConnection:
    return StreamConnection(
        url,
        name="ws-test",
        on_message=received,
        on_connect=lambda: None,
        on_disconnect=lambda: None,
        stop=stop,
        limiter=AttemptLimiter(),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_thousand_and_more_failures_keep_the_delay_finite_and_capped() -> None:
    backoff = Backoff(0.5, 30.0)
    delays = [backoff.next_delay() for _ in range(10**6)]
    assert backoff.failures == 10**6
    assert all(15.0 <= d <= 30.0 for d in delays[10:])
    huge = Backoff(1e300, 1e308)
    delays = [huge.next_delay() for _ in range(5000)]
    assert all(0.5e308 <= d <= 1e308 for d in delays[30:])
    for base, cap in ((0.0, 1.0), (1.0, float("inf")), (float("nan"), 1.0), (1.0, -1.0)):
        with pytest.raises(ValueError, match="backoff needs"):
            Backoff(base, cap)
    assert all(0.05 <= Backoff(0.5, 0.1).next_delay() <= 0.1 for _ in range(100))


class FlakyBackoff(Backoff):
    """Raises on its second use, as a bug in the loop would."""

    def next_delay(self) -> float:
        if self.failures == 1:
            self.failures += 1
            raise OverflowError("int too large to convert to float")
        return super().next_delay()


@pytest.mark.soak
def test_a_surprise_in_the_loop_does_not_kill_the_connection_thread(stop, caplog) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every attempt fails
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = make_connection(
        f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade",
        stop,
        Received(),
        backoff=FlakyBackoff(0.01, 0.02),
    )
    with caplog.at_level(logging.INFO, logger="ingest.binance.ws"):
        conn.start()
        wait_until(lambda: conn.backoff.failures >= 5, what="attempts after the surprise")
    assert conn.is_alive()
    assert conn.crashes == 1
    assert "unexpected error in the connection loop; reconnecting" in caplog.text
    assert "OverflowError: int too large" in caplog.text


def dribbling_server(stop: threading.Event) -> tuple[int, list[socket.socket]]:
    """A TCP server that answers any handshake one byte a second, for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(client)
            threading.Thread(target=dribble, args=(client,), daemon=True).start()
        listener.close()

    def dribble(client: socket.socket) -> None:
        answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        for byte in answer:
            if stop.wait(1.0):
                break
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break
        client.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], accepted


@pytest.mark.soak
def test_a_dribbled_handshake_ends_at_the_connect_deadline(stop, caplog) -> None:
    port, accepted = dribbling_server(stop)
    conn = make_connection(
        f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade",
        stop,
        Received(),
        connect_timeout=1.0,
        backoff=Backoff(0.05, 0.1),
    )
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="ingest.binance.ws"):
        conn.start()
        wait_until(lambda: len(accepted) >= 3, timeout=8, what="three connection attempts")
    assert time.monotonic() - started < 5.0
    assert "connect failed: HandshakeTimeout: no complete handshake within 1 s" in caplog.text
    stop.set()
    conn.join(3)
    assert not conn.is_alive()


def test_a_stop_ends_a_handshake_in_progress_promptly(stop) -> None:
    port, accepted = dribbling_server(stop)
    conn = make_connection(
        f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade",
        stop,
        Received(),
        connect_timeout=60.0,
    )
    conn.start()
    wait_until(lambda: accepted, what="the connection")
    time.sleep(0.3)
    stopped = time.monotonic()
    stop.set()
    conn.abort("stopping")
    conn.join(5)
    assert not conn.is_alive()
    assert time.monotonic() - stopped < 2.0


def test_a_frame_over_the_limit_is_refused_and_the_connection_made_anew(stop, caplog) -> None:
    server = BinanceServer(["BTCUSDT"]).start()
    try:
        received = Received()
        conn = make_connection(
            stream_url(server.ws_url, ["btcusdt@trade"]),
            stop,
            received,
            backoff=Backoff(0.05, 0.1),
        )
        with caplog.at_level(logging.INFO, logger="ingest.binance.ws"):
            conn.start()
            server.wait_clients(1)
            server.send_raw("x" * (MAX_FRAME_BYTES + 1))
            server.wait_clients(1, total=2)
            server.publish("BTCUSDT", 3)
            wait_until(lambda: len(received.symbols) == 3, what="trades after the reconnect")
        assert f"frame of {MAX_FRAME_BYTES + 1} bytes refused" in caplog.text
        assert conn.frames == 3  # the big frame was never handed on
    finally:
        stop.set()
        server.stop()


def test_a_non_ascii_symbol_is_percent_encoded_and_streams_with_the_others(stop) -> None:
    symbols = ["BTCUSDT", "币安人生USDT"]
    server = BinanceServer(symbols).start()
    try:
        url = f"{server.ws_url}/stream?streams=btcusdt@trade/币安人生usdt@trade"
        received = Received()
        conn = make_connection(url, stop, received)
        assert conn.url.isascii()
        conn.start()
        server.wait_clients(1)
        assert server.clients[0].symbols == set(symbols)
        for symbol in symbols:
            server.publish(symbol, 2)
        wait_until(lambda: len(received.symbols) == 4, what="four trades")
        assert sorted(received.symbols) == sorted(symbols * 2)
    finally:
        stop.set()
        server.stop()


def test_stream_url_percent_encodes_utf8_and_keeps_separators() -> None:
    url = stream_url("wss://stream.binance.com:9443/", ["btcusdt@trade", "币安usdt@trade"])
    assert url == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/%E5%B8%81%E5%AE%89usdt@trade"
    )
    query = urllib.parse.urlsplit(url).query
    assert urllib.parse.parse_qs(query)["streams"] == ["btcusdt@trade/币安usdt@trade"]


def test_plan_splits_by_url_length_and_stream_count_and_isolates_non_ascii() -> None:
    base = "wss://stream.binance.com:9443"
    symbols = [f"S{i:05d}USDT" for i in range(5000)] + ["币安USDT"]
    groups = plan_connections(base, symbols)
    assert [s for g in groups for s in g if s.isascii()] == symbols[:-1]
    assert ["币安USDT"] in groups
    for group in groups:
        url = stream_url(base, trade_streams(group))
        assert len(url) <= MAX_URL_CHARS
        assert len(group) <= 1024
    assert len(groups) <= 5000 * 17 // (MAX_URL_CHARS - 100) + 2  # filled, not one each
    short = plan_connections(base, [f"A{i}" for i in range(3000)], max_url=10**6)
    assert [len(g) for g in short] == [1024, 1024, 952]


def test_5000_symbols_connect_where_one_long_url_gets_414(stop, caplog) -> None:
    symbols = [f"S{i:05d}USDT" for i in range(5000)]
    server = BinanceServer(symbols).start()
    try:
        long_url = stream_url(server.ws_url, trade_streams(symbols[:1024]))
        refused = make_connection(long_url, stop, Received(), backoff=Backoff(5, 10))
        with caplog.at_level(logging.INFO, logger="ingest.binance.ws"):
            refused.start()
            wait_until(lambda: "414" in caplog.text, what="the 414")
        groups = plan_connections(server.ws_url, symbols)
        conns = [
            make_connection(stream_url(server.ws_url, trade_streams(g)), stop, Received())
            for g in groups
        ]
        for conn in conns:
            conn.start()
        server.wait_clients(len(groups))
        assert set().union(*(c.symbols for c in server.clients)) == set(symbols)
    finally:
        stop.set()
        server.stop()


@pytest.mark.daemon
def test_the_daemon_stores_a_non_ascii_symbol_beside_btcusdt(tmp_path: Path) -> None:
    server = BinanceServer(["BTCUSDT", "币安人生USDT"]).start()
    try:
        daemon = Daemon(tmp_path / "ticks.db", server, tmp_path / "ingest.log", []).start()
        server.wait_clients(2)  # the non-ASCII symbol rides on a connection of its own
        server.publish("BTCUSDT", 5)
        server.publish("币安人生USDT", 5)
        wait_complete(daemon.db, server)
        assert daemon.stop() == 0
        assert_tape_complete(daemon.db, server)
        assert "%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9Fusdt@trade" in daemon.log
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_wss_connection_verifies_the_certificate_and_receives(
    tmp_path: Path, stop: threading.Event, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The connect does its own TCP and TLS (to bound them): certificates are still
    checked against the trusted ones, and frames arrive over TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    frame = orjson.dumps({"stream": "btcusdt@trade", "data": {"s": "BTCUSDT"}})

    def handle(connection: ServerConnection) -> None:
        connection.send(frame)
        with contextlib.suppress(Exception):
            connection.recv(timeout=10)

    with serve(handle, "127.0.0.1", 0, ssl=context) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"wss://localhost:{server.socket.getsockname()[1]}/stream?streams=btcusdt@trade"
        untrusted = make_connection(url, stop, Received(), backoff=Backoff(5, 10))
        with caplog.at_level(logging.WARNING, logger="ingest.binance.ws"):
            untrusted.start()
            wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, what="a refusal")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        received = Received()
        trusted = make_connection(url, stop, received)
        trusted.start()
        wait_until(lambda: received.symbols == ["BTCUSDT"], what="the frame over TLS")
        stop.set()
        trusted.abort("test over")
        trusted.join(5)
        untrusted.join(5)
        server.shutdown()
