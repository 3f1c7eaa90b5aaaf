"""The local Binance stand-in speaks both markets as Binance answers today.

Talked to directly (``requests``, ``websocket-client``), no daemon: USD-M streams only under
``/market`` (the legacy route connected and silent), non-market trades, the key and the
500 limit of ``historicalTrades``, ``aggTrades`` that rebuild the 1-second bars exactly,
``fundingRate`` and ``@markPrice`` across a settlement, ``ticker/24hr``, ``exchangeInfo``,
and the scripted failures on both markets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import requests
import websocket

from tests.helpers.binance_server import (
    DAY_MS,
    FUNDING_INTERVAL_MS,
    INSURANCE_FUND,
    MARKET,
    RESET,
    TEST_API_KEY,
    BinanceServer,
    funding_rate,
)
from tests.helpers.daemon import assert_bars_equal

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEY = {"X-MBX-APIKEY": TEST_API_KEY}


@pytest.fixture
def usdm() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS, market="usdm", api_keys=[TEST_API_KEY], mark_interval=0.1)
    yield server.start()
    server.stop()


@pytest.fixture
def spot() -> Iterator[BinanceServer]:
    server = BinanceServer(SYMBOLS)
    yield server.start()
    server.stop()


def get(server: BinanceServer, endpoint: str, **params: Any) -> requests.Response:
    headers = params.pop("headers", None)
    return requests.get(f"{server.rest_url}{server.prefix}{endpoint}", params, headers=headers,
                        timeout=5)  # fmt: skip


def connect(server: BinanceServer, route: str) -> websocket.WebSocket:
    connected = len(server.clients)
    ws = websocket.create_connection(f"{server.ws_url}{route}", timeout=3)
    server.wait_clients(connected + 1)  # registered: it gets what is published from now on
    return ws


def frames(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [orjson.loads(ws.recv()) for _ in range(count)]


def refusal(response: requests.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


# -- streams ----------------------------------------------------------------------------


def test_usdm_streams_only_under_market_and_the_legacy_route_stays_silent(usdm) -> None:
    combined = connect(usdm, "/market/stream?streams=btcusdt@trade")
    raw = connect(usdm, "/market/ws/btcusdt@trade")
    legacy = connect(usdm, "/stream?streams=btcusdt@trade")
    published = usdm.publish("BTCUSDT", 3)
    got = frames(combined, 3)
    assert [f["stream"] for f in got] == ["btcusdt@trade"] * 3
    assert [f["data"] for f in got] == frames(raw, 3) == [t.payload() for t in published]
    first = got[0]["data"]
    assert set(first) == {"e", "E", "T", "s", "t", "p", "q", "X", "m", "st"}
    assert first["X"] == MARKET and "M" not in first
    legacy.ping("alive?")
    opcode, data = legacy.recv_data(control_frame=True)
    assert (opcode, data) == (websocket.ABNF.OPCODE_PONG, b"alive?")
    legacy.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        legacy.recv()  # connected, answering pings, and never a trade
    for ws in (combined, raw, legacy):
        ws.close()


def test_spot_frames_keep_their_shape_and_spot_has_no_market_route(spot) -> None:
    ws = connect(spot, "/stream?streams=ethusdt@trade")
    trade = spot.publish("ETHUSDT", 1)[0]
    data = frames(ws, 1)[0]["data"]
    assert data == trade.payload()
    assert data["M"] is True and "X" not in data
    with pytest.raises(websocket.WebSocketBadStatusException, match="404"):
        websocket.create_connection(f"{spot.ws_url}/market/stream?streams=ethusdt@trade")
    ws.close()


def test_subscribe_on_an_open_socket_adds_a_stream_and_is_answered(usdm) -> None:
    ws = connect(usdm, "/market/stream?streams=btcusdt@trade")
    ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
    assert frames(ws, 1) == [{"result": None, "id": 7}]
    ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
    assert frames(ws, 1) == [{"result": ["btcusdt@trade", "ethusdt@trade"], "id": 8}]
    trade = usdm.publish("ETHUSDT", 1)[0]
    assert frames(ws, 1)[0]["data"]["t"] == trade.id
    ws.close()


def test_usdm_trades_come_in_runs_that_share_time_price_and_side(usdm) -> None:
    trades = usdm.publish("BTCUSDT", 200, live=False)
    times = [t.time_ms for t in trades]
    assert times == sorted(times)
    assert usdm.started_ms - 11 * 60_000 <= times[0] and times[-1] <= time.time() * 1000
    runs: list[list[Any]] = []
    for t in trades:
        key = (t.time_ms, t.price, t.buyer_is_maker)
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    assert {length for _, length in runs} == {1, 2, 3, 4}
    assert {t.buyer_is_maker for t in trades} == {True, False}
    assert max(times) - min(times) > 2_000  # the bars span several seconds


def test_resend_on_connect_and_silence_on_the_market_route(usdm) -> None:
    usdm.publish("BTCUSDT", 5)
    usdm.resend_on_connect = 2
    ws = connect(usdm, "/market/stream?streams=btcusdt@trade")
    assert [f["data"]["t"] for f in frames(ws, 2)] == [t.id for t in usdm.tapes["BTCUSDT"][-2:]]
    ws.close()


# -- non-market trades ------------------------------------------------------------------


def test_insurance_fund_trades_use_ids_reach_the_socket_and_never_rest(usdm) -> None:
    ws = connect(usdm, "/market/stream?streams=btcusdt@trade")
    usdm.publish("BTCUSDT", 4)
    fund = usdm.publish("BTCUSDT", 2, nonmarket=True)
    usdm.publish("BTCUSDT", 4)
    got = [f["data"] for f in frames(ws, 10)]
    special = [d for d in got if d["X"] != MARKET]
    assert [(d["t"], d["X"], d["p"], d["q"]) for d in special] == [
        (t.id, INSURANCE_FUND, "0", "0") for t in fund
    ]
    assert usdm.expected_nonmarket("BTCUSDT") == [t.id for t in fund]
    market_ids = [row[0] for row in usdm.expected("BTCUSDT")]
    assert len(market_ids) == 8 and not set(market_ids) & {t.id for t in fund}
    page = get(usdm, "/historicalTrades", symbol="BTCUSDT", fromId=market_ids[0], headers=KEY)
    assert ids_of(page.json()) == market_ids
    assert ids_of(get(usdm, "/trades", symbol="BTCUSDT").json()) == market_ids
    covered = [i for a in get(usdm, "/aggTrades", symbol="BTCUSDT").json()
               for i in range(a["f"], a["l"] + 1)]  # fmt: skip
    assert covered == market_ids
    with pytest.raises(ValueError, match="only USD-M"):
        BinanceServer(SYMBOLS).publish("BTCUSDT", 1, nonmarket=True)
    ws.close()


# -- historicalTrades -------------------------------------------------------------------


def test_usdm_historical_trades_needs_a_key_and_pages_of_at_most_500(usdm) -> None:
    first = usdm.publish("BTCUSDT", 600, live=False)[0].id
    invalid = (401, -2015, "Invalid API-key, IP, or permissions for action.")
    assert refusal(get(usdm, "/historicalTrades", symbol="BTCUSDT")) == invalid
    unknown = {"X-MBX-APIKEY": "A" * 64}
    assert refusal(get(usdm, "/historicalTrades", symbol="BTCUSDT", headers=unknown)) == invalid
    malformed = {"X-MBX-APIKEY": "not-a-key"}
    assert refusal(get(usdm, "/historicalTrades", symbol="BTCUSDT", headers=malformed)) == (
        401, -2014, "API-key format invalid.",
    )  # fmt: skip
    default = get(usdm, "/historicalTrades", symbol="BTCUSDT", fromId=first, headers=KEY)
    assert ids_of(default.json()) == list(range(first, first + 100))
    assert default.json()[0].keys() == {
        "id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isRPITrade",
    }  # fmt: skip
    full = get(usdm, "/historicalTrades", symbol="BTCUSDT", fromId=first, limit=500, headers=KEY)
    assert len(full.json()) == 500
    too_many = get(usdm, "/historicalTrades", symbol="BTCUSDT", limit=501, headers=KEY)
    assert refusal(too_many) == (400, -1130, "Data sent for parameter 'limit' is not valid.")
    newest = get(usdm, "/historicalTrades", symbol="BTCUSDT", headers=KEY)
    assert ids_of(newest.json()) == list(range(first + 500, first + 600))
    calls = [(c.endpoint, "X-MBX-APIKEY" in c.headers) for c in usdm.rest_calls]
    assert calls.count(("/historicalTrades", True)) == 6
    assert usdm.rest_calls[-1].headers["X-MBX-APIKEY"] == TEST_API_KEY
    assert int(newest.headers["X-MBX-USED-WEIGHT-1M"]) >= 7 * 20


def test_usdm_serves_no_trade_older_than_three_months_over_historical_trades() -> None:
    old = int(time.time() * 1000) - 100 * DAY_MS
    server = BinanceServer(["BTCUSDT"], market="usdm", api_keys=[TEST_API_KEY], base_time_ms=old)
    try:
        server.start()
        first = server.publish("BTCUSDT", 20, live=False)[0].id
        by_id = get(server, "/historicalTrades", symbol="BTCUSDT", fromId=first, headers=KEY)
        assert by_id.status_code == 200 and by_id.json() == []
        assert get(server, "/historicalTrades", symbol="BTCUSDT", headers=KEY).json() == []
        served = get(server, "/aggTrades", symbol="BTCUSDT", fromId=server.first_agg_id).json()
        assert served[0]["f"] == first  # aggTrades goes back a year
    finally:
        server.stop()


def test_spot_historical_trades_needs_no_key_and_caps_a_large_limit(spot) -> None:
    spot.publish("BTCUSDT", 1200, live=False)
    page = get(spot, "/historicalTrades", symbol="BTCUSDT", limit=5000)
    assert page.status_code == 200 and len(page.json()) == 1000
    assert "isBestMatch" in page.json()[0]
    assert len(get(spot, "/historicalTrades", symbol="BTCUSDT").json()) == 500
    assert page.headers["X-MBX-USED-WEIGHT-1M"] == "25"


# -- aggTrades and the bars ---------------------------------------------------------------


def aggregate_groups(trades: list[tuple]) -> list[list[tuple]]:
    """Consecutive stored trades with the same time, price and side."""
    groups: list[list[tuple]] = []
    for row in trades:
        last = groups[-1][-1] if groups else None
        if (
            last
            and last[0] + 1 == row[0]
            and (last[1], last[2], last[4]) == (row[1], row[2], row[4])
        ):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def all_aggregates(server: BinanceServer, symbol: str, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    from_id = server.first_agg_id
    while page := get(server, "/aggTrades", symbol=symbol, fromId=from_id, limit=limit).json():
        rows += page
        from_id = page[-1]["a"] + 1
    return rows


def bars_from(trades: list[tuple[int, int, float, float, int]]) -> list[tuple]:
    """1-second bars from (id, time_us, price, qty, maker) rows in id order."""
    bars: dict[int, dict[str, Any]] = {}
    for trade_id, time_us, price, qty, maker in trades:
        bar = bars.setdefault(time_us // 1_000_000, {"prices": [], "ids": [], "qty": [],
                                                     "quote": [], "buy": []})  # fmt: skip
        bar["prices"].append(price)
        bar["ids"].append(trade_id)
        bar["qty"].append(qty)
        bar["quote"].append(price * qty)
        bar["buy"].append(0.0 if maker else qty)
    return [
        (second, b["prices"][0], max(b["prices"]), min(b["prices"]), b["prices"][-1],
         sum(b["qty"]), sum(b["quote"]), sum(b["buy"]), len(b["ids"]), b["ids"][0], b["ids"][-1])
        for second, b in sorted(bars.items())
    ]  # fmt: skip


def test_aggregates_cover_every_market_trade_and_rebuild_the_bars_exactly(usdm) -> None:
    usdm.publish("BTCUSDT", 300, live=False)
    usdm.publish("BTCUSDT", 1, nonmarket=True)
    usdm.publish("BTCUSDT", 400, live=False)
    market = usdm.expected("BTCUSDT")
    aggregates = all_aggregates(usdm, "BTCUSDT", 37)
    assert [a["a"] for a in aggregates] == list(
        range(usdm.first_agg_id, usdm.first_agg_id + len(aggregates))
    )
    assert aggregates[0].keys() == {"a", "p", "q", "f", "l", "T", "m"}
    groups = aggregate_groups(market)
    # Each publish closes its last aggregate, so a run cut by a publish is two aggregates.
    assert len(groups) <= len(aggregates) <= len(groups) + 2
    assert any(a["l"] > a["f"] for a in aggregates)
    by_id = {row[0]: row for row in market}
    rebuilt = []
    for a in aggregates:
        members = [by_id[i] for i in range(a["f"], a["l"] + 1)]
        assert {(r[1], r[2], r[4]) for r in members} == {(a["T"] * 1000, float(a["p"]), a["m"])}
        assert Decimal(a["q"]) == sum(Decimal(f"{r[3]:.3f}") for r in members)
        share = float(a["q"]) / len(members)  # each id gets an equal share of the volume
        rebuilt += [(r[0], a["T"] * 1000, float(a["p"]), share, int(a["m"])) for r in members]
    assert [r[0] for r in rebuilt] == [r[0] for r in market]
    want = bars_from(market)
    assert len(want) > 5
    assert_bars_equal(usdm.expected_bars("BTCUSDT"), want, rel=1e-12)
    assert_bars_equal(bars_from(rebuilt), want, rel=1e-12)  # what the no-key path can store


def test_agg_trades_by_time_window_and_its_limits(usdm) -> None:
    usdm.publish("BTCUSDT", 200, live=False)
    aggregates = all_aggregates(usdm, "BTCUSDT", 1000)
    middle = aggregates[len(aggregates) // 2]
    start, end = middle["T"], middle["T"] + 500
    window = get(usdm, "/aggTrades", symbol="BTCUSDT", startTime=start, endTime=end).json()
    assert window == [a for a in aggregates if start <= a["T"] <= end]
    assert (
        get(usdm, "/aggTrades", symbol="BTCUSDT", startTime=start, limit=3).json()
        == [a for a in aggregates if a["T"] >= start][:3]
    )
    assert get(usdm, "/aggTrades", symbol="BTCUSDT", limit=2).json() == aggregates[-2:]
    hour = get(usdm, "/aggTrades", symbol="BTCUSDT", startTime=start, endTime=start + 3_600_000)
    assert refusal(hour) == (400, -1127, "More than 1 hours between startTime and endTime.")
    over = get(usdm, "/aggTrades", symbol="BTCUSDT", limit=1001)
    assert refusal(over) == (400, -1130, "Data sent for parameter 'limit' is not valid.")
    assert len(get(usdm, "/aggTrades", symbol="BTCUSDT").json()) == min(500, len(aggregates))
    assert refusal(get(usdm, "/aggTrades", symbol="BTCUSDT", fromId="1e3"))[:2] == (400, -1100)
    assert refusal(get(usdm, "/aggTrades", symbol="XYZ")) == (400, -1121, "Invalid symbol.")


def test_spot_aggregates_carry_m_and_their_bars_match(spot) -> None:
    spot.publish("ETHUSDT", 50, live=False)
    rows = get(spot, "/aggTrades", symbol="ETHUSDT", fromId=spot.first_agg_id).json()
    assert rows[0].keys() == {"a", "p", "q", "f", "l", "T", "m", "M"}
    assert [i for r in rows for i in range(r["f"], r["l"] + 1)] == [
        t[0] for t in spot.expected("ETHUSDT")
    ]
    assert_bars_equal(spot.expected_bars("ETHUSDT"), bars_from(spot.expected("ETHUSDT")), rel=1e-12)


# -- funding, tickers, exchangeInfo ------------------------------------------------------


def test_funding_rate_history_every_8_hours_as_strings(usdm) -> None:
    rows = get(usdm, "/fundingRate", symbol="BTCUSDT").json()
    assert len(rows) == 100
    times = [r["fundingTime"] for r in rows]
    assert times == list(range(times[0], times[-1] + 1, FUNDING_INTERVAL_MS))
    assert times[0] % FUNDING_INTERVAL_MS == 0 and times[-1] <= time.time() * 1000
    assert rows[0].keys() == {"symbol", "fundingTime", "fundingRate", "markPrice"}
    assert all(isinstance(r["fundingRate"], str) and isinstance(r["markPrice"], str) for r in rows)
    assert any(r["fundingRate"].startswith("-") for r in rows)
    start = times[10]
    page = get(usdm, "/fundingRate", symbol="BTCUSDT", startTime=start, limit=3).json()
    assert [r["fundingTime"] for r in page] == times[10:13]
    both = get(usdm, "/fundingRate", startTime=start, endTime=start).json()
    assert {r["symbol"] for r in both} == set(SYMBOLS)
    assert refusal(get(usdm, "/fundingRate", limit=1001))[:2] == (400, -1130)


def mark_events(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [f["data"] for f in frames(ws, count)]


def test_mark_price_names_the_next_funding_and_a_settlement_reaches_funding_rate(usdm) -> None:
    usdm.publish("BTCUSDT", 3)
    ws = connect(usdm, "/market/stream?streams=btcusdt@markPrice@1s")
    event = mark_events(ws, 1)[0]
    assert event.keys() == {"e", "E", "s", "p", "i", "P", "r", "T"}
    assert event["e"] == "markPriceUpdate" and event["s"] == "BTCUSDT"
    grid = event["T"]
    assert grid % FUNDING_INTERVAL_MS == 0 and 0 < grid - time.time() * 1000 <= FUNDING_INTERVAL_MS
    assert float(event["p"]) == float(usdm.tapes["BTCUSDT"][-1].price)
    early = usdm.advance_funding(0.4)
    assert early < grid
    announced = [e for e in mark_events(ws, 3) if e["T"] == early]
    assert announced, "the early funding time was never announced"
    last_estimate = announced[-1]["r"]
    deadline = time.monotonic() + 3
    while (event := mark_events(ws, 1)[0])["T"] == early:
        assert time.monotonic() < deadline
    assert event["T"] == grid
    settled = get(usdm, "/fundingRate", symbol="BTCUSDT", startTime=early).json()
    assert [(r["fundingTime"], r["fundingRate"]) for r in settled] == [
        (early, funding_rate("BTCUSDT", early))
    ]
    assert settled[0]["fundingRate"] != last_estimate
    ws.close()


def test_ticker_24hr_orders_by_configured_quote_volume_and_statuses_show() -> None:
    server = BinanceServer(
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        market="usdm",
        quote_volumes={"SOLUSDT": 5e9},
        statuses={"ETHUSDT": "BREAK"},
    )
    try:
        server.start()
        server.publish("BTCUSDT", 10, live=False)
        tickers = get(server, "/ticker/24hr").json()
        volumes = {t["symbol"]: float(t["quoteVolume"]) for t in tickers}
        assert sorted(volumes, key=volumes.__getitem__, reverse=True) == [
            "SOLUSDT", "BTCUSDT", "ETHUSDT",
        ]  # fmt: skip
        one = get(server, "/ticker/24hr", symbol="BTCUSDT")
        assert one.json()["count"] == 10 and one.json()["lastId"] == server.tapes["BTCUSDT"][-1].id
        assert one.headers["X-MBX-USED-WEIGHT-1M"] == "41"  # 40 for all symbols, then 1
        info = get(server, "/exchangeInfo").json()["symbols"]
        assert [(s["symbol"], s["contractType"], s["status"]) for s in info] == [
            ("BTCUSDT", "PERPETUAL", "TRADING"),
            ("ETHUSDT", "PERPETUAL", "BREAK"),
            ("SOLUSDT", "PERPETUAL", "TRADING"),
        ]
    finally:
        server.stop()


def test_spot_serves_ticker_24hr_and_no_funding(spot) -> None:
    tickers = get(spot, "/ticker/24hr").json()
    assert [t["symbol"] for t in tickers] == SYMBOLS
    assert {"quoteVolume", "bidPrice", "askPrice", "count"} <= tickers[0].keys()
    assert get(spot, "/fundingRate", symbol="BTCUSDT").status_code == 404


# -- scripted failures on USD-M ----------------------------------------------------------


def test_scripted_failures_apply_to_usdm_trade_pages(usdm) -> None:
    usdm.publish("BTCUSDT", 10, live=False)
    usdm.rest_429 = 1
    usdm.retry_after = 3
    limited = get(usdm, "/aggTrades", symbol="BTCUSDT")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    usdm.rest_failures = [503, RESET]
    assert get(usdm, "/historicalTrades", symbol="BTCUSDT", headers=KEY).status_code == 503
    with pytest.raises(requests.ConnectionError):
        get(usdm, "/aggTrades", symbol="BTCUSDT")
    usdm.rest_mangle = lambda items: b"[" + orjson.dumps(items[0]) + b",{}]"
    assert get(usdm, "/aggTrades", symbol="BTCUSDT").json()[1] == {}
    long_path = "/market/stream?streams=" + "/".join(f"s{i}usdt@trade" for i in range(1000))
    with pytest.raises(websocket.WebSocketBadStatusException, match="414"):
        websocket.create_connection(f"{usdm.ws_url}{long_path}", timeout=3)
    assert get(usdm, "/api/v3/trades", symbol="BTCUSDT").status_code == 404


# -- klines ------------------------------------------------------------------------------


def near_now(market: str = "spot", **options: Any) -> BinanceServer:
    """A server whose tape starts a minute ago, after two hours of made-up history."""
    start = int(time.time() * 1000) - 60_000
    base = start - (1_000_000 // 3 if market == "spot" else 0)
    server = BinanceServer(SYMBOLS, market=market, base_time_ms=base, kline_history_s=7200,
                           **options)  # fmt: skip
    return server.start()


def bar_of(kline: list[Any]) -> tuple[Any, ...]:
    """A kline as ``expected_bars`` rows a second: (second, o, h, l, c, volume, quote,
    taker buy volume, trades)."""
    return (kline[0] // 1000, *map(float, kline[1:6]), float(kline[7]), float(kline[9]), kline[8])


def test_spot_1s_klines_are_the_tape_exactly_and_made_up_history_before_it() -> None:
    spot = near_now()
    try:
        spot.publish("BTCUSDT", 7000, live=False)
        tape_bars = spot.expected_bars("BTCUSDT")
        first = tape_bars[0][0]
        last = tape_bars[-1][0]
        response = get(spot, "/klines", symbol="BTCUSDT", interval="1s",
                       startTime=(first - 100) * 1000, endTime=last * 1000)  # fmt: skip
        assert response.headers["X-MBX-USED-WEIGHT-1M"] == "2"
        rows = response.json()
        assert all(len(r) == 12 and isinstance(r[8], int) for r in rows)
        assert all(isinstance(r[k], str) for r in rows for k in (1, 2, 3, 4, 5, 7, 9, 10, 11))
        assert all(r[6] == r[0] + 999 for r in rows)
        assert [r[0] // 1000 for r in rows] == list(range(first - 100, last + 1))
        served = {r[0] // 1000: bar_of(r) for r in rows}
        for bar in tape_bars:  # exact decimals, so only the tape's float sums differ
            kline = served[bar[0]]
            assert kline[:5] == bar[:5] and kline[8] == bar[8]
            assert kline[5:8] == pytest.approx(bar[5:8], rel=1e-12)
        before = [served[s] for s in range(first - 100, first)]
        assert sum(b[8] > 0 for b in before) > 50  # traded seconds, and quiet ones:
        quiet = [b for b in before if b[8] == 0]
        assert quiet and all(b[5] == b[6] == b[7] == 0 and b[1] == b[2] == b[3] == b[4]
                             for b in quiet)  # fmt: skip
        # a quiet second's price is the close before it
        for second in range(first - 99, first):
            if served[second][8] == 0:
                assert served[second][1] == served[second - 1][4]
        # made-up history is deterministic: the same second is the same on every page
        again = get(spot, "/klines", symbol="BTCUSDT", interval="1s",
                    startTime=(first - 50) * 1000, limit=10).json()  # fmt: skip
        assert again == [r for r in rows if first - 50 <= r[0] // 1000 < first - 40]
    finally:
        spot.stop()


def test_klines_paging_windows_limits_and_refusals() -> None:
    spot = near_now()
    try:
        one = get(spot, "/klines", symbol="ETHUSDT", interval="1s", limit=5000).json()
        assert len(one) == 1000  # spot caps a large limit
        assert len(get(spot, "/klines", symbol="ETHUSDT", interval="1s").json()) == 500
        newest = one[-1][0]
        assert newest // 1000 >= int(time.time()) - 1  # the kline now open is served
        upto = get(spot, "/klines", symbol="ETHUSDT", interval="1s", endTime=newest - 5000,
                   limit=3).json()  # fmt: skip
        assert [r[0] for r in upto] == [newest - 7000, newest - 6000, newest - 5000]
        start = newest - 600_000 + 1  # not on a second: the first open at or after it
        page = get(spot, "/klines", symbol="ETHUSDT", interval="1s", startTime=start,
                   endTime=start + 9_999, limit=1000).json()  # fmt: skip
        assert [r[0] for r in page] == [newest - 599_000 + 1000 * k for k in range(10)]
        assert get(spot, "/klines", symbol="ETHUSDT", interval="1s", startTime=start,
                   endTime=start - 1).json() == []  # fmt: skip
        minutes = get(spot, "/klines", symbol="ETHUSDT", interval="1m", limit=1000).json()
        assert len(minutes) == 121 or len(minutes) == 122  # 2 h of history, the minute now
        assert all(r[6] - r[0] == 59_999 for r in minutes)
        week = get(spot, "/klines", symbol="ETHUSDT", interval="1w").json()
        opens = [time.gmtime(r[0] / 1000) for r in week]
        assert opens and all(t.tm_wday == 0 and t.tm_hour == 0 for t in opens)  # Mondays
        month = get(spot, "/klines", symbol="ETHUSDT", interval="1M").json()
        assert month and all(time.gmtime(r[0] / 1000).tm_mday == 1 for r in month)
        for params, want in [
            ({"symbol": "ETHUSDT", "interval": "2s"}, (400, -1120, "Invalid interval.")),
            ({"symbol": "NOPE", "interval": "1s"}, (400, -1121, "Invalid symbol.")),
            ({"interval": "1s"}, (400, -1102, "Mandatory parameter 'symbol' was not sent, "
                                             "was empty/null, or malformed.")),
            ({"symbol": "ETHUSDT"}, (400, -1102, "Mandatory parameter 'interval' was not "
                                                 "sent, was empty/null, or malformed.")),
        ]:  # fmt: skip
            assert refusal(get(spot, "/klines", **params)) == want
        bad_time = get(spot, "/klines", symbol="ETHUSDT", interval="1s", startTime="1e9")
        assert refusal(bad_time)[:2] == (400, -1100)
        assert [c.weight for c in spot.rest_calls if c.endpoint == "/klines"][:3] == [2, 2, 2]
    finally:
        spot.stop()


def test_usdm_klines_from_1m_weighed_by_limit_and_summing_the_tape() -> None:
    usdm = near_now("usdm")
    try:
        usdm.publish("BTCUSDT", 3000, live=False)
        refused = get(usdm, "/klines", symbol="BTCUSDT", interval="1s")
        assert refusal(refused) == (400, -1120, "Invalid interval.")
        over = get(usdm, "/klines", symbol="BTCUSDT", interval="1m", limit=1501)
        assert refusal(over) == (400, -1130, "Data sent for parameter 'limit' is not valid.")
        weights = {}
        for limit in (99, 100, 499, 500, 1000, 1001, 1500):
            response = get(usdm, "/klines", symbol="BTCUSDT", interval="1m", limit=limit)
            weights[limit] = usdm.rest_calls[-1].weight
            assert response.status_code == 200
        assert weights == {99: 1, 100: 2, 499: 2, 500: 5, 1000: 5, 1001: 10, 1500: 10}
        bars = usdm.expected_bars("BTCUSDT")
        first_minute = bars[0][0] // 60 * 60
        rows = get(usdm, "/klines", symbol="BTCUSDT", interval="1m",
                   startTime=first_minute * 1000).json()  # fmt: skip
        assert rows[0][1].count(".") == 1 and len(rows[0][1].split(".")[1]) == 2  # 64486.00
        for kline in rows[1:-1]:  # whole minutes of the tape
            minute = [b for b in bars if kline[0] // 1000 <= b[0] < kline[0] // 1000 + 60]
            if not minute:
                assert kline[8] == 0 and kline[5] == "0.000"
                continue
            assert kline[8] == sum(b[8] for b in minute)
            assert float(kline[1]) == minute[0][1] and float(kline[4]) == minute[-1][4]
            assert float(kline[2]) == max(b[2] for b in minute)
            assert float(kline[5]) == pytest.approx(sum(b[5] for b in minute), rel=1e-12)
    finally:
        usdm.stop()
