"""Stops, crashes and restarts: the stored tape ends complete every time.

The daemon is the real one, as a subprocess; ``kill -9`` gives it no chance to flush.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time

import pytest

from tests.helpers.daemon import (
    assert_tape_complete,
    query,
    start_with_tape,
    stored,
    wait_complete,
    wait_for,
)

pytestmark = pytest.mark.daemon


def test_kill9_under_load_then_restart_ends_complete(server, daemon_factory):
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.start_stream(4000)
    wait_for(lambda: len(stored(daemon.db, "BTCUSDT")) > 2000, 15, "trades under load")
    daemon.kill9()
    time.sleep(0.5)  # the stream goes on while the daemon is dead
    again = daemon_factory(server).start()
    server.wait_clients(1)
    time.sleep(0.5)
    server.stop_stream()
    server.publish("BTCUSDT", 10)
    server.publish("ETHUSDT", 10)
    wait_complete(again.db, server, timeout=30)
    assert again.stop() == 0
    assert_tape_complete(again.db, server)
    assert "catch-up from id" in again.log


def test_holes_inside_the_stored_range_are_found_and_filled_on_start(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 3000, 500)
    daemon.kill9()
    # Lose two ranges of BTCUSDT and one of ETHUSDT behind the daemon's back.
    tape = server.tapes["BTCUSDT"]
    holes = [(tape[10].id, tape[1209].id), (tape[2000].id, tape[2000].id)]
    eth_hole = (server.tapes["ETHUSDT"][5].id, server.tapes["ETHUSDT"][7].id)
    conn = sqlite3.connect(daemon.db)
    with conn:
        for first, last in holes:
            conn.execute(
                "DELETE FROM trades WHERE symbol = 'BTCUSDT' AND trade_id BETWEEN ? AND ?",
                (first, last),
            )
        conn.execute(
            "DELETE FROM trades WHERE symbol = 'ETHUSDT' AND trade_id BETWEEN ? AND ?", eth_hole
        )
    conn.close()
    server.publish("BTCUSDT", 700, live=False)  # and some trades while it was down
    again = daemon_factory(server).start()
    wait_complete(again.db, server)
    assert again.stop() == 0
    assert_tape_complete(again.db, server)
    found = query(
        again.db,
        "SELECT symbol, first_missing_id, last_missing_id, status, trades_recovered "
        "FROM gaps WHERE reason = 'stored-hole' ORDER BY symbol, first_missing_id",
    )
    assert found == [
        ("BTCUSDT", holes[0][0], holes[0][1], "filled", 1200),
        ("BTCUSDT", holes[1][0], holes[1][1], "filled", 1),
        ("ETHUSDT", eth_hole[0], eth_hole[1], "filled", 3),
    ]


def test_sigterm_under_load_loses_nothing_and_exits_fast(server, daemon_factory):
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.start_stream(8000)
    wait_for(lambda: len(stored(daemon.db, "BTCUSDT")) > 5000, 20, "trades under load")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    took = time.monotonic() - started
    server.stop_stream()
    assert took < 5, f"took {took:.1f} s to stop"
    found = re.search(r"(\d+) trades received on the socket", daemon.log)
    assert found is not None, "the daemon logs what it received"
    received = int(found.group(1))
    stored_now = {s: stored(daemon.db, s) for s in server.symbols}
    # Everything received was stored, and what was stored is the tape without holes.
    assert sum(len(rows) for rows in stored_now.values()) == received
    for symbol, rows in stored_now.items():
        assert rows == server.expected(symbol)[: len(rows)]
    # A restart catches up on what was published after the stop.
    again = daemon_factory(server).start()
    wait_complete(again.db, server)
    assert again.stop() == 0
    assert_tape_complete(again.db, server)


def test_max_catchup_bounds_the_fetch_and_records_the_rest(server, daemon_factory):
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    assert daemon.stop() == 0
    owed = server.publish("BTCUSDT", 5000, live=False)  # a long outage
    bounded = daemon_factory(server, "--max-catchup", "1500").start()
    server.wait_clients(1)
    wait_for(
        lambda: query(bounded.db, "SELECT count(*) FROM gaps WHERE status = 'open'") == [(1,)],
        15,
        "the open gap",
    )
    server.publish("BTCUSDT", 50)
    server.publish("ETHUSDT", 50)
    wait_for(lambda: len(stored(bounded.db, "BTCUSDT")) == 100 + 1500 + 50, 15, "bounded tape")
    assert bounded.stop() == 0
    gap = query(
        bounded.db,
        "SELECT first_missing_id, last_missing_id, reason, note FROM gaps WHERE status = 'open'",
    )
    assert gap[0][:3] == (owed[1500].id, owed[-1].id, "catch-up")
    assert "--max-catchup=1500" in gap[0][3]
    got = stored(bounded.db, "BTCUSDT")
    want = server.expected("BTCUSDT")
    assert got == want[:1600] + want[-50:]  # exactly the bound, then live; nothing else
    # The next start fills the open gap.
    again = daemon_factory(server).start()
    wait_complete(again.db, server)
    wait_for(
        lambda: query(again.db, "SELECT count(*) FROM gaps WHERE status = 'open'") == [(0,)],
        10,
        "the gap closed",
    )
    assert again.stop() == 0
    assert_tape_complete(again.db, server)
