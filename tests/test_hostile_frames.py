"""Values no exchange sends, on the socket and over REST, against the real daemon.

Each case compares the stored tape with what the local server published, trade by trade:
a refused value is never stored, never moves a symbol's frontier, never opens a gap, and
the tape around it is exact. ``ingest/validate.py`` holds the rules (docs/sources.md).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from pairs_monitor.ingest import validate
from pairs_monitor.ingest.binance.feed import MAX_UNCONFIRMED_JUMP
from tests.helpers.binance_server import make_trade
from tests.helpers.daemon import (
    assert_tape_complete,
    query,
    start_with_tape,
    stored,
    wait_complete,
    wait_for,
)

YEAR_2255_MS = 9_000_000_000_000


def frame(symbol: str, trade_id: Any, **fields: Any) -> str:
    """A trade frame of ``symbol`` with good values, except those given (wire names)."""
    good = make_trade(symbol, 1)
    data = {
        "e": "trade", "E": good.time_ms, "s": symbol, "t": trade_id, "p": good.price,
        "q": good.qty, "T": good.time_ms, "m": False, "M": True,
    }  # fmt: skip
    data.update(fields)
    return orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).decode()


# -- the rules, one value at a time --------------------------------------------------------


NOT_DECIMALS = ["1e309", "Infinity", "NaN", "1_000", " 1", "1 ", "-1", "0", "0.0", "1.",
                ".5", "+1", "1e3", "0x1F", "\u0661", "", "1" * 65, True, 1.5, 2, None]  # fmt: skip


@pytest.mark.parametrize("value", NOT_DECIMALS)
def test_decimal_refuses_what_binance_never_sends(value):
    with pytest.raises(validate.Refused) as info:
        validate.check_decimal(value, "p")
    assert info.value.refusal.field == "p"
    assert info.value.refusal.value == validate.shown(value)


@pytest.mark.parametrize("text", ["4.00000100", "0.00000001", "65000", "1" * 64])
def test_decimal_takes_binance_strings(text):
    assert validate.check_decimal(text, "p") == float(text)


@pytest.mark.parametrize("value", [0, -1, 2**62, 2**63, "7", 7.0, True, None])
def test_trade_id_bounds(value):
    with pytest.raises(validate.Refused):
        validate.check_id(value)


def test_trade_id_largest_accepted_is_below_2_62():
    assert validate.check_id(2**62 - 1) == 2**62 - 1
    assert validate.check_id(1) == 1


def test_trade_time_window_follows_the_injected_clock(monkeypatch):
    now = 1_767_225_600_000  # 2026-01-01
    monkeypatch.setattr(validate, "clock", lambda: now)
    assert validate.check_time_ms(now + validate.MAX_CLOCK_SKEW_MS) == now + 300_000
    with pytest.raises(validate.Refused, match="ahead of this machine's clock"):
        validate.check_time_ms(now + validate.MAX_CLOCK_SKEW_MS + 1)
    assert validate.check_time_ms(validate.EARLIEST_TRADE_MS) == validate.EARLIEST_TRADE_MS
    with pytest.raises(validate.Refused, match="before Binance opened"):
        validate.check_time_ms(validate.EARLIEST_TRADE_MS - 1)
    # the explicit argument wins over the module's clock
    assert validate.check_time_ms(now + 10**9, now_ms=now + 10**9) == now + 10**9
    with pytest.raises(validate.Refused):
        validate.check_time_us((now + validate.MAX_CLOCK_SKEW_MS + 1) * 1000)


def test_refusal_messages_are_truncated_and_rate_limited(caplog):
    class Counts:
        rejected = 0

    counts = Counts()
    rejects = validate.Rejects(validate.logging.getLogger("t"), "socket")
    refusal = validate.socket_trade("v", {"s": "X", "t": 1, "T": 1, "p": "9" * 500, "q": "1",
                                          "m": True})  # fmt: skip
    assert isinstance(refusal, validate.Refusal)
    with caplog.at_level("WARNING", logger="t"):
        for _ in range(20):
            rejects.report("BTCUSDT", refusal, counts)
    assert counts.rejected == 20 and rejects.total == 20
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert len(lines[0]) < 200
    assert lines[0].startswith("BTCUSDT: trade from socket refused, T=1: before Binance")


# -- the daemon ------------------------------------------------------------------------------


@pytest.mark.daemon
def test_hostile_socket_values_are_refused_and_the_tape_goes_on(server, daemon_factory):
    """inf, 1_000, true, id 0 and 2**63, year 2255 and int64-overflowing times: none stored.

    The old parser stored the first ones (inf bars, 1000.0 for "1_000", 1.0 for true) and
    wedged the writer on 2**63 (nothing of any symbol stored after it).
    """
    daemon = start_with_tape(daemon_factory, server, 50, 50)
    nxt = server.next_id["BTCUSDT"]  # each hostile frame takes the next real id
    hostile = [
        frame("BTCUSDT", nxt, p="1e309"),
        frame("BTCUSDT", nxt, p="Infinity"),
        frame("BTCUSDT", nxt, q="1_000"),
        frame("BTCUSDT", nxt, p=True),
        frame("BTCUSDT", nxt, q=2.5),
        frame("BTCUSDT", 0),
        frame("BTCUSDT", -3),
        frame("BTCUSDT", nxt, T=-1),
        frame("BTCUSDT", nxt, T=YEAR_2255_MS),
        frame("BTCUSDT", nxt, T=2**63 // 1000 + 1),  # microseconds overflow int64
        frame("BTCUSDT", 2**63),
        frame("BTCUSDT", 2**64 - 1),
    ]
    for text in hostile:
        server.send_raw(text)
    server.publish("BTCUSDT", 50)
    server.publish("ETHUSDT", 50)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT count(*) FROM gaps") == [(0,)]
    ((high, qty, low),) = query(daemon.db, "SELECT max(high), max(volume), min(low) FROM bars_1s")
    assert math.isfinite(high) and math.isfinite(qty) and low > 0
    log = daemon.log
    assert "BTCUSDT: trade from socket refused, p='1e309'" in log
    assert "BTCUSDT: trade from socket refused, T=9000000000000: more than 5 min ahead" in log
    assert "t=9223372036854775808: a trade id must be in [1, 2**62)" in log
    assert "T=9223372036854776: more than 5 min ahead" in log


@pytest.mark.daemon
def test_far_ahead_id_never_moves_the_frontier(server, daemon_factory):
    """One id 1e9 ahead: refused; 500 trades missed in a reconnect are still caught up.

    The old daemon stored it and moved the frontier past it: the catch-up after the
    reconnect started beyond it (the 500 stayed missing) and a gap of 1e9 ids stayed open,
    re-fetched at every start.
    """
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    far = server.next_id["BTCUSDT"] + 10**9
    bogus = make_trade("BTCUSDT", far)
    server.send_raw(frame("BTCUSDT", far, p=bogus.price, q=bogus.qty, T=bogus.time_ms))
    server.publish("BTCUSDT", 100)
    wait_complete(daemon.db, server)
    wait_for(lambda: any(e == "/trades" for e, _ in server.rest_calls), 10, "a confirmation")
    server.drop()
    server.publish("BTCUSDT", 500, live=False)
    server.wait_clients(1, total=2)
    server.publish("BTCUSDT", 100)
    server.publish("ETHUSDT", 100)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert max(r[0] for r in stored(daemon.db, "BTCUSDT")) < far
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
    assert f"trade id {far} refused for good" in daemon.log
    # A second start finds nothing to re-fetch.
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 10)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
    assert all(last < far for (last,) in query(daemon.db, "SELECT last_missing_id FROM gaps"))


@pytest.mark.daemon
def test_a_real_jump_is_confirmed_by_rest_and_filled(server, daemon_factory):
    """A jump past ``MAX_UNCONFIRMED_JUMP`` that REST confirms: every trade is stored."""
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.publish("BTCUSDT", MAX_UNCONFIRMED_JUMP + 500, live=False)
    server.publish("BTCUSDT", 50)  # refused until REST's newest id vouches for them
    wait_complete(daemon.db, server, timeout=60)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    gaps = query(daemon.db, "SELECT reason, status FROM gaps")
    assert gaps and all(g == ("live-jump", "filled") for g in gaps)
    assert "confirmed by REST" in daemon.log


@pytest.mark.daemon
def test_an_outage_longer_than_the_jump_limit_is_caught_up(server, daemon_factory):
    """A reconnect after more than ``MAX_UNCONFIRMED_JUMP`` trades: the first live trades
    are held back while the catch-up moves the frontier over REST, then stored or fetched."""
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.drop()
    server.publish("BTCUSDT", MAX_UNCONFIRMED_JUMP + 2000, live=False)
    server.wait_clients(1, total=2)
    server.publish("BTCUSDT", 50)
    wait_for(lambda: any(e == "/trades" for e, _ in server.rest_calls), 10, "a confirmation")
    server.publish("BTCUSDT", 50)
    server.publish("ETHUSDT", 50)
    wait_complete(daemon.db, server, timeout=60)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]


@pytest.mark.daemon
def test_id_going_backwards_is_refused_without_a_gap(server, daemon_factory):
    """Id 5 when the tape is at 1,000,100: not stored, and no "abandoned" gap at restart.

    The old daemon stored it; every start then found a hole 6..999,999 that REST could
    not fill and added an abandoned gap row.
    """
    daemon = start_with_tape(daemon_factory, server, 100, 100)
    server.send_raw(frame("BTCUSDT", 5))
    server.publish("BTCUSDT", 100)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 10)
    wait_complete(daemon.db, server)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'filled'") == [(0,)]
    assert query(daemon.db, "SELECT count(*) FROM gaps WHERE first_missing_id < 1000100") == [(0,)]
    assert "t=5: 1000094 ids behind the tape's 1000099" in daemon.log


def _spoil(ids: dict[int, dict[str, Any]]):
    """A ``rest_mangle`` hook: the items of these ids get these values."""

    def mangle(items: list[dict[str, Any]]) -> bytes | None:
        for item in items:
            item.update(ids.get(item["id"], {}))
        return orjson.dumps(items)

    return mangle


@pytest.mark.daemon
def test_hostile_rest_rows_are_refused_and_not_counted_recovered(server, daemon_factory):
    """A gap of 20 whose REST page has a NaN, negative, zero, inf price, a zero quantity,
    an id of 2**63 and an overflowing time: 13 stored, the gap "abandoned, 13 of 20".

    The old daemon stored the negative and zero values, wedged the writer on 2**63, and
    marked the gap "filled, 20 recovered" while the writer rejected the NaN row.
    """
    daemon = start_with_tape(daemon_factory, server, 50, 50)
    first = server.next_id["BTCUSDT"]
    spoiled: dict[int, dict[str, Any]] = {
        first + 1: {"price": "NaN"},
        first + 3: {"price": "-5.00"},
        first + 5: {"price": "0.00000000"},
        first + 7: {"price": "1e309"},
        first + 9: {"qty": "0.00000000"},
        first + 11: {"id": 2**63},
        first + 13: {"time": 2**63 // 1000 + 1},
    }
    server.rest_mangle = _spoil(spoiled)
    server.publish("BTCUSDT", 20, live=False)
    server.publish("BTCUSDT", 10)
    server.publish("ETHUSDT", 10)
    want = [t.stored() for t in server.tapes["BTCUSDT"] if t.id not in spoiled]
    wait_for(lambda: len(stored(daemon.db, "BTCUSDT")) >= len(want), 20, "the fill")
    wait_for(
        lambda: query(daemon.db, "SELECT count(*) FROM gaps WHERE status != 'open'") == [(1,)],
        20,
        "the gap resolved",
    )
    server.publish("ETHUSDT", 10)  # the writer still takes everything
    wait_for(lambda: len(stored(daemon.db, "ETHUSDT")) == 70, 10, "ETHUSDT stored")
    assert daemon.stop() == 0
    assert stored(daemon.db, "BTCUSDT") == want
    assert query(
        daemon.db, "SELECT first_missing_id, last_missing_id, status, trades_recovered FROM gaps"
    ) == [(first, first + 19, "abandoned", 13)]
    assert "trade from REST refused, price='NaN'" in daemon.log
    ((low, high, qty),) = query(daemon.db, "SELECT min(price), max(price), min(qty) FROM trades")
    assert low > 0 and math.isfinite(high) and qty > 0
