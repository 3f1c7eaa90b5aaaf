"""History from klines on the page (issue 12), without Streamlit: which bars a view reads
from a database holding hours of klines and a few minutes of trades, what it says where
klines cannot be shown, and what feed health reads (tests/test_app_history.py runs the
page itself over the same database)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.settings import Leg, View
from tests.helpers.page_db import (
    GAP_IDS,
    OUTAGE,
    PERP,
    REPLAY_FILES,
    REPLAY_VENUE,
    SPOT,
    START_S,
    TAPE_END_S,
    TAPE_S,
    USDM_HISTORY_S,
    build_history_db,
    build_pair_db,
)

SPOT_BTC, SPOT_ETH, PERP_BTC = Leg(SPOT, "BTCUSDT"), Leg(SPOT, "ETHUSDT"), Leg(PERP, "BTCUSDT")


@pytest.fixture(scope="module")
def history_db(tmp_path_factory) -> Path:
    return build_history_db(tmp_path_factory.mktemp("history") / "ticks.db")


@pytest.fixture(scope="module")
def source(history_db) -> pipeline.DbSource:
    return pipeline.DbSource(pipeline.ReadOnlyDB(history_db))


def sql(db: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, args).fetchall()


def bars(times_s, close, from_klines) -> pd.DataFrame:
    """A bars frame of one row per start second, every price ``close``, 3 trades each."""
    rows = [
        (t, close, close, close, close, 1.0, close, 0.5, 3, close, from_klines) for t in times_s
    ]
    return queries.bar_frame(rows)


def test_a_kline_stands_only_where_nothing_finer_covers_its_span():
    tape = bars([150, 151], 2.0, False)  # two seconds of trades in the third minute
    minutes = bars([0, 60, 120, 180], 1.0, True)
    five = bars([0, 300], 5.0, True)  # 5-minute klines: the first overlaps the minutes
    merged = pipeline.merge_klines(tape, [(300, five), (60, minutes)])
    assert [int(t.timestamp()) for t in merged.index] == [0, 60, 150, 151, 180, 300]
    assert list(merged["close"]) == [1.0, 1.0, 2.0, 2.0, 1.0, 5.0]
    assert list(merged["from_klines"]) == [True, True, False, False, True, True]
    # Nothing finer at all: the klines as they are.
    alone = pipeline.merge_klines(bars([], 0.0, False), [(60, minutes)])
    assert list(alone.index) == list(minutes.index)


def test_one_minute_bars_are_the_perpetuals_klines_before_its_tape_and_its_trades_after(
    history_db, source
):
    view = View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP, timeframe="1m", lookback_s=86_400)
    end_s = TAPE_S + TAPE_END_S  # the newest trade's second, plus one
    assert pipeline.end_of_view(source, view.legs) == end_s
    got = pipeline.leg_bars(source, view, PERP_BTC, end_s)
    klines = pd.DataFrame(
        sql(
            history_db,
            "SELECT bar_time_s, open, high, low, close, volume, trade_count FROM kline_bars"
            " WHERE venue = ? AND symbol = 'BTCUSDT' AND interval_s = 60 AND bar_time_s >= ?",
            PERP,
            pipeline.view_start_s(view, end_s),
        ),
        columns=["t", "open", "high", "low", "close", "volume", "trades"],
    ).set_index("t")
    trades = pd.DataFrame(
        sql(
            history_db,
            "SELECT trade_time_us / 60000000 * 60, trade_id, price, qty FROM trades"
            " WHERE venue = ? AND symbol = 'BTCUSDT' ORDER BY trade_id",
            PERP,
        ),
        columns=["t", "id", "price", "qty"],
    )
    from_trades = trades.groupby("t").agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("qty", "sum"),
        trades=("id", "count"),
    )
    expected = pd.concat([klines, from_trades]).sort_index()
    traded = got[~got["empty"]]
    assert [int(t.timestamp()) for t in traded.index] == list(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(traded[column], expected[column], rtol=1e-12)
    # Before the tape and over the outage, the minutes are klines; the rest are trades.
    flags = pd.Series(traded["from_klines"].to_numpy(), index=expected.index)
    assert flags[flags.index < TAPE_S].all() and len(flags[flags.index < TAPE_S]) > 1400
    outage = (flags.index >= TAPE_S + 60) & (flags.index < TAPE_S + OUTAGE[1])
    assert flags[outage].all() and outage.sum() == 9
    assert not flags[[TAPE_S, TAPE_S + OUTAGE[1]]].any()


def test_spot_history_shows_at_one_second(history_db, source):
    view = View(SPOT, "BTCUSDT", "ETHUSDT")  # the page's defaults: 1 s over 1 h
    end_s = TAPE_S + TAPE_END_S
    assert pipeline.end_of_view(source, view.legs) == end_s
    got = pipeline.leg_bars(source, view, SPOT_BTC, end_s)
    stored = sql(
        history_db,
        "SELECT bar_time_s, close, trade_count, from_klines FROM bars_1s WHERE venue = ?"
        " AND symbol = 'BTCUSDT' AND bar_time_s >= ? ORDER BY bar_time_s",
        SPOT,
        end_s - 3600,
    )
    assert len(got) == len(stored) == 3600  # a bar every second, klines then trades
    assert list(got["close"]) == [row[1] for row in stored]
    assert list(got["trades"]) == [row[2] for row in stored]
    assert list(got["from_klines"]) == [bool(row[3]) for row in stored]
    assert got["from_klines"].sum() == 3600 - TAPE_END_S
    pair = pipeline.compute_pair(source, view)
    assert pair.waiting is None and pair.frame is not None and len(pair.frame) == 3600


def test_at_one_second_the_perpetuals_minute_history_is_named_not_dropped(source):
    view = View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP)
    # Ending where the tape begins: the perpetual has only 1-minute klines in the hour.
    pair = pipeline.compute_pair(source, view, end_s=TAPE_S)
    assert pair.frame is None
    assert pair.waiting == (
        "no 1s bars for BTCUSDT · perp in the last 1 h: BTCUSDT · perp: before "
        "2024-05-02 00:00:00 UTC only 1-minute history: pick 1m or more"
    )
    hints = pipeline.history_hints(source, view, TAPE_S + TAPE_END_S)
    assert [(h.name, h.timeframe) for h in hints] == [("BTCUSDT · perp", "1m")]
    # Inside the outage the trades stop and the klines go on.
    outage = View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP, lookback_s=300)
    (hint,) = pipeline.history_hints(source, outage, TAPE_S + 500)
    assert hint.text == (
        "BTCUSDT · perp: from 2024-05-02 00:04:00 UTC some bars only as 1-minute klines "
        "(no trades): pick 1m or more"
    )
    # At 1 m nothing is hidden; spot's 1-second klines never need a hint.
    assert pipeline.history_hints(source, View(SPOT, "BTCUSDT", "ETHUSDT"), TAPE_S) == []
    at_minutes = View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP, timeframe="1m")
    assert pipeline.history_hints(source, at_minutes, TAPE_S + TAPE_END_S) == []
    # The button's view: 1 m, with a lookback that holds the window's 61 bars.
    assert pipeline.lookback_for(view, "1m") == "4 h"
    assert pipeline.lookback_for(View(SPOT, "A", "B", window=2000), "1m") == "3 days"


def test_replayed_hourly_files_are_series_of_their_own(source):
    replay_btc, replay_eth = Leg(REPLAY_VENUE, "BTCUSDT"), Leg(REPLAY_VENUE, "ETHUSDT")
    assert source.legs() == [SPOT_BTC, SPOT_ETH, PERP_BTC, replay_btc, replay_eth]
    last_hour = START_S - 3600  # the files' last klines open an hour before START_S
    assert source.latest_s(replay_eth) == last_hour
    view = View(REPLAY_VENUE, "ETHUSDT", "BTCUSDT", timeframe="1h", lookback_s=3 * 86_400)
    pair = pipeline.compute_pair(source, view)
    assert pair.end_s == last_hour + 1 and pair.waiting is None
    got = pair.bars_of(replay_eth)
    assert got is not None and len(got) == 73 and got["from_klines"].all()  # 72 h back, both ends
    hints = pipeline.history_hints(source, View(REPLAY_VENUE, "ETHUSDT", "BTCUSDT"), START_S)
    assert [h.text for h in hints] == [
        f"{name}: only 1-hour bars from klines (no trade stored): pick 1h or more"
        for name in ("ETHUSDT", "BTCUSDT")
    ]


def test_feed_health_reads_where_the_tape_begins_the_spans_and_the_covered_gap(source):
    assert source.tape_start_us(PERP_BTC) == TAPE_S * 1_000_000
    assert source.tape_start_us(Leg(REPLAY_VENUE, "ETHUSDT")) is None
    spans = source.kline_spans(PERP_BTC)
    assert spans.values.tolist() == [
        [60, TAPE_S - USDM_HISTORY_S, TAPE_S, "rest"],
        [60, TAPE_S + 60, TAPE_S + OUTAGE[1], "rest"],
    ]
    replayed = source.kline_spans(Leg(REPLAY_VENUE, "ETHUSDT"))
    assert replayed["origin"].tolist() == [REPLAY_FILES["ETHUSDT"]]
    (gap,) = source.gaps(PERP_BTC, 10).to_dict("records")
    assert (gap["first_missing_id"], gap["last_missing_id"]) == GAP_IDS
    assert gap["covered_by"] == "1m klines" and gap["status"] == "open"
    assert gap["after_us"] == (TAPE_S + OUTAGE[0]) * 1_000_000 - 500_000
    assert gap["before_us"] == (TAPE_S + OUTAGE[1]) * 1_000_000
    assert source.gaps(SPOT_BTC, 10).empty


def test_a_database_from_before_klines_reads_as_before(tmp_path):
    db = build_pair_db(tmp_path / "v6.db", seconds=120)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DROP TRIGGER bars_1s_trades_replace_klines")
        conn.execute("ALTER TABLE bars_1s DROP COLUMN from_klines")
        conn.execute("ALTER TABLE gaps DROP COLUMN covered_by")
        for table in ("kline_bars", "kline_spans", "scan_results", "scan_runs"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 6")
    conn.close()
    old = pipeline.DbSource(pipeline.ReadOnlyDB(db))
    leg = Leg("sim", "BTCUSDT")
    assert old.legs() == [leg, Leg("sim", "ETHUSDT"), Leg("sim", "SOLUSDT")]
    view = View("sim", "BTCUSDT", "ETHUSDT", timeframe="1m")
    end_s = pipeline.end_of_view(old, view.legs)
    assert end_s is not None
    got = pipeline.leg_bars(old, view, leg, end_s)
    assert len(got) == 2 and not got["from_klines"].any()
    assert old.kline_spans(leg).empty and old.gaps(leg, 5).empty
    assert pipeline.history_hints(old, view, end_s) == []
