"""REST retries 5xx answers and network errors until the gap is filled, trade by trade.

A range the socket never sent is filled over REST while the server answers 500, 502 and
503, cuts the connection, leaves a request unanswered past the client's timeout, or is not
listening at all; the daemon says it retries, and the stored tape ends complete.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.helpers.binance_server import HTML_200, RESET, STALL, BinanceServer
from tests.helpers.daemon import (
    assert_tape_complete,
    query,
    start_with_tape,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon


def open_gap(server: BinanceServer, withheld: int) -> list[int]:
    """Withhold ``withheld`` BTCUSDT trades from the socket, then send one that jumps them."""
    ids = [t.id for t in server.publish("BTCUSDT", withheld, live=False)]
    server.publish("BTCUSDT", 10)
    server.publish("ETHUSDT", 10)
    return ids


def assert_gap_filled(db, ids: list[int]) -> None:
    assert query(
        db, "SELECT first_missing_id, last_missing_id, reason, status, trades_recovered FROM gaps"
    ) == [(ids[0], ids[-1], "live-jump", "filled", len(ids))]


def test_5xx_answers_are_retried_until_the_gap_is_filled(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.rest_failures = [500, 502, 503]
    ids = open_gap(server, 1500)
    wait_complete(daemon.db, server, timeout=30)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert_gap_filled(daemon.db, ids)
    assert server.rest_failures == []
    for status in (500, 502, 503):
        assert f"GET historicalTrades: HTTP {status}; retrying in" in daemon.log
    assert server.connections_total == 1  # REST trouble never touched the live stream


def test_a_reset_and_a_timed_out_request_are_retried(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 100, 100)  # --connect-timeout 2
    server.stall_s = 4.0
    server.rest_failures = [RESET, STALL]
    ids = open_gap(server, 1500)
    wait_complete(daemon.db, server, timeout=30)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert_gap_filled(daemon.db, ids)
    failures = re.findall(r"GET historicalTrades failed \((.*)\); retrying in", daemon.log)
    assert len(failures) == 2, failures
    assert re.search(r"Connection aborted|reset|RemoteDisconnected", failures[0]), failures[0]
    # The stall is seen either by the socket's read timeout or, when the headers came in
    # time, by the whole-answer deadline ("no complete answer within 2 s"): both time out.
    assert re.search(r"[Tt]imed? ?out|no complete answer within 2 s", failures[1]), failures[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_retried_until_rest_listens(server, daemon_factory):
    port = free_port()
    daemon = start_with_tape(
        daemon_factory, server, 100, 100, "--rest-url", f"http://127.0.0.1:{port}"
    )
    ids = open_gap(server, 1500)
    wait_for(
        lambda: re.search(r"GET historicalTrades failed \(.*refused", daemon.log) is not None,
        what="a refused request to be retried",
    )
    # REST comes up on that port, serving the same tapes as the socket's server.
    rest = BinanceServer(server.symbols, port=port)
    rest.tapes, rest.next_id = server.tapes, server.next_id
    rest.start()
    try:
        wait_complete(daemon.db, server, timeout=30)
    finally:
        rest.stop()
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert_gap_filled(daemon.db, ids)
    assert {endpoint for endpoint, _ in rest.rest_calls} == {"/historicalTrades"}


def test_a_cdn_html_page_with_status_200_is_retried_not_stored(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.rest_failures = [HTML_200]
    ids = open_gap(server, 2130)
    wait_complete(daemon.db, server, timeout=30)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert_gap_filled(daemon.db, ids)
    assert re.search(
        r"GET historicalTrades failed \(HTTP 200 with a body that is not JSON \(text/html",
        daemon.log,
    )
