"""USD-M as it answers today, part by part: the values checked where they enter (trade
types, aggregates), the parser's non-market trades, the API key's hygiene, and the
aggTrades -> rows conversion against a computation of its own.

The parser tests feed frames to a feed whose writer never starts; the conversion tests
run the real gap filler against the local server on a real SQLite file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from pairs_monitor.ingest.binance import gaps
from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed, FeedError
from pairs_monitor.ingest.binance.gaps import Chunk, Fill
from pairs_monitor.ingest.binance.rest import BadApiKey, RestClient
from pairs_monitor.ingest.binance.ws import plan_connections, stream_url, symbol_streams
from pairs_monitor.ingest.validate import (
    MAX_AGGREGATE_IDS,
    Aggregate,
    Refusal,
    agg_trade,
    socket_nonmarket,
)
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import TEST_API_KEY, BinanceServer
from tests.helpers.daemon import query, stored, wait_for

VENUE = "binance-usdm"
NOW_MS = 1_787_137_583_835  # the time of BINANCE.md's USD-M example trade


def usdm_feed(**kwargs: object) -> BinanceFeed:
    """A USD-M feed whose writer is never started: these tests look at parsing only."""
    return BinanceFeed(
        MARKETS["usdm"], ["btcusdt"], TradeWriter(":memory:"), db_path=Path("/nonexistent.db"),
        ws_url="ws://unused", rest_url="http://unused", **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def frame(trade_id: int, kind: object = "MARKET", price: str = "64486.00") -> bytes:
    """A USD-M ``@trade`` frame as BINANCE.md shows it, with ``X`` = ``kind``."""
    payload = {"e": "trade", "E": NOW_MS, "T": NOW_MS, "s": "BTCUSDT", "t": trade_id,
               "p": price, "q": "0.002", "X": kind, "m": False, "st": 1}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@trade", "data": payload})


# -- values checked where they enter ---------------------------------------------------

AGG = {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27784,
       "T": 1499865549590, "m": True}  # fmt: skip


def test_an_aggregate_row_becomes_its_ids_price_time_and_side() -> None:
    assert agg_trade(AGG, now_ms=NOW_MS) == Aggregate(
        26129, 27781, 27784, 0.01633102, 4.70443515, 1499865549590, 1
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("l", 27780, "before the first trade id 27781"),
        ("l", 27781 + MAX_AGGREGATE_IDS, f"more than {MAX_AGGREGATE_IDS} ids"),
        ("l", 2**62, "a trade id must be in"),
        ("f", "27781", "a trade id must be a JSON integer"),
        ("a", -1, "a trade id must be in"),
        ("p", "1e3", "not a plain decimal"),
        ("p", "NaN", "not a plain decimal"),
        ("q", "-4.7", "not a plain decimal"),
        ("q", 4.7, "must be a decimal string"),
        ("p", "0", "must be > 0"),
        ("T", 1000, "before Binance opened"),
        ("T", NOW_MS + 6 * 60_000, "more than 5 min ahead"),
        ("m", 1, "must be true or false"),
    ],
)
def test_an_aggregate_no_exchange_sends_is_refused(field: str, value: object, reason: str) -> None:
    refusal = agg_trade({**AGG, field: value}, now_ms=NOW_MS)
    assert isinstance(refusal, Refusal)
    assert refusal.field == field
    assert reason in refusal.reason


@pytest.mark.parametrize("item", [[1, 2], "a", None, {k: v for k, v in AGG.items() if k != "f"}])
def test_an_aggregate_that_is_no_object_or_lacks_a_field_is_refused(item: object) -> None:
    assert isinstance(agg_trade(item, now_ms=NOW_MS), Refusal)


INSURANCE = {"e": "trade", "E": NOW_MS, "T": NOW_MS, "s": "BTCUSDT", "t": 7978350772,
             "p": "0", "q": "0", "X": "INSURANCE_FUND", "m": False, "st": 1}  # fmt: skip


def test_a_non_market_trade_keeps_its_id_time_and_type_and_zero_price_is_no_refusal() -> None:
    assert socket_nonmarket(VENUE, INSURANCE, now_ms=NOW_MS) == (
        VENUE, "BTCUSDT", 7978350772, NOW_MS * 1000, "INSURANCE_FUND",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("X", 5), ("X", None), ("X", ["ADL"]), ("X", {"a": 1}), ("X", ""), ("X", "A" * 33),
        ("X", "ADL TRADE"), ("X", "ADL\n"), ("X", "保险"), ("t", 0), ("t", "7"), ("t", 2**62),
        ("T", -1), ("T", NOW_MS + 10**9), ("s", 1),
    ],
)  # fmt: skip
def test_a_non_market_trade_with_a_value_no_exchange_sends_is_refused(field, value) -> None:
    refusal = socket_nonmarket(VENUE, {**INSURANCE, field: value}, now_ms=NOW_MS)
    assert isinstance(refusal, Refusal)
    assert refusal.field == field


# -- the parser ------------------------------------------------------------------------


def test_a_non_market_frame_moves_the_tape_on_without_a_gap_and_reaches_no_trade() -> None:
    feed = usdm_feed()
    for trade_id, kind in ((7, "MARKET"), (8, "INSURANCE_FUND"), (9, "ADL"), (10, "MARKET")):
        price = "64486.00" if kind == "MARKET" else "0"
        feed._on_message(frame(trade_id, kind, price))
    assert [row[2] for row in feed._pending] == [7, 10]
    assert [(row[2], row[4]) for row in feed._nonmarket] == [(8, "INSURANCE_FUND"), (9, "ADL")]
    stats = feed.stats[0]
    assert (stats.nonmarket, stats.trades_total, stats.rejected) == (2, 2, 0)
    assert feed.tapes["BTCUSDT"].high == 10
    assert feed.filler.pending() == []  # no gap opened


def test_a_repeated_non_market_frame_is_not_counted_twice() -> None:
    feed = usdm_feed()
    for trade_id in (7, 8, 8):
        feed._on_message(frame(trade_id, "INSURANCE_FUND", "0"))
    assert feed.stats[0].nonmarket == 2
    assert len(feed._nonmarket) == 2


@pytest.mark.parametrize("kind", [5, None, ["MARKET"], {"X": 1}, "", "M" * 40, "ADL TRADE"])
def test_a_frame_with_an_absurd_trade_type_is_refused_and_the_tape_goes_on(kind, caplog) -> None:
    feed = usdm_feed()
    feed._on_message(frame(7))
    with caplog.at_level(logging.WARNING, logger="ingest.binance"):
        feed._on_message(frame(8, kind))
    feed._on_message(frame(9))
    stats = feed.stats[0]
    assert stats.rejected == 1
    assert [row[2] for row in feed._pending] == [7, 9]
    assert not feed._nonmarket
    # The refused id is one the exchange used: it is fetched over REST like any gap.
    assert [(t.first, t.last) for t in feed.filler.pending() if isinstance(t, Fill)] == [(8, 8)]
    assert any("trade from socket refused, X=" in r.getMessage() for r in caplog.records)


def test_spot_refuses_a_trade_type_it_never_sends() -> None:
    feed = BinanceFeed(
        MARKETS["spot"], ["btcusdt"], TradeWriter(":memory:"), db_path=Path("/nonexistent.db"),
        ws_url="ws://unused", rest_url="http://unused",
    )  # fmt: skip
    feed._on_message(frame(7, "INSURANCE_FUND", "0"))
    feed._on_message(frame(8, "MARKET"))
    assert feed.stats[0].rejected == 1
    assert not feed._nonmarket
    assert [row[2] for row in feed._pending] == [8]


def test_mark_price_events_go_to_the_funding_sink_and_never_stop_the_trades() -> None:
    feed = usdm_feed()
    taken: list[dict] = []

    class Sink:
        def on_mark_price(self, payload: dict) -> None:
            taken.append(payload)
            if len(taken) == 2:
                raise RuntimeError("the recorder failed")

    feed.funding = Sink()
    event = {"e": "markPriceUpdate", "E": NOW_MS, "s": "BTCUSDT", "p": "64480.1",
             "r": "0.0001", "T": NOW_MS + 3_600_000}  # fmt: skip
    for _ in range(2):
        feed._on_message(orjson.dumps({"stream": "btcusdt@markPrice", "data": event}))
    feed._on_message(frame(7))
    assert taken == [event, event]
    assert [row[2] for row in feed._pending] == [7]


# -- routes ----------------------------------------------------------------------------


def test_the_usdm_route_is_appended_to_the_host_base() -> None:
    usdm = MARKETS["usdm"]
    url = stream_url(usdm.ws_url, symbol_streams(["BTCUSDT"], ("trade", "markPrice")),
                     usdm.ws_route)  # fmt: skip
    assert url == "wss://fstream.binance.com/market/stream?streams=btcusdt@trade/btcusdt@markPrice"
    assert stream_url(MARKETS["spot"].ws_url, ["btcusdt@trade"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade"
    )


def test_a_connection_holds_at_most_1024_streams_with_mark_price_beside_trades() -> None:
    symbols = [f"S{i:04d}USDT" for i in range(1500)]
    groups = plan_connections("ws://h", symbols, route="/market/stream",
                              kinds=("trade", "markPrice"), max_url=10**7)  # fmt: skip
    assert [len(g) for g in groups] == [512, 512, 476]


# -- the API key -----------------------------------------------------------------------

KEY = "k" * 63 + "Z"


@pytest.mark.parametrize("bad", ["", "with space" + KEY, KEY + "\n", "é" + KEY, "x" * 513])
def test_a_key_a_header_cannot_carry_is_refused_without_being_shown(bad: str) -> None:
    with pytest.raises(BadApiKey) as caught:
        RestClient("http://h", "/fapi/v1", weight_per_min=100, stop=threading.Event(),
                   api_key=bad)  # fmt: skip
    assert bad.strip() == "" or bad.strip() not in str(caught.value)
    with pytest.raises(FeedError, match="BINANCE_API_KEY cannot be used") as feed_error:
        usdm_feed(api_key=bad)
    assert bad.strip() == "" or bad.strip() not in str(feed_error.value)


def test_the_key_is_in_no_parameter_repr_or_request_error() -> None:
    feed = usdm_feed(api_key=KEY)
    assert feed.params["api_key"] is True
    assert KEY not in repr(feed.params) and KEY not in repr(feed.rest)
    spot = BinanceFeed(
        MARKETS["spot"], ["btcusdt"], TradeWriter(":memory:"), db_path=Path("/nonexistent.db"),
        ws_url="ws://unused", rest_url="http://127.0.0.1:9", api_key=KEY,
    )  # fmt: skip
    assert spot.params["api_key"] is False and not spot.rest.has_key  # spot never gets it
    rest = RestClient("http://127.0.0.1:9", "/fapi/v1", weight_per_min=6000,
                      stop=threading.Event(), timeout=1, api_key=KEY)  # fmt: skip
    with pytest.raises(requests.RequestException) as caught:
        rest.get("historicalTrades", {"symbol": "BTCUSDT"}, 20, attempts=1, keyed=True)
    assert KEY not in str(caught.value)


# -- aggTrades -> rows, against a computation of the test's own ----------------------------


@pytest.fixture
def usdm_server() -> Iterator[BinanceServer]:
    server = BinanceServer(["BTCUSDT"], market="usdm", api_keys=[TEST_API_KEY]).start()
    yield server
    server.stop()


def filler_run(
    server: BinanceServer, db: Path, stored_ids: set[int], gap: tuple[int, int]
) -> BinanceFeed:
    """Store the server's trades with ids in ``stored_ids`` as the socket would have, then
    have the real gap filler (no key: aggTrades) fill ``gap``; return the feed."""
    writer = TradeWriter(db)
    writer.start()
    feed = BinanceFeed(MARKETS["usdm"], ["BTCUSDT"], writer, db_path=db,
                       ws_url=server.ws_url, rest_url=server.rest_url)  # fmt: skip
    rows = [(VENUE, "BTCUSDT", *t) for t in server.expected("BTCUSDT") if t[0] in stored_ids]
    writer.put_trades(rows)
    writer.submit(lambda conn: None).result(10)
    try:
        feed.filler.start()
        feed.filler.add(Fill("BTCUSDT", gap[0], gap[1], "live-jump"))
        wait_for(
            lambda: query(db, "SELECT status FROM gaps") == [("filled",)],
            timeout=15,
            what="the gap filled from aggTrades",
        )
    finally:
        feed.stop.set()
        feed.filler.join(5)
        writer.close(5)
    return feed


def test_aggregates_become_one_trade_per_id_with_the_bars_of_the_real_trades(
    usdm_server: BinanceServer, tmp_path: Path
) -> None:
    server = usdm_server
    server.publish("BTCUSDT", 120, live=False)
    ids = [t.id for t in server.tapes["BTCUSDT"]]
    # The gap starts and ends inside aggregates: the ids around it are stored, with their
    # own quantities, and the ids filled share what their aggregate has left.
    inside = [a for a in server.aggregates["BTCUSDT"] if a.last - a.first >= 2]
    first, last = inside[0].first + 1, inside[-1].last - 1
    kept = {i for i in ids if i < first or i > last}
    db = tmp_path / "ticks.db"
    filler_run(server, db, kept, (first, last))

    # The test's own computation, from the server's trades and aggregates.
    trades = {t.id: t for t in server.tapes["BTCUSDT"]}
    want = []
    for agg in server.aggregates["BTCUSDT"]:
        members = range(agg.first, agg.last + 1)
        known = [float(trades[i].qty) for i in members if i in kept]
        missing = [i for i in members if i not in kept]
        for i in missing:
            qty = (float(agg.qty) - sum(known)) / len(missing)
            want.append((i, agg.time_ms * 1000, float(agg.price), qty, int(agg.buyer_is_maker)))
    got = [row for row in stored(db, "BTCUSDT", VENUE) if row[0] not in kept]
    assert [g[:3] + g[4:] for g in got] == [w[:3] + w[4:] for w in want]
    assert all(math.isclose(g[3], w[3], rel_tol=1e-12) for g, w in zip(got, want, strict=True))
    # The bars of the real trades, computed by the server from each trade's own size.
    bars = query(db, "SELECT bar_time_s, open, high, low, close, volume, quote_volume, "
                     "taker_buy_volume, trade_count, first_trade_id, last_trade_id "
                     "FROM bars_1s ORDER BY bar_time_s")  # fmt: skip
    expected = server.expected_bars("BTCUSDT")
    assert [b[:5] + b[8:] for b in bars] == [e[:5] + e[8:] for e in expected]
    for b, e in zip(bars, expected, strict=True):
        assert all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(b[5:8], e[5:8], strict=True)), (
            b,
            e,
        )
    assert query(db, "SELECT filled_from, trades_recovered FROM gaps") == [
        ("aggTrades", last - first + 1)
    ]
    assert {c.endpoint for c in server.rest_calls} == {"/aggTrades"}


def test_ids_between_aggregates_are_non_market_and_not_holes(
    usdm_server: BinanceServer, tmp_path: Path
) -> None:
    server = usdm_server
    server.publish("BTCUSDT", 10, live=False)
    insurance = server.publish("BTCUSDT", 2, live=False, nonmarket=True)
    server.publish("BTCUSDT", 10, live=False)
    ids = [t.id for t in server.tapes["BTCUSDT"]]
    db = tmp_path / "ticks.db"
    filler_run(server, db, {ids[0], ids[-1]}, (ids[1], ids[-2]))
    assert stored(db, "BTCUSDT", VENUE)[0][0] == ids[0]
    assert [r[0] for r in stored(db, "BTCUSDT", VENUE)] == [
        i for i in ids if i not in {t.id for t in insurance}
    ]
    assert query(db, "SELECT trade_id, trade_time_us, trade_type FROM nonmarket_trades") == [
        (t.id, None, "NOT_IN_REST") for t in insurance
    ]


@pytest.mark.parametrize(
    "hostile",
    [
        {"f": 1_000_010, "l": 1_000_005},  # f > l
        {"f": 1_000_000, "l": 1_000_000 + MAX_AGGREGATE_IDS},  # absurdly many ids
        {"p": "1e3"},
        {"q": "0x10"},
        {"T": 1_000},
        {"T": 9_000_000_000_000},
        {"a": "7"},
    ],
)
def test_a_hostile_aggregate_is_refused_counted_and_the_gap_filled_all_the_same(
    usdm_server: BinanceServer, tmp_path: Path, hostile: dict
) -> None:
    server = usdm_server
    server.publish("BTCUSDT", 40, live=False)
    ids = [t.id for t in server.tapes["BTCUSDT"]]
    served: list[bool] = []

    def splice(items: list[dict]) -> bytes | None:
        if served or not items:
            return None  # once: a retried page gets the genuine answer
        served.append(True)
        return orjson.dumps([{**items[0], **hostile}, *items])

    server.rest_mangle = splice
    feed = filler_run(server, tmp_path / "ticks.db", {ids[0], ids[-1]}, (ids[1], ids[-2]))
    assert served and feed.stats[0].rejected == 1
    got = stored(tmp_path / "ticks.db", "BTCUSDT", VENUE)
    assert [(r[0], r[1], r[2]) for r in got] == [
        (w[0], w[1], w[2]) for w in server.expected("BTCUSDT")
    ]


def test_a_chunk_clipped_at_the_live_hand_over_keeps_only_what_precedes_it() -> None:
    row = (VENUE, "BTCUSDT", 0, 1, 1.0, 1.0, 0)
    chunk = Chunk(10, 30, [(*row[:2], i, *row[3:]) for i in (10, 12, 25)],
                  absent=[(11, 11), (20, 24)], holes=[(13, 19), (26, 30)])  # fmt: skip
    chunk.clip(21)
    assert (chunk.reach, [r[2] for r in chunk.rows]) == (21, [10, 12])
    assert (chunk.absent, chunk.holes) == ([(11, 11), (20, 21)], [(13, 19)])


def test_the_older_than_rest_note_and_history_limit_are_the_markets() -> None:
    usdm = MARKETS["usdm"]
    assert usdm.history_ms == 90 * 86_400_000 and MARKETS["spot"].history_ms is None
    assert gaps.OLDER_NOTE == "older than the 3 months USD-M REST serves"
    assert dataclasses.replace(usdm, ws_route="/stream").name == "usdm"


def test_a_gap_older_than_three_months_stays_open_saying_so(tmp_path: Path) -> None:
    hundred_days_ago = int(time.time() * 1000) - 100 * 86_400_000
    server = BinanceServer(["BTCUSDT"], market="usdm", base_time_ms=hundred_days_ago).start()
    try:
        server.publish("BTCUSDT", 30, live=False)
        ids = [t.id for t in server.tapes["BTCUSDT"]]
        writer = TradeWriter(tmp_path / "ticks.db")
        writer.start()
        feed = BinanceFeed(MARKETS["usdm"], ["BTCUSDT"], writer, db_path=tmp_path / "ticks.db",
                           ws_url=server.ws_url, rest_url=server.rest_url)  # fmt: skip
        first = server.expected("BTCUSDT")[0]
        writer.put_trades([(VENUE, "BTCUSDT", *first)])
        writer.submit(lambda conn: None).result(10)
        feed.filler.start()
        feed.filler.add(Fill("BTCUSDT", ids[1], ids[-1], "stored-hole"))
        wait_for(lambda: query(tmp_path / "ticks.db", "SELECT note FROM gaps")
                 == [(gaps.OLDER_NOTE,)], timeout=15, what="the note")  # fmt: skip
        feed.stop.set()
        feed.filler.join(5)
        writer.close(5)
        assert query(tmp_path / "ticks.db", "SELECT status, first_missing_id, last_missing_id "
                     "FROM gaps") == [("open", ids[1], ids[-1])]  # fmt: skip
        assert feed.stats[0].gaps_open == 1
    finally:
        server.stop()


def test_an_error_page_echoing_the_key_is_told_without_it(usdm_server: BinanceServer) -> None:
    """A proxy or a broken server may echo the request's headers in its answer."""
    echo = f"X-MBX-APIKEY: {TEST_API_KEY}"
    usdm_server.rest_mangle = lambda items: f"<html>{echo}</html>".encode()
    usdm_server.publish("BTCUSDT", 3, live=False)
    rest = RestClient(usdm_server.rest_url, "/fapi/v1", weight_per_min=6000,
                      stop=threading.Event(), timeout=2, api_key=TEST_API_KEY)  # fmt: skip
    with pytest.raises(requests.RequestException) as caught:
        rest.get("historicalTrades", {"symbol": "BTCUSDT", "fromId": 1}, 20,
                 attempts=1, keyed=True)  # fmt: skip
    assert TEST_API_KEY not in str(caught.value)
    assert "<BINANCE_API_KEY>" in str(caught.value)
