"""Funding's parsing and the recorder's receive-thread side, without the network.

``fundingRate`` answers and ``markPriceUpdate`` payloads as Binance sends them are
stored; answers no exchange sends are refused whole, with a message. The live side is
checked through a real writer on a real file: the latest event of each symbol lands in
``funding_live``, at most one row per symbol per flush, and a next funding time that
moves on asks for the settled rate.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.binance import funding
from pairs_monitor.ingest.binance.funding import (
    FundingRecorder,
    FundingRefused,
    funding_rows,
    live_row,
)
from pairs_monitor.ingest.binance.rest import RestClient, Stopped
from pairs_monitor.ingest.validate import Refused
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.daemon import query

VENUE = "binance-usdm"
HOUR_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def item(**changes: object) -> dict:
    row = {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": T0,
           "markPrice": "34287.54619963"}  # fmt: skip
    row.update(changes)
    return row


def test_funding_rows_as_binance_sends_them():
    payload = [
        item(),
        item(fundingTime=T0 + 8 * HOUR_MS, fundingRate="-0.03750000", markPrice=""),
        {k: v for k, v in item(fundingTime=T0 + 16 * HOUR_MS).items() if k != "markPrice"},
    ]
    assert funding_rows(VENUE, "BTCUSDT", payload, T0) == [
        (VENUE, "BTCUSDT", T0, 0.0001, 34287.54619963),
        (VENUE, "BTCUSDT", T0 + 8 * HOUR_MS, -0.0375, None),
        (VENUE, "BTCUSDT", T0 + 16 * HOUR_MS, 0.0001, None),
    ]
    assert funding_rows(VENUE, "BTCUSDT", [], T0) == []


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ({"code": -1121, "msg": "Invalid symbol."}, "not a list"),
        ("<html>", "not a list"),
        ([item(fundingRate="5.0")], "fundingRate='5.0': beyond +-0.1"),
        ([item(fundingRate="NaN")], "fundingRate='NaN': a funding rate must be a plain decimal"),
        ([item(fundingRate=0.0001)], "a funding rate must be a plain decimal string"),
        ([item(fundingRate="1e-4")], "a funding rate must be a plain decimal string"),
        ([item(fundingTime="1767225600000")], "fundingTime='1767225600000'"),
        ([item(fundingTime=T0 - 1)], "before the startTime asked"),
        ([item(fundingTime=10**15)], "more than 5 min ahead"),
        ([item(fundingTime=1_000)], "before Binance opened"),
        ([item(symbol="ETHUSDT")], "symbol='ETHUSDT': not BTCUSDT"),
        ([item(markPrice="-1")], "markPrice="),
        ([item(), "x"], "item 1: item='x': not an object"),
    ],
)
def test_hostile_funding_answers_are_refused_whole(payload, said):
    with pytest.raises(FundingRefused) as refused:
        funding_rows(VENUE, "BTCUSDT", payload, T0)
    assert said in str(refused.value)


def mark(**changes: object) -> dict:
    now = now_ms()
    payload = {"e": "markPriceUpdate", "E": now, "s": "BTCUSDT", "p": "11794.15000000",
               "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167",
               "T": now + HOUR_MS}  # fmt: skip
    payload.update(changes)
    return payload


def test_live_rows_as_binance_sends_them():
    payload = mark()
    assert live_row(VENUE, payload, {"BTCUSDT"}) == (
        VENUE, "BTCUSDT", payload["E"], 11794.15, 11784.62659091, 0.00038167, payload["T"],
    )  # fmt: skip
    assert live_row(VENUE, mark(i=""), {"BTCUSDT"})[4] is None  # type: ignore[index]
    # a delivery contract has no funding: nothing to record, nothing refused
    assert live_row(VENUE, mark(r="", T=0), {"BTCUSDT"}) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"s": "ETHUSDT"}, "s"),
        ({"s": None}, "s"),
        ({"r": "5.0"}, "r"),
        ({"r": "NaN"}, "r"),
        ({"r": ""}, "r"),  # "" with a funding time: not a delivery contract
        ({"p": "0"}, "p"),
        ({"p": 11794.15}, "p"),
        ({"E": "now"}, "E"),
        ({"T": 2**70}, "T"),
        ({"T": "1"}, "T"),
    ],
)
def test_hostile_mark_price_events_are_refused(changes, field):
    with pytest.raises(Refused) as refused:
        live_row(VENUE, mark(**changes), {"BTCUSDT"})
    assert refused.value.refusal.field == field


@pytest.fixture
def writer(tmp_path: Path):
    writer = TradeWriter(tmp_path / "ticks.db")
    writer.start()
    yield writer
    writer.close()


def recorder_on(writer: TradeWriter, symbols: list[str]) -> FundingRecorder:
    """A recorder whose REST side is never started: the receive side is under test."""
    rest = RestClient("http://unused", "/fapi/v1", weight_per_min=1000, stop=threading.Event())
    return FundingRecorder(rest, writer, VENUE, symbols, writer.db_path)


def test_the_latest_event_of_each_symbol_lands_in_funding_live(writer):
    recorder = recorder_on(writer, ["BTCUSDT", "ETHUSDT"])
    first, latest = mark(p="100.5"), mark(p="101.25", r="-0.00020000")
    latest["E"] = first["E"] + 1000
    recorder.on_mark_price(first)
    recorder.on_mark_price(latest)
    recorder.on_mark_price(mark(s="ETHUSDT", p="3000"))
    recorder.on_mark_price(mark(s="SOLUSDT"))  # not recorded here: refused, counted
    recorder.on_mark_price(mark(r="7"))  # refused: the stored rate is not touched
    recorder._flush_live()
    writer.flush(5)
    rows = query(
        writer.db_path,
        "SELECT symbol, event_time_ms, mark_price, index_price, rate, next_funding_ms "
        "FROM funding_live WHERE venue = ? ORDER BY symbol",
        (VENUE,),
    )
    assert [(r[0], r[2], r[4]) for r in rows] == [
        ("BTCUSDT", 101.25, -0.0002),
        ("ETHUSDT", 3000.0, 0.00038167),
    ]
    assert rows[0][1] == latest["E"] and rows[0][5] == latest["T"]
    assert recorder.refused == 2
    # an older event (a late repeat) never overwrites a newer row
    recorder.on_mark_price(first)
    recorder._flush_live()
    writer.flush(5)
    assert query(
        writer.db_path, "SELECT mark_price FROM funding_live WHERE symbol = 'BTCUSDT'"
    ) == [(101.25,)]


def test_a_next_funding_time_that_moves_on_asks_for_the_settled_rate(writer):
    recorder = recorder_on(writer, ["BTCUSDT"])
    first = mark()
    recorder.on_mark_price(first)
    recorder.on_mark_price(mark(T=first["T"]))  # the same funding time: nothing settled
    assert recorder._settled.empty()
    recorder.on_mark_price(mark(T=first["T"] + 8 * HOUR_MS))
    assert recorder._settled.get_nowait() == ("BTCUSDT", first["T"])
    # a funding brought forward: nothing has settled yet; once it passes, it has
    recorder.on_mark_price(mark(T=first["T"] + HOUR_MS))
    assert recorder._settled.empty()
    recorder.on_mark_price(mark(T=first["T"] + 8 * HOUR_MS))
    assert recorder._settled.get_nowait() == ("BTCUSDT", first["T"] + HOUR_MS)
    assert recorder._settled.empty()


def test_on_mark_price_never_waits_on_a_stalled_writer(writer):
    """The receive thread files the payload only; the writer is the live thread's business."""
    recorder = recorder_on(writer, ["BTCUSDT"])
    blocked = threading.Event()
    writer.submit(lambda conn: blocked.wait(5))  # the writer is stuck in a transaction
    started = time.monotonic()
    for _ in range(1000):
        recorder.on_mark_price(mark())
    assert time.monotonic() - started < 0.5
    blocked.set()


def test_the_pacer_holds_requests_to_its_window():
    pacer = funding._Pacer(2, 0.3)
    stop = threading.Event()
    started = time.monotonic()
    pacer.wait(stop)
    pacer.wait(stop)
    assert time.monotonic() - started < 0.1
    pacer.wait(stop)
    assert time.monotonic() - started >= 0.29
    full = funding._Pacer(1, 60)
    full.wait(stop)
    stop.set()  # the daemon stops while the window is full: the wait ends at once
    with pytest.raises(Stopped):
        full.wait(stop)
