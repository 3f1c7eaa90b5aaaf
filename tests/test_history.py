"""History from klines against the local Binance server, a real writer and a real SQLite file.

- the stored bars equal the served klines bar by bar (spot 1s into ``bars_1s``, USD-M 1m
  into ``kline_bars``), and stop where the tape of trades begins;
- live trades stored by a running feed go on after the history untouched;
- a restart fetches nothing twice (the server's ``rest_calls``): nothing at all for the
  same window, only the older part for a longer one;
- an outage left open beyond ``--max-catchup`` is covered by kline bars between the trades
  around it, the gap row says so, and the trades recovered later replace those bars;
- the weight budget is respected (``soak``: seconds of waiting for weight);
- answers no exchange sends are refused whole; ``--history`` values are checked.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed
from pairs_monitor.ingest.binance.history import (
    SPOT_KLINES,
    USDM_KLINES,
    HistoryBackfill,
    KlinesRefused,
    kline_bars,
    parse_duration,
)
from pairs_monitor.ingest.binance.rest import RestClient
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import query, wait_for

SPOT = "binance-spot"
USDM = "binance-usdm"
HOUR = 3600


def server_near_now(market: str = "spot", history_s: int = 3 * HOUR) -> BinanceServer:
    """A server whose tape begins half a minute ago (ten seconds of spot tape are in the
    past), after ``history_s`` of made-up klines."""
    start = int(time.time() * 1000) - 30_000
    base = start - (1_000_000 // 3 if market == "spot" else 0)
    server = BinanceServer(["BTCUSDT", "ETHUSDT"], market=market, base_time_ms=base,
                           kline_history_s=history_s)  # fmt: skip
    return server.start()


@pytest.fixture
def spot() -> Iterator[BinanceServer]:
    server = server_near_now()
    yield server
    server.stop()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[TradeWriter]:
    writer = TradeWriter(tmp_path / "ticks.db")
    writer.start()
    yield writer
    writer.close()


class Backfill:
    """A history run on a REST client of its own, stopped as the feed stops it."""

    def __init__(
        self,
        server: BinanceServer,
        writer: TradeWriter,
        duration_s: int,
        *,
        weight_per_min: int = 6000,
        symbols: list[str] | None = None,
        **options: Any,
    ) -> None:
        self.stop = threading.Event()
        prefix = "/fapi/v1" if server.market == "usdm" else "/api/v3"
        self.rest = RestClient(server.rest_url, prefix, weight_per_min=weight_per_min,
                               stop=self.stop, timeout=5)  # fmt: skip
        spec = USDM_KLINES if server.market == "usdm" else SPOT_KLINES
        self.history = HistoryBackfill(self.rest, writer, server.venue,
                                       symbols or server.symbols,
                                       writer.db_path, duration_s=duration_s, klines=spec,
                                       **options)  # fmt: skip

    def __enter__(self) -> HistoryBackfill:
        self.history.start()
        return self.history

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.history.close()


def run_history(server: BinanceServer, writer: TradeWriter, duration_s: int, **options: Any):
    with Backfill(server, writer, duration_s, **options) as history:
        assert history.landed.wait(60), "the history did not land within a minute"
        writer.flush()
        return history.stats


class LiveFeed:
    """The real spot feed on the server, storing through the writer (no daemon)."""

    def __init__(self, server: BinanceServer, writer: TradeWriter) -> None:
        self.stop = threading.Event()
        self.feed = BinanceFeed(MARKETS["spot"], server.symbols, writer, db_path=writer.db_path,
                                ws_url=server.ws_url, rest_url=server.rest_url)  # fmt: skip
        self.thread = threading.Thread(target=self.feed.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> BinanceFeed:
        self.thread.start()
        return self.feed

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def klines_calls(server: BinanceServer) -> list[tuple[int, int]]:
    """The (startTime, endTime) of every klines request the server answered."""
    return [(int(c.params["startTime"]), int(c.params["endTime"]))
            for c in server.rest_calls if c.endpoint == "/klines"]  # fmt: skip


def served_bars(
    server: BinanceServer, symbol: str, interval: str, start_s: int, end_s: int
) -> list[tuple]:
    """The served klines of ``[start_s, end_s)`` that had trades, as stored rows."""
    rows = server.expected_klines(symbol, interval, start_s * 1000, end_s * 1000 - 1)
    return [
        (r[0] // 1000, *map(float, r[1:6]), float(r[7]), float(r[9]), r[8])
        for r in rows
        if r[8] > 0
    ]


KLINE_1S = (
    "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume, "
    "trade_count FROM bars_1s WHERE venue = ? AND symbol = ? AND from_klines = 1 "
    "ORDER BY bar_time_s"
)
TRADE_BARS = (
    "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume, "
    "trade_count, first_trade_id, last_trade_id FROM bars_1s "
    "WHERE venue = ? AND symbol = ? AND from_klines = 0 ORDER BY bar_time_s"
)


def assert_bars(stored: list[tuple], expected: list[tuple]) -> None:
    """Equal bar by bar: times, prices and counts exactly, sums to 1e-12."""
    assert [b[0] for b in stored] == [b[0] for b in expected]
    for got, want in zip(stored, expected, strict=True):
        assert got[:5] == want[:5] and got[8:] == want[8:], (got, want)
        assert got[5:8] == pytest.approx(want[5:8], rel=1e-12)


def tape_start_s(db: Path, venue: str, symbol: str) -> int:
    return query(db, "SELECT min(trade_time_us) FROM trades WHERE venue = ? AND symbol = ?",
                 (venue, symbol))[0][0] // 1_000_000  # fmt: skip


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_history_equals_the_klines_and_live_trades_go_on_after_it(spot, writer) -> None:
    db = writer.db_path
    with LiveFeed(spot, writer):
        spot.wait_clients(1)
        spot.publish("BTCUSDT", 3000)
        spot.publish("ETHUSDT", 3000)
        wait_for(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == 6000, what="tape")
        started = int(time.time())
        stats = run_history(spot, writer, HOUR)
        spot.publish("BTCUSDT", 6000)  # the live stream goes on after the history
        wait_for(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == 12000, what="more")
    window_start = started - HOUR
    for symbol in spot.symbols:
        first = tape_start_s(db, SPOT, symbol)
        stored = query(db, KLINE_1S, (SPOT, symbol))
        expected = served_bars(spot, symbol, "1s", stored[0][0], first)
        assert window_start - 1 <= stored[0][0] <= window_start + 5
        assert len(expected) > 1500  # an hour of made-up seconds, a quarter of them quiet
        assert_bars(stored, expected)
        assert stored[-1][0] < first  # nothing at or after the tape's first second
        spans = query(db, "SELECT start_s, end_s, origin FROM kline_spans WHERE symbol = ?",
                      (symbol,))  # fmt: skip
        assert [(end, origin) for _, end, origin in spans] == [(first, "rest")]
        # the bars of trades are the server's bars of its tape, untouched by the history
        assert_bars(query(db, TRADE_BARS, (SPOT, symbol)), spot.expected_bars(symbol))
    assert stats.requests == len(klines_calls(spot)) == 2 * 4  # an hour is 4 pages a symbol
    assert stats.weight == 2 * len(klines_calls(spot))


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_restart_fetches_nothing_twice(spot, writer) -> None:
    spot.publish("BTCUSDT", 3000, live=False)
    spot.publish("ETHUSDT", 3000, live=False)
    rows = [(SPOT, s, *t) for s in spot.symbols for t in spot.expected(s)]
    writer.put_trades(rows)
    first_run = run_history(spot, writer, HOUR)
    asked = klines_calls(spot)
    assert first_run.requests == len(asked) == 8
    bars = query(writer.db_path, "SELECT count(*) FROM bars_1s WHERE from_klines = 1")

    again = run_history(spot, writer, HOUR)  # the same window: everything is there
    assert again.requests == 0 and klines_calls(spot) == asked
    assert query(writer.db_path, "SELECT count(*) FROM bars_1s WHERE from_klines = 1") == bars

    longer = run_history(spot, writer, HOUR + 1800)  # only the older half hour is new
    new = klines_calls(spot)[len(asked) :]
    assert longer.requests == len(new) == 2 * 2
    earliest = min(start for start, _ in asked)
    assert all(end < earliest for _, end in new)  # no second asked twice
    assert max(end for _, end in new) == earliest - 1
    for symbol in spot.symbols:
        first = tape_start_s(writer.db_path, SPOT, symbol)
        stored = query(writer.db_path, KLINE_1S, (SPOT, symbol))
        assert_bars(stored, served_bars(spot, symbol, "1s", stored[0][0], first))
        spans = query(writer.db_path, "SELECT start_s, end_s FROM kline_spans WHERE symbol = ?",
                      (symbol,))  # fmt: skip
        assert len(spans) == 1 and spans[0][1] == first  # merged into one


def test_an_empty_database_gets_history_up_to_now(spot, writer) -> None:
    started = int(time.time())
    stats = run_history(spot, writer, 1800)
    assert stats.requests == 2 * 2
    for symbol in spot.symbols:
        ((start, end),) = query(writer.db_path,
                                "SELECT start_s, end_s FROM kline_spans WHERE symbol = ?",
                                (symbol,))  # fmt: skip
        assert started <= end <= int(time.time())  # up to the second now open, not into it
        stored = query(writer.db_path, KLINE_1S, (SPOT, symbol))
        assert_bars(stored, served_bars(spot, symbol, "1s", start, end))
    assert query(writer.db_path, "SELECT count(*) FROM trades") == [(0,)]


def test_usdm_history_is_1m_kline_bars_up_to_the_tapes_minute(writer) -> None:
    usdm = server_near_now("usdm", history_s=5 * HOUR)
    try:
        usdm.publish("BTCUSDT", 400, live=False)
        writer.put_trades([(USDM, "BTCUSDT", *t) for t in usdm.expected("BTCUSDT")])
        stats = run_history(usdm, writer, 3 * HOUR)
        first_minute = tape_start_s(writer.db_path, USDM, "BTCUSDT") // 60 * 60
        stored = query(writer.db_path,
                       "SELECT bar_time_s, open, high, low, close, volume, quote_volume, "
                       "taker_buy_volume, trade_count FROM kline_bars WHERE symbol = ? "
                       "AND interval_s = 60 ORDER BY bar_time_s", ("BTCUSDT",))  # fmt: skip
        assert 170 <= len(stored) <= 181 and stored[-1][0] == first_minute - 60
        assert_bars(stored, served_bars(usdm, "BTCUSDT", "1m", stored[0][0], first_minute))
        assert query(writer.db_path, "SELECT count(*) FROM bars_1s WHERE from_klines = 1") == [(0,)]
        # one request a symbol (fewer than 500 minutes: weight 2, as Binance counts it)
        assert stats.requests == 2 and [c.weight for c in usdm.rest_calls
                                        if c.endpoint == "/klines"] == [2, 2]  # fmt: skip
        assert all(c.params["interval"] == "1m" for c in usdm.rest_calls if c.endpoint == "/klines")
    finally:
        usdm.stop()


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_an_outage_trades_cannot_fill_is_covered_by_klines_until_its_trades_come(
    spot, writer
) -> None:
    spot.publish("BTCUSDT", 30_000, live=False)  # ten seconds of tape, 3 trades a ms
    tape = spot.expected("BTCUSDT")
    missing = tape[9_000:21_000]  # four seconds and a bit, inside the tape
    kept = tape[:9_000] + tape[21_000:]
    writer.put_trades([(SPOT, "BTCUSDT", *t) for t in kept])
    note = "beyond --max-catchup=100000; the next start fetches it"
    writer.submit(
        lambda conn: conn.execute(
            "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason, "
            "status, detected_ms, note) VALUES (?, ?, ?, ?, 'catch-up', 'open', 0, ?)",
            (SPOT, "BTCUSDT", missing[0][0], missing[-1][0], note),
        )
    ).result()
    with Backfill(spot, writer, HOUR, poll_s=0.1) as history:
        assert history.landed.wait(60)
        wait_for(lambda: query(writer.db_path, "SELECT covered_by FROM gaps") == [("1s klines",)],
                 what="the gap covered")  # fmt: skip
    before_s, after_s = tape[8_999][1] // 1_000_000, tape[21_000][1] // 1_000_000
    inside = query(writer.db_path, KLINE_1S, (SPOT, "BTCUSDT"))
    inside = [b for b in inside if b[0] >= tape[0][1] // 1_000_000]
    assert [b[0] for b in inside] == list(range(before_s + 1, after_s))  # strictly between
    assert_bars(inside, served_bars(spot, "BTCUSDT", "1s", before_s + 1, after_s))
    expected = {bar[0]: bar for bar in spot.expected_bars("BTCUSDT")}
    for row in query(writer.db_path, TRADE_BARS, (SPOT, "BTCUSDT")):
        if row[0] not in (before_s, after_s):  # the two seconds the gap cuts through
            assert_bars([row], [expected[row[0]]])
    # a later start recovers the trades: their bars replace the klines' second by second
    writer.put_trades([(SPOT, "BTCUSDT", *t) for t in missing])
    writer.flush()
    assert query(writer.db_path, "SELECT count(*) FROM bars_1s WHERE from_klines = 1 AND "
                 "bar_time_s >= ?", (tape[0][1] // 1_000_000,)) == [(0,)]  # fmt: skip
    assert_bars(query(writer.db_path, TRADE_BARS, (SPOT, "BTCUSDT"))[-11:],
                spot.expected_bars("BTCUSDT")[-11:])  # fmt: skip


@pytest.mark.soak
def test_the_weight_budget_is_respected(spot, writer) -> None:
    # 60 weight a minute for the history (half of 120): 30 pages at once, then one every
    # 2 s; nine hours is 33 pages a symbol, one symbol asked.
    stats = run_history(spot, writer, 9 * HOUR, weight_per_min=120, symbols=["BTCUSDT"])
    calls = [c for c in spot.rest_calls if c.endpoint == "/klines"]
    assert stats.requests == len(calls) == 33
    spent = 0
    for call in calls:
        spent += call.weight
        allowed = 60 + (call.at - calls[0].at) * 60 / 60  # the bucket, refilled at 1 a second
        assert spent <= allowed + 2, (spent, allowed)
    assert calls[-1].at - calls[0].at >= 4.5  # the last three pages waited for weight


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"code": -1}, "not a list"),
        ([[60_000, "1", "1", "1", "1", "1", 60_999, "1", 1, "1", "1", "0"]], "outside"),
        ([[0, "1", "1", "1", "1", "1", 999, "1", 1, "1", "1", "0"]] * 2, "not after"),
        ([[0, "1", "2", "1.5", "1", "1", 999, "1", 1, "1", "1", "0"]], "cannot be"),
        ([[0, "1", "1", "1", "1", "1", 999, "1", 1, "2", "1", "0"]], "cannot be"),
        ([[0, "NaN", "1", "1", "1", "1", 999, "1", 1, "1", "1", "0"]], "plain decimal"),
        ([[0, 1.0, "1", "1", "1", "1", 999, "1", 1, "1", "1", "0"]], "plain decimal"),
        ([[0, "1", "1", "1", "1", "1", 999, "1", True, "1", "1", "0"]], "not a count"),
        ([[500, "1", "1", "1", "1", "1", 999, "1", 1, "1", "1", "0"]], "boundary"),
        ([[0, "1", "1", "1"]], "12 fields"),
    ],
)
def test_answers_no_exchange_sends_are_refused_whole(payload: object, why: str) -> None:
    with pytest.raises(KlinesRefused, match=why):
        kline_bars(payload, 0, 60, 1)


def test_a_kline_of_no_trade_makes_no_bar() -> None:
    rows = [[0, "2", "2", "2", "2", "0", 999, "0", 0, "0", "0", "0"],
            [1000, "2", "3", "1", "2.5", "4", 1999, "9", 7, "1", "2", "0"]]  # fmt: skip
    assert kline_bars(rows, 0, 2, 1) == [(1, 2.0, 3.0, 1.0, 2.5, 4.0, 9.0, 1.0, 7)]


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("90m", 5400), ("24h", 86_400), ("7d", 604_800), ("45s", 45)]
)
def test_history_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["24", "1y", "-1h", "1.5h", "h", "32d"])
def test_history_durations_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"write a number|31 days"):
        parse_duration(text)
