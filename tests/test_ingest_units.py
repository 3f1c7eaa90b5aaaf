"""The live source's small parts: backoff, weight budget, range arithmetic, the parser."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pairs_monitor import clock
from pairs_monitor.clock import Backoff
from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed
from pairs_monitor.ingest.binance.gaps import _subtract, missing_ids
from pairs_monitor.ingest.binance.rest import RestClient, WeightBudget, rest_row
from pairs_monitor.ingest.binance.tape import SymbolTape
from pairs_monitor.ingest.binance.ws import ServerShutdown
from pairs_monitor.ingest.daemon import build_parser
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.ingest.validate import Refusal
from pairs_monitor.store.writer import TradeWriter


def make_feed() -> BinanceFeed:
    """A feed whose writer is never started: these tests look at parsing only."""
    return BinanceFeed(
        MARKETS["spot"], ["btcusdt"], TradeWriter(":memory:"), db_path=Path("/nonexistent.db"),
        ws_url="ws://unused", rest_url="http://unused",
    )  # fmt: skip


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets():
    backoff = Backoff(base=0.5, cap=4.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0  # at the cap: uniform(cap/2, cap)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_weight_budget_waits_when_spent():
    budget = WeightBudget(per_minute=6000)  # 100 a second
    stop = threading.Event()
    started = time.monotonic()
    budget.spend(6000, stop)
    assert time.monotonic() - started < 0.1
    budget.spend(25, stop)
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("span", "cuts", "left"),
    [
        ((1, 10), [], [(1, 10)]),
        ((1, 10), [(3, 4)], [(1, 2), (5, 10)]),
        ((1, 10), [(1, 10)], []),
        ((1, 10), [(0, 2), (9, 20)], [(3, 8)]),
        ((5, 5), [(6, 9)], [(5, 5)]),
    ],
)
def test_subtract(span, cuts, left):
    assert _subtract(span, cuts) == left


def test_parser_takes_binance_documented_trade():
    feed = make_feed()
    feed.tapes["BNBBTC"] = SymbolTape("BNBBTC", feed.stats[0])
    feed._on_message(
        b'{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC",'
        b'"t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}'
    )
    assert list(feed._pending) == [
        ("binance-spot", "BNBBTC", 12345, 1672515782136000, 0.001, 100.0, 1)
    ]


def test_parser_raises_server_shutdown_in_both_forms():
    feed = make_feed()
    for frame in (
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
        b'{"e":"serverShutdown","E":1}',
    ):
        with pytest.raises(ServerShutdown):
            feed._on_message(frame)


# Each a value no exchange sends; the old parser stored the first eight (inf, 1000.0,
# 1.0 for true, id 0, a negative or far time) and wedged the writer on the 2**63 ones.
HOSTILE_FIELDS = [
    '"p":"1e309"', '"p":"Infinity"', '"q":"1_000"', '"p":true', '"t":0', '"T":-5',
    '"T":9000000000000', '"T":9223372036854775', '"t":9223372036854775808',
    '"t":4611686018427387904', '"p":" 1"', '"p":"NaN"', '"q":1.5', '"t":"7"', '"t":7.0',
    '"t":true', '"t":-1', '"T":"1672515782136"', '"p":"0"', '"p":"0.000"', '"q":"-1"',
    '"p":null', '"m":1', '"p":"1.5e3"', '"p":"+1"', '"p":"0x10"', '"p":"\u0661"',
    '"T":1000',
]  # fmt: skip


@pytest.mark.parametrize("field", HOSTILE_FIELDS)
def test_parser_refuses_values_no_exchange_sends(field, caplog):
    feed = make_feed()
    good = {'"t"': '"t":7', '"T"': '"T":1672515782136', '"p"': '"p":"1.5"', '"q"': '"q":"2"',
            '"m"': '"m":false'}  # fmt: skip
    key = field.split(":")[0]
    good[key] = field
    frame = (
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT",'
        + ",".join(good.values())
        + "}}"
    )
    with caplog.at_level("WARNING", logger="ingest.binance"):
        feed._on_message(frame.encode())
    assert not feed._pending
    assert feed.stats[0].rejected == 1
    assert feed.tapes["BTCUSDT"].high is None
    assert feed.stats[0].trades_total == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"BTCUSDT: trade from socket refused, {key.strip(chr(34))}=")


def test_parser_takes_the_same_frame_with_good_values():
    feed = make_feed()
    feed._on_message(
        b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,'
        b'"T":1672515782136,"p":"1.5","q":"2","m":false}}'
    )
    assert list(feed._pending) == [("binance-spot", "BTCUSDT", 7, 1672515782136000, 1.5, 2.0, 0)]
    assert feed.stats[0].rejected == 0


def test_rest_row_converts_ms_to_us():
    item = {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
            "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True}  # fmt: skip
    assert rest_row("binance-spot", "BNBBTC", item) == (
        "binance-spot", "BNBBTC", 28457, 1499865549590000, 4.000001, 12.0, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "-1"), ("price", "0"), ("price", "1e309"), ("price", "inf"),
        ("qty", "0.00000000"), ("qty", "NaN"), ("id", 2**63), ("id", 0), ("id", "28457"),
        ("time", 2**63 // 1000 + 1), ("time", 1), ("isBuyerMaker", "false"),
    ],
)  # fmt: skip
def test_rest_row_refuses_values_no_exchange_sends(field, value):
    item = {"id": 28457, "price": "4.00000100", "qty": "12.00000000",
            "time": 1499990400000, "isBuyerMaker": True}  # fmt: skip
    item[field] = value
    refusal = rest_row("binance-spot", "BNBBTC", item)
    assert isinstance(refusal, Refusal)
    assert refusal.field == field
    assert refusal.value == repr(value)


def test_malformed_frames_are_logged_at_most_five_times_a_minute(caplog):
    feed = make_feed()
    with caplog.at_level("WARNING", logger="ingest.binance"):
        for _ in range(50):
            feed._on_message(b"not json")
    assert feed._bad.counts["malformed"] == 50
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 5


def test_pings_and_pongs_share_a_budget_of_four_a_second():
    from pairs_monitor.ingest.binance.ws import LiveWebSocket

    sent: list[int] = []

    class Recording(LiveWebSocket):
        def send(self, payload: bytes | str, opcode: int = 1) -> int:  # no socket needed
            sent.append(opcode)
            return len(payload)

    ws = Recording()
    for _ in range(10):
        ws.pong(b"x")
        ws.ping(b"y")
    assert len(sent) == 4


@pytest.mark.parametrize(
    ("value", "unit", "trade_us"),
    [
        (1_762_251_619, "s", None),  # seconds: never a Binance trade time
        (1_762_251_619_123, "ms", 1_762_251_619_123_000),
        (1_762_251_619_123_456, "us", 1_762_251_619_123_456),
        (1_762_251_619_123_456_789, "ns", None),
        (10**13, "ms", None),  # the year 2286: a unit mistake, not a trade
        (-1_762_251_619_123, "ms", None),
    ],
)
def test_epoch_unit_from_magnitude_scalar_and_column_agree(value, unit, trade_us):
    assert clock.epoch_unit(value).name == unit
    assert clock.epoch_us(value) == trade_us
    column_us, implausible = clock.epoch_to_us(np.array([value], dtype=np.int64))
    assert bool(implausible[0]) == (trade_us is None)
    if trade_us is not None:
        assert int(column_us[0]) == trade_us


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--connect-timeout", "inf"),
        ("--log-max-mb", "1e309"),
        ("--flush-timeout", "0"),
        ("--start-write-timeout", "nan"),
        ("--watchdog", "-1"),
        ("--log-backups", "0"),
        ("--max-catchup", "2.5"),
    ],
)
def test_absurd_numeric_flags_are_refused_at_parse(capsys, flag, value):
    """A value no operator means is a usage error naming the flag, not a later traceback."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--symbols", "btcusdt", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def _rest_answering(payload: object) -> RestClient:
    """A REST client whose GET answers ``payload`` (the parsing is under test, not HTTP)."""
    client = RestClient("http://unused", "/api/v3", weight_per_min=6000, stop=threading.Event())
    client.get = lambda *args, **kwargs: payload  # type: ignore[method-assign]
    return client


def test_historical_trades_leaves_out_and_counts_refused_items(caplog):
    good = {"id": 7, "price": "1.5", "qty": "2", "time": 1672515782136, "isBuyerMaker": False}
    bad = [dict(good, id=8, price="NaN"), dict(good, id=2**63), "x", dict(good, id=9, qty="0")]
    client = _rest_answering([good, *bad, dict(good, id=10)])
    stats = FeedStats("binance-spot", "BTCUSDT", "live")
    client.feed_stats = {"BTCUSDT": stats}
    with caplog.at_level("WARNING", logger="ingest.binance.rest"):
        rows = client.historical_trades("binance-spot", "BTCUSDT", 7)
    assert [r[2] for r in rows] == [7, 10]
    assert stats.rejected == 4
    assert "BTCUSDT: trade from REST refused, price='NaN'" in caplog.text


@pytest.mark.parametrize(
    "payload",
    [
        {"code": -1121, "msg": "Invalid symbol."},
        [{"id": 2**63, "price": "1", "qty": "1", "time": 1672515782136, "isBuyerMaker": True}],
        [{"id": "5", "price": "1", "qty": "1", "time": 1672515782136, "isBuyerMaker": True}],
    ],
)
def test_latest_trade_id_refuses_what_no_exchange_sends(payload):
    with pytest.raises(ValueError, match="answered"):
        _rest_answering(payload).latest_trade_id("BTCUSDT")
    with pytest.raises(ValueError, match="answered") if isinstance(payload, dict) else _no_raise():
        _rest_answering(payload).historical_trades("binance-spot", "BTCUSDT", 1)


@contextlib.contextmanager
def _no_raise() -> Iterator[None]:
    yield


def _rows(*ids: int) -> list[tuple]:
    return [("binance-spot", "BTCUSDT", i, 1_600_000_000_000_000, 1.0, 1.0, 0) for i in ids]


@pytest.mark.parametrize(
    ("ids", "start", "holes"),
    [
        ((5, 6, 7), 5, []),
        ((5, 7, 8), 5, [(6, 6)]),
        ((8, 9), 5, [(5, 7)]),
        ((5, 9, 10, 14), 5, [(6, 8), (11, 13)]),
        ((5, 5, 6), 5, []),  # a repeat is no hole
    ],
)
def test_missing_ids_inside_a_catch_up_page(ids, start, holes):
    assert missing_ids(_rows(*ids), start) == holes


def test_a_trade_at_the_skew_edge_is_judged_against_one_instant(monkeypatch):
    """The clock is read once: a clock that moves between two reads cannot make the fast
    and the slow checks disagree (it raised AssertionError and dropped the connection)."""
    from pairs_monitor.ingest import validate

    start = validate.clock()
    ticks = iter(range(start, start + 1000))
    monkeypatch.setattr(validate, "clock", lambda: next(ticks))
    edge = start + validate.MAX_CLOCK_SKEW_MS + 1
    payload = {"s": "BTCUSDT", "t": 7, "T": edge, "p": "1.5", "q": "2", "m": True}
    refused = validate.socket_trade("binance-spot", payload)
    assert isinstance(refused, validate.Refusal) and refused.field == "T"
    payload["T"] = edge - 1
    assert validate.socket_trade("binance-spot", payload) == (
        "binance-spot", "BTCUSDT", 7, (edge - 1) * 1000, 1.5, 2.0, 1
    )  # fmt: skip
