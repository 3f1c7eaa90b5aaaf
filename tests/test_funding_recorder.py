"""The funding recorder against the local USD-M server and a real SQLite file.

- the history in ``funding_rates`` equals the server's ``fundingRate`` rows from the
  earliest stored trade of each symbol (none stored: 7 days back), and a second start
  asks only for what came after the last row stored;
- a funding that settles while the recorder runs (the next funding time moves on in the
  ``markPriceUpdate`` events) is fetched and stored with its settled rate, not the last
  estimate the events showed;
- answers no exchange sends (from a plain HTTP server answering what it is told) are
  refused with a message naming the symbol; nothing of them is stored, and the other
  symbols' funding is.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.binance.funding import FundingRecorder
from pairs_monitor.ingest.binance.rest import RestClient
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import BinanceServer, funding_rate
from tests.helpers.daemon import query, wait_for

VENUE = "binance-usdm"
DAY_MS = 86_400_000


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(["BTCUSDT", "ETHUSDT"], market="usdm").start()
    yield server
    server.stop()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[TradeWriter]:
    writer = TradeWriter(tmp_path / "ticks.db")
    writer.start()
    yield writer
    writer.close()


class Running:
    """A recorder started on a REST client of its own; stopped like the feed stops it."""

    def __init__(self, rest_url: str, writer: TradeWriter, symbols: list[str]) -> None:
        self.stop = threading.Event()
        rest = RestClient(rest_url, "/fapi/v1", weight_per_min=1000, stop=self.stop, timeout=2)
        self.recorder = FundingRecorder(rest, writer, VENUE, symbols, writer.db_path)

    def __enter__(self) -> FundingRecorder:
        self.recorder.start()
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        self.stop.set()  # the feed's stop: REST calls in flight end
        self.recorder.close()


def server_rows(server: BinanceServer, symbol: str, start_ms: int) -> list[tuple]:
    """The server's fundingRate rows from ``start_ms``, asked over HTTP like a client."""
    answer = requests.get(
        f"{server.rest_url}/fapi/v1/fundingRate",
        params={"symbol": symbol, "startTime": str(start_ms), "limit": "1000"},
        timeout=5,
    ).json()
    return [(r["fundingTime"], float(r["fundingRate"]), float(r["markPrice"])) for r in answer]


def stored_rows(db: Path, symbol: str) -> list[tuple]:
    return query(
        db,
        "SELECT funding_time_ms, rate, mark_price FROM funding_rates "
        "WHERE venue = ? AND symbol = ? ORDER BY funding_time_ms",
        (VENUE, symbol),
    )


def funding_calls(server: BinanceServer) -> list[dict[str, str]]:
    return [call.params for call in server.rest_calls if call.endpoint == "/fundingRate"]


def test_history_from_the_earliest_trade_then_only_what_is_new(usdm, writer):
    earliest_ms = now_ms() - 30 * DAY_MS  # BTCUSDT's first stored trade; ETHUSDT has none
    writer.put_trades([(VENUE, "BTCUSDT", 7, earliest_ms * 1000, 60000.0, 0.5, 0)])
    writer.flush(5)
    started = now_ms()
    btc = server_rows(usdm, "BTCUSDT", earliest_ms)
    eth = server_rows(usdm, "ETHUSDT", started - 7 * DAY_MS)
    assert len(btc) == 90 and 20 <= len(eth) <= 22  # 30 and 7 days of 8-hourly funding
    with Running(usdm.rest_url, writer, ["BTCUSDT", "ETHUSDT"]) as recorder:
        wait_for(
            lambda: (
                len(stored_rows(writer.db_path, "BTCUSDT")) == len(btc)
                and len(stored_rows(writer.db_path, "ETHUSDT")) == len(eth)
            ),
            10,
            "the funding history",
        )
    assert stored_rows(writer.db_path, "BTCUSDT") == btc
    assert stored_rows(writer.db_path, "ETHUSDT") == eth
    assert recorder.refused == 0
    first = {call["symbol"]: call for call in funding_calls(usdm)}
    assert first["BTCUSDT"] == {"symbol": "BTCUSDT", "startTime": str(earliest_ms), "limit": "1000"}
    # a second start asks from the last row stored on: nothing older again
    usdm.rest_calls.clear()
    with Running(usdm.rest_url, writer, ["BTCUSDT", "ETHUSDT"]):
        wait_for(lambda: len(funding_calls(usdm)) == 2, 10, "the second start's requests")
    again = {call["symbol"]: int(call["startTime"]) for call in funding_calls(usdm)}
    assert again == {"BTCUSDT": btc[-1][0] + 1, "ETHUSDT": eth[-1][0] + 1}
    assert stored_rows(writer.db_path, "BTCUSDT") == btc


def mark_event(server: BinanceServer, symbol: str) -> dict:
    """A markPriceUpdate as the server sends it now (its next funding time as T)."""
    return {"e": "markPriceUpdate", "E": now_ms(), "s": symbol, "p": "60000.00000000",
            "i": "59990.00000000", "P": "60000.00000000", "r": "0.00010000",
            "T": server.next_funding_ms()}  # fmt: skip


def test_a_settlement_is_fetched_with_its_settled_rate(usdm, writer, caplog):
    with (
        caplog.at_level(logging.INFO, logger="ingest.binance.funding"),
        Running(usdm.rest_url, writer, ["BTCUSDT"]) as recorder,
    ):
        recorder.on_mark_price(mark_event(usdm, "BTCUSDT"))
        wait_for(lambda: "funding rate(s) stored" in caplog.text, 10, "the history")
        early = usdm.advance_funding(0.2)
        recorder.on_mark_price(mark_event(usdm, "BTCUSDT"))  # T: the funding brought on
        wait_for(lambda: usdm.next_funding_ms() > early, 5, "the funding to pass")
        recorder.on_mark_price(mark_event(usdm, "BTCUSDT"))  # T moved on: settled
        wait_for(
            lambda: early in [row[0] for row in stored_rows(writer.db_path, "BTCUSDT")],
            10,
            "the settled funding",
        )
    settled = [row for row in stored_rows(writer.db_path, "BTCUSDT") if row[0] == early]
    assert settled[0][1] == float(funding_rate("BTCUSDT", early))  # not the estimate
    assert "BTCUSDT: funding at" in caplog.text and "settled, rate" in caplog.text
    writer.flush(5)  # the live rates handed over on the way out
    live = query(writer.db_path, "SELECT symbol, rate FROM funding_live")
    assert live == [("BTCUSDT", 0.0001)]


class _Canned(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        body = self.answers[query["symbol"][0]]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_hostile_answers_are_refused_and_the_other_symbols_go_on(writer, caplog):
    now = now_ms()
    funding_time = now // (8 * 3_600_000) * (8 * 3_600_000)

    def row(symbol: str, rate: object) -> dict:
        return {"symbol": symbol, "fundingTime": funding_time, "fundingRate": rate,
                "markPrice": "1.0"}  # fmt: skip

    _Canned.answers = {
        "AAAUSDT": json.dumps({"code": 0, "msg": "not a list"}).encode(),
        "BBBUSDT": json.dumps([row("BBBUSDT", "0.0001"), row("BBBUSDT", "5.0")]).encode(),
        "CCCUSDT": json.dumps([row("CCCUSDT", "NaN")]).encode(),
        "DDDUSDT": json.dumps([dict(row("DDDUSDT", "0.0001"), fundingTime=now + DAY_MS)]).encode(),
        "GOODUSDT": json.dumps([row("GOODUSDT", "-0.00025")]).encode(),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with (
            caplog.at_level(logging.INFO, logger="ingest.binance.funding"),
            Running(url, writer, list(_Canned.answers)) as recorder,
        ):
            wait_for(lambda: recorder.refused == 4, 10, "four refusals")
            wait_for(lambda: bool(stored_rows(writer.db_path, "GOODUSDT")), 10, "GOODUSDT")
    finally:
        server.shutdown()
    assert query(writer.db_path, "SELECT symbol, rate FROM funding_rates") == [
        ("GOODUSDT", -0.00025)
    ]
    for symbol, said in [
        ("AAAUSDT", "not a list but {'code': 0, 'msg': 'not a list'}"),
        ("BBBUSDT", "item 1: fundingRate='5.0': beyond +-0.1"),
        ("CCCUSDT", "fundingRate='NaN': a funding rate must be a plain decimal string"),
        ("DDDUSDT", "more than 5 min ahead"),
    ]:
        assert f"{symbol}: fundingRate answer refused, nothing stored from it: " in caplog.text
        assert said in caplog.text
