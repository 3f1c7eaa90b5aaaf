"""Every REST wait is bounded and stops with the daemon.

The client against the local server and a raw socket that dribbles its answer: a
Retry-After of 999999999 or 1e309 neither blocks nor crashes, a one-try call (the
start-up symbol check) never waits on a 429, a response sent one byte a second ends at
the request's deadline, a stop ends a request in flight, and a CDN's HTML page with status
200 is a transient failure that is retried, not data.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from pairs_monitor.ingest.binance.rest import (
    DEFAULT_RETRY_AFTER_S,
    MAX_BAN_S,
    NotJson,
    RestBanned,
    RestClient,
    Stopped,
    _retry_after,
)
from tests.helpers.binance_server import HTML_200, BinanceServer
from tests.helpers.daemon import wait_complete


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def local() -> Iterator[BinanceServer]:
    server = BinanceServer(["BTCUSDT"]).start()
    yield server
    server.stop()


def client(url: str, stop: threading.Event, timeout: float = 2.0) -> RestClient:
    return RestClient(url, "/api/v3", weight_per_min=6000, stop=stop, timeout=timeout)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("999999999", 999999999.0),
        ("1e309", DEFAULT_RETRY_AFTER_S),
        ("inf", DEFAULT_RETRY_AFTER_S),
        ("nan", DEFAULT_RETRY_AFTER_S),
        ("-5", DEFAULT_RETRY_AFTER_S),
        ("Wed, 21 Oct 2015 07:28:00 GMT", DEFAULT_RETRY_AFTER_S),
        (None, DEFAULT_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_parsed_robustly(header: str | None, seconds: float) -> None:
    assert _retry_after(header) == seconds


@pytest.mark.parametrize("retry_after", ["999999999", "1e309", "1"])
def test_a_429_on_the_start_up_check_is_not_waited_for(local, stop, retry_after) -> None:
    local.info_failures = [429]
    local.retry_after = retry_after
    started = time.monotonic()
    with pytest.raises(RestBanned) as caught:
        client(local.rest_url, stop).exchange_symbols(timeout=2.0)
    assert time.monotonic() - started < 1.5
    assert caught.value.status == 429
    expected = min(_retry_after(retry_after), MAX_BAN_S)
    assert caught.value.retry_after == expected
    assert client(local.rest_url, stop).exchange_symbols() == {"BTCUSDT": "TRADING"}


def test_a_long_retry_after_is_a_ban_told_to_the_caller(local, stop, caplog) -> None:
    local.rest_429 = 1
    local.retry_after = "999999999"
    rest = client(local.rest_url, stop)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(RestBanned) as caught:
        rest.historical_trades("binance-spot", "BTCUSDT", 1)
    assert time.monotonic() - started < 1.5
    assert caught.value.retry_after == MAX_BAN_S
    assert "HTTP 429 (banned), Retry-After '999999999': not waiting here" in caplog.text


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_retry_after_of_1e309_waits_the_default_and_stops_with_the_daemon(local, stop) -> None:
    local.rest_429 = 1
    local.retry_after = "1e309"
    rest = client(local.rest_url, stop)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            rest.historical_trades("binance-spot", "BTCUSDT", 1)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive()  # waiting the default 60 s, not crashed
    stop.set()
    worker.join(2)
    assert not worker.is_alive()
    assert [type(e) for e in outcome] == [Stopped]


def dribbling_http(stop: threading.Event) -> int:
    """A raw HTTP server answering any request one byte a second."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=dribble, args=(conn,), daemon=True).start()
        listener.close()

    def dribble(conn: socket.socket) -> None:
        body = b'{"symbols": []}'
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        with conn:
            for byte in answer:
                if stop.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


@pytest.mark.soak
def test_a_dribbled_answer_ends_at_the_request_deadline(stop) -> None:
    port = dribbling_http(stop)
    rest = client(f"http://127.0.0.1:{port}", stop, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(requests.Timeout, match=r"no complete answer within 1.5 s"):
        rest.exchange_symbols()
    assert 1.4 < time.monotonic() - started < 3.0


@pytest.mark.soak
def test_a_stop_ends_a_request_in_flight(stop) -> None:
    server_stop = threading.Event()
    port = dribbling_http(server_stop)
    rest = client(f"http://127.0.0.1:{port}", stop, timeout=60)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            rest.exchange_symbols()
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    time.sleep(1.2)
    stopped = time.monotonic()
    stop.set()
    worker.join(3)
    server_stop.set()
    assert not worker.is_alive()
    assert time.monotonic() - stopped < 1.0
    assert [type(e) for e in outcome] == [Stopped]


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_an_html_page_with_status_200_is_retried_not_data(local, stop, caplog) -> None:
    local.publish("BTCUSDT", 5, live=False)
    local.rest_failures = [HTML_200]
    rest = client(local.rest_url, stop)
    with caplog.at_level(logging.WARNING):
        rows = rest.historical_trades("binance-spot", "BTCUSDT", 1_000_000)
    assert [r[2] for r in rows] == list(range(1_000_000, 1_000_005))
    assert "HTTP 200 with a body that is not JSON (text/html" in caplog.text
    local.rest_failures = [HTML_200]
    with pytest.raises(NotJson):
        rest.get("historicalTrades", {"symbol": "BTCUSDT", "fromId": 1}, 25, attempts=1)


# -- the start-up check through the real daemon ------------------------------------------


@pytest.mark.daemon
@pytest.mark.parametrize("retry_after", ["999999999", "1e309"])
def test_start_up_goes_on_past_a_429_on_exchange_info(server, daemon_factory, retry_after):
    server.info_failures = [429]
    server.retry_after = retry_after
    started = time.monotonic()
    daemon = daemon_factory(server).start()
    server.wait_clients(1, timeout=10)
    assert time.monotonic() - started < 8.0
    server.publish("BTCUSDT", 5)
    server.publish("ETHUSDT", 5)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert "cannot check the symbols against exchangeInfo" in daemon.log
    assert f"Retry-After '{retry_after}': not waiting here" in daemon.log
    assert "Traceback" not in daemon.log


@pytest.mark.daemon
def test_a_dribbled_exchange_info_delays_start_up_by_the_timeout_only(server, daemon_factory):
    dribbler_stop = threading.Event()
    port = dribbling_http(dribbler_stop)
    try:
        daemon = daemon_factory(server).start("--rest-url", f"http://127.0.0.1:{port}")
        server.wait_clients(1, timeout=10)  # --connect-timeout 2 bounds the check
        assert daemon.stop(timeout=5) == 0
    finally:
        dribbler_stop.set()
    assert "no complete answer within 2 s" in daemon.log
    assert "Traceback" not in daemon.log
