"""The watchlist the page opens on (issue 14) and the view in the page's address.

A real SQLite file holds both Binance markets and a simulated leg
(``page_db.build_basis_db``) and a pair scan stored as the daemon stores one: the
scanner's own child code (``scan/worker.py``'s ``Scanner``) run on the file's closes, its
run and rows written into ``scan_runs`` and ``scan_results`` with the daemon's columns.
The page's z now is checked against the closes read here with plain SQL and the formula
worked by hand, and against the scanner's own z on the last bar (the same closes).
``page_db.store_scan`` and ``insert_scan`` write the scans.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block, Tab

from pairs_monitor.page import links, queries, watchlist
from pairs_monitor.page.settings import Leg, View
from pairs_monitor.page.tabs import TAB_NAMES
from pairs_monitor.page.text import literal
from pairs_monitor.scan.service import RESULT_COLUMNS, RUN_COLUMNS
from tests.helpers.page_db import (
    PERP,
    SPOT,
    add_trades,
    build_basis_db,
    build_empty_db,
    insert_scan,
    store_scan,
)

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60
LEGS = [Leg(SPOT, "BTCUSDT"), Leg(SPOT, "ETHUSDT"), Leg(PERP, "BTCUSDT"), Leg("sim", "ETHUSDT")]
SPOT_BTC, PERP_BTC = LEGS[0], LEGS[2]


def stored_rows(db: Path) -> list[dict]:
    """The newest scan's rows by rank, with plain SQL."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM scan_results WHERE scan_id = (SELECT max(scan_id) FROM scan_runs)"
            " ORDER BY rank"
        ).fetchall()
    finally:
        conn.close()
    return [dict(row) for row in rows]


def last_close(db: Path, leg: Leg) -> float:
    conn = sqlite3.connect(db)
    try:
        (close,) = conn.execute(
            "SELECT close FROM bars_1s WHERE venue = ? AND symbol = ?"
            " ORDER BY bar_time_s DESC LIMIT 1",
            leg,
        ).fetchone()
    finally:
        conn.close()
    return float(close)


def z_by_hand(db: Path, row: dict) -> float:
    """(ln y - b ln x - a) / spread_std at the legs' last stored closes."""
    y = last_close(db, Leg(row["venue_y"], row["symbol_y"]))
    x = last_close(db, Leg(row["venue_x"], row["symbol_x"]))
    return (math.log(y) - row["hedge_ratio"] * math.log(x) - row["intercept"]) / row["spread_std"]


def address(at: AppTest) -> dict[str, str]:
    """The page's query parameters after a run, one value each (the floor's AppTest,
    Streamlit 1.56, gives each as the list ``parse_qs`` makes; the page sees strings)."""
    return {k: v[-1] if isinstance(v, list) else v for k, v in at.query_params.items()}


# -- the address: what a link may ask for (no Streamlit) ----------------------------------

DB_LEGS = LEGS


def test_a_view_written_to_the_address_reads_back_as_the_same_widgets():
    view = View(
        venue=SPOT,
        y="ETHUSDT",
        x="BTCUSDT",
        venue_x=PERP,
        timeframe="1m",
        lookback_s=86_400,
        window=120,
        method="kalman",
        log_prices=False,
        z_entry=2.5,
        z_exit=0.25,
    )
    params = links.params_of(view)
    assert params == {
        "y": "binance-spot:ETHUSDT",
        "x": "binance-usdm:BTCUSDT",
        "timeframe": "1m",
        "lookback": "24h",
        "window": "120",
        "method": "kalman",
        "log": "0",
        "z_entry": "2.5",
        "z_exit": "0.25",
    }
    opened = links.read(params, DB_LEGS)
    assert opened.refused == []
    assert opened.state == {
        "venue": SPOT,
        "y": "ETHUSDT",
        "venue_x": PERP,
        "x": "BTCUSDT",
        "timeframe": "1m",
        "lookback": "24 h",
        "window": 120,
        "method": "Kalman",
        "log_prices": False,
        "z_entry": 2.5,
        "z_exit": 0.25,
    }


def test_an_x_leg_on_the_venue_of_y_is_the_sidebars_same_venue():
    opened = links.read({"y": "binance-spot:ETHUSDT", "x": "binance-spot:BTCUSDT"}, DB_LEGS)
    assert opened.state["venue_x"] is None and opened.has_legs


def test_a_link_without_parameters_asks_for_nothing():
    opened = links.read({}, DB_LEGS)
    assert opened.state == {} and opened.refused == [] and not opened.has_legs


HTML = '<img src=x onerror="alert(1)">'


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("y", "binance-spot:DOGEUSDT", "no such leg in this database"),
        ("y", HTML, "no such leg in this database"),
        ("x", "BTCUSDT", "no such leg in this database"),  # no venue
        ("y", "binance-spot:" + "A" * 300, "longer than 200 characters"),
        ("timeframe", "2m", "one of 1s, 5s"),
        ("timeframe", "<script>alert(1)</script>", "one of 1s, 5s"),
        ("lookback", "999d", "one of 5m, 15m, 1h"),
        ("window", "1e99", "a whole number of bars, 5 to 5,000"),
        ("window", "4", "a whole number of bars, 5 to 5,000"),
        ("window", "5001", "a whole number of bars, 5 to 5,000"),
        ("window", "-60", "a whole number of bars, 5 to 5,000"),
        ("method", "ols; DROP TABLE trades", "one of ols, huber"),
        ("log", "yes", "1 or 0"),
        ("z_entry", "nan", "a number from 0.1 to 10"),
        ("z_entry", "inf", "a number from 0.1 to 10"),
        ("z_entry", "0", "a number from 0.1 to 10"),
        ("z_exit", "1e308", "a number from 0 to 10"),
        ("z_exit", "10.5", "a number from 0 to 10"),
    ],
)
def test_a_hostile_value_is_refused_by_name_and_the_default_kept(name, value, reason):
    opened = links.read({name: value}, DB_LEGS)
    assert opened.state == {}
    (message,) = opened.refused
    assert reason in message
    assert links.PARAMS[name] in message
    shown = value if len(value) <= links.SHOWN_CHARS else value[: links.SHOWN_CHARS] + "…"
    assert literal(shown) in message  # quoted as a code span: shown, never rendered


def test_x_the_same_leg_as_y_is_refused_and_unknown_parameters_named():
    opened = links.read(
        {"y": "binance-spot:BTCUSDT", "x": "binance-spot:BTCUSDT", "tf": "1m", "embed": "true"},
        DB_LEGS,
    )
    assert opened.state == {"venue": SPOT, "y": "BTCUSDT"}
    assert any("the same leg as Y" in m for m in opened.refused)
    assert any(literal("tf") in m and "not the page's" in m for m in opened.refused)
    assert not any("embed" in m for m in opened.refused)  # Streamlit's own


# -- the numbers of a row (no Streamlit) --------------------------------------------------


def run_of(**changes) -> queries.ScanRun:
    fields = dict(
        scan_id=1,
        started_ms=0,
        finished_ms=1_000_000,
        bar_s=60,
        window_start_s=0,
        window_end_s=86_400,
        log_prices=True,
        legs=2,
        legs_skipped=0,
        pairs_tested=1,
        candidates=1,
        tradable=1,
        rows_stored=1,
        cpu_s=0.1,
        params={"every_s": 300, "entry_z": 2.0},
        note=None,
    )
    fields.update(changes)
    return queries.ScanRun(**fields)  # type: ignore[arg-type]


def one_row(**changes) -> pd.DataFrame:
    row = dict(
        rank=1,
        venue_y=SPOT,
        symbol_y="ETHUSDT",
        venue_x=PERP,
        symbol_x="BTCUSDT",
        hedge_ratio=1.5,
        intercept=-5.0,
        eg_qvalue=0.001,
        half_life=30.0,
        corr=0.8,
        candidate=1,
        tradable=1,
        spread_std=0.002,
        spread_std_bps=25.0,
        round_trip_bps=15.0,
        signal_bar_s=None,
        signal_z=None,
    )
    row.update(changes)
    return pd.DataFrame([row])


def test_z_now_is_the_spread_at_the_latest_closes_over_the_scans_deviation():
    rows = one_row()
    y, x = 3_000.0, 60_000.0
    closes = {Leg(SPOT, "ETHUSDT"): (1_000, y), Leg(PERP, "BTCUSDT"): (1_002, x)}
    expected = (math.log(y) - 1.5 * math.log(x) + 5.0) / 0.002
    assert watchlist.z_now(rows, run_of(), closes)[0] == pytest.approx(expected, rel=1e-12)
    prices = run_of(log_prices=False)
    assert watchlist.z_now(rows, prices, closes)[0] == pytest.approx(
        (y - 1.5 * x + 5.0) / 0.002, rel=1e-12
    )
    # A leg without a close, or whose close is more than 5 bars older than the other's.
    assert math.isnan(watchlist.z_now(rows, run_of(), {Leg(SPOT, "ETHUSDT"): (1_000, y)})[0])
    late = {Leg(SPOT, "ETHUSDT"): (1_000, y), Leg(PERP, "BTCUSDT"): (1_000 + 301, x)}
    assert math.isnan(watchlist.z_now(rows, run_of(), late)[0])


@pytest.mark.parametrize(
    ("bars", "text"),
    [(30.0, "30.0"), (1.25, "1.2"), (250.4, "250"), (math.inf, "∞"), (None, "—"), (math.nan, "—")],
)
def test_half_life_in_minutes_infinite_or_unknown(bars, text):
    assert watchlist.half_life_text(bars, 60) == text


def test_a_five_minute_scans_half_life_is_five_minutes_a_bar():
    assert watchlist.half_life_text(3.0, 300) == "15.0"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "<1 min"), (59, "<1 min"), (60, "1 min"), (3599, "59 min"), (3600, "1 h 00 min"),
     (3 * 3600 + 5 * 60, "3 h 05 min"), (2 * 86_400 + 4 * 3600 + 59, "2 d 4 h")],
)  # fmt: skip
def test_ages_read_as_a_trader_says_them(seconds, text):
    assert watchlist.age_text(seconds) == text


def test_the_last_signal_is_now_when_z_now_crosses_the_entry():
    assert watchlist.signal_texts(None, None, 2.31, 2.0, 0) == ("short spread (z +2.31)", "now")
    assert watchlist.signal_texts(-2.5, 100, -2.0, 2.0, 1e9) == ("long spread (z -2.00)", "now")
    assert watchlist.signal_texts(-2.05, 1_000, 0.3, 2.0, 1_000 + 14 * 60 + 5) == (
        "long spread (z -2.05)",
        "14 min",
    )
    assert watchlist.signal_texts(None, None, math.nan, 2.0, 0) == ("none in the window", "—")


def test_the_table_has_no_none_and_costs_as_a_ratio():
    watch = watchlist.Watch(run_of(), one_row(corr=None, half_life=math.inf, round_trip_bps=0))
    frame = watchlist.watch_table(watch, {}, 2_000_000)
    assert list(frame.columns) == list(watchlist.COLUMNS)
    assert math.isnan(frame[watchlist.Z_NOW].iloc[0])  # no close: shown as the placeholder
    assert math.isnan(frame[watchlist.CORR].iloc[0])
    assert math.isnan(frame[watchlist.COVER].iloc[0])  # no fee: no ratio
    assert frame[watchlist.HALF_LIFE].iloc[0] == "∞"
    assert "None" not in frame.astype(str).to_numpy().ravel().tolist()
    cover = watchlist.watch_table(watchlist.Watch(run_of(), one_row()), {}, 0)[watchlist.COVER]
    assert cover.iloc[0] == pytest.approx(25.0 / 15.0)
    assert frame[watchlist.LEG_Y].iloc[0] == "ETHUSDT · spot"
    assert frame[watchlist.LEG_X].iloc[0] == "BTCUSDT · perp"


def test_a_scan_is_stale_after_three_of_its_intervals():
    run = run_of(finished_ms=1_000_000, params={"every_s": 60})
    assert not watchlist.stale(run, 1_000_000 + 180_000)
    assert watchlist.stale(run, 1_000_000 + 180_001)
    no_interval = run_of(finished_ms=0, params={"every_s": "x"})  # the daemon's default: 5 min
    assert not watchlist.stale(no_interval, 900_000) and watchlist.stale(no_interval, 900_001)


# -- reading the database (a real SQLite file, no Streamlit) -------------------------------


def test_newest_scan_and_newest_close_on_a_real_file(tmp_path):
    db = build_empty_db(tmp_path / "ticks.db")
    conn = sqlite3.connect(db)
    assert queries.newest_scan(conn) is None
    run = {c: 0 for c in RUN_COLUMNS} | {"params_json": "not json", "note": "too few legs"}
    first = insert_scan(db, run, [])
    values = dict.fromkeys(RESULT_COLUMNS, 1) | {
        "venue_y": SPOT,
        "symbol_y": "ETHUSDT",
        "venue_x": PERP,
        "symbol_x": "BTCUSDT",
        "half_life": None,
        "signal_bar_s": None,
        "signal_z": None,
    }
    row = tuple(values[c] for c in RESULT_COLUMNS)
    second = insert_scan(db, run | {"note": None, "params_json": '{"every_s": 60}'}, [row])
    prices = [(100, 10.0), (200, 20.0), (9_999, 99.0)]
    trades = [
        (PERP, "BTCUSDT", i + 1, t * 1_000_000 + 500_000, price, 0.1, 0)
        for i, (t, price) in enumerate(prices)
    ]
    add_trades(db, trades)
    with conn:
        conn.execute(
            "INSERT INTO kline_bars (venue, symbol, interval_s, bar_time_s, open, high, low,"
            " close, volume, quote_volume, taker_buy_volume, trade_count) VALUES"
            " (?, 'BTCUSDT', 60, 180, 1, 1, 1, 30.0, 1, 1, 0, 1)",
            (PERP,),
        )
    scan, rows = queries.newest_scan(conn)  # type: ignore[misc]
    assert (first, second) == (1, 2) and scan.scan_id == 2 and scan.params == {"every_s": 60}
    assert rows["symbol_y"].tolist() == ["ETHUSDT"] and pd.isna(rows["half_life"].iloc[0])
    # The 1-minute kline opening at 180 ends at 240, after the 1 s bar of 200; 9999 is
    # later than the bound asked.
    assert queries.newest_close(conn, PERP, "BTCUSDT", 5_000) == (240, 30.0)
    assert queries.newest_close(conn, PERP, "BTCUSDT", 150) == (101, 10.0)
    assert queries.newest_close(conn, SPOT, "BTCUSDT", 5_000) is None
    conn.close()


def test_a_database_before_schema_version_8_says_so(tmp_path):
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("PRAGMA user_version = 7")
    with pytest.raises(queries.ScansNotStored, match=r"schema version 7.*from version 8"):
        queries.newest_scan(conn)
    conn.close()


# -- the page (AppTest over real files) ----------------------------------------------------


@pytest.fixture(scope="module")
def scanned_db(tmp_path_factory) -> Path:
    db = build_basis_db(tmp_path_factory.mktemp("watch") / "ticks.db")
    store_scan(db)
    return db


@pytest.fixture
def scanned_copy(scanned_db, tmp_path) -> Path:
    """A private copy (SQLite's backup: what the WAL holds comes along)."""
    copy = tmp_path / "ticks.db"
    source, target = sqlite3.connect(scanned_db), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy


def app(monkeypatch, db: Path, params: dict[str, str] | None = None) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for name, value in (params or {}).items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def unescaped(text: str) -> str:
    """Markdown as a reader sees it: the backslash escapes of ``text.md`` removed."""
    return re.sub(r"\\(.)", r"\1", text)


def texts(elements) -> str:
    """The elements' texts as a reader sees them."""
    return "\n".join(unescaped(str(e.value)) for e in elements)


def opening_tab(at: AppTest) -> str:
    """The tab the browser opens: the tab bar's ``default_tab_index`` as sent to it."""
    blocks = [at.main]
    while blocks:
        block = blocks.pop()
        if block.type == "tab_container":
            labels = [tab.label for tab in block.children.values() if isinstance(tab, Tab)]
            return labels[block.proto.tab_container.default_tab_index]
        blocks += [c for c in block.children.values() if isinstance(c, Block)]
    raise AssertionError("no tabs")


def watch_frame(at: AppTest) -> pd.DataFrame:
    return next(f.value for f in at.dataframe if watchlist.Z_NOW in f.value.columns)


def sidebar_legs(at: AppTest) -> tuple[Leg, Leg]:
    venue, y, x = (str(at.selectbox(key=key).value) for key in ("venue", "y", "x"))
    venue_x = at.selectbox(key="venue_x").value or venue
    return Leg(venue, y), Leg(str(venue_x), x)


def click_row(at: AppTest, row: int) -> AppTest:
    """What a click on a row sends: the table's selection state, then a rerun."""
    at.session_state[watchlist.SELECTION_KEY] = {
        "selection": {"rows": [row], "columns": [], "cells": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.apptest
def test_the_page_opens_on_the_ranked_scan_with_z_now_from_the_closes(monkeypatch, scanned_db):
    before_s = time.time()
    at = app(monkeypatch, scanned_db)
    after_s = time.time()
    assert [t.label for t in at.tabs] == list(TAB_NAMES)
    assert opening_tab(at) == watchlist.TAB_NAME
    stored = stored_rows(scanned_db)
    frame = watch_frame(at)
    assert frame[watchlist.RANK].tolist() == [row["rank"] for row in stored] == [1, 2, 3, 4, 5, 6]
    assert frame[watchlist.LEG_Y].tolist() == [
        Leg(row["venue_y"], row["symbol_y"]).label for row in stored
    ]
    assert frame[watchlist.LEG_X].tolist() == [
        Leg(row["venue_x"], row["symbol_x"]).label for row in stored
    ]
    # Spot against its perpetual is the cointegrated pair: first, across venues.
    assert (frame[watchlist.LEG_Y].iloc[0], frame[watchlist.LEG_X].iloc[0]) == (
        "BTCUSDT · spot",
        "BTCUSDT · perp",
    )
    for i, row in enumerate(stored):
        z = z_by_hand(scanned_db, row)
        assert frame[watchlist.Z_NOW].iloc[i] == pytest.approx(z, rel=1e-9)
        # The scan ended on the last minute stored: its own z on that bar is z now.
        assert z == pytest.approx(row["zscore"], rel=1e-6)
        assert frame[watchlist.Q_VALUE].iloc[i] == row["eg_qvalue"]
        assert frame[watchlist.CORR].iloc[i] == pytest.approx(row["corr"])
        assert frame[watchlist.COVER].iloc[i] == pytest.approx(
            row["spread_std_bps"] / row["round_trip_bps"]
        )
        assert frame[watchlist.CANDIDATE].iloc[i] == bool(row["candidate"])
        assert frame[watchlist.TRADABLE].iloc[i] == bool(row["tradable"])
        half_life = row["half_life"]
        assert frame[watchlist.HALF_LIFE].iloc[i] == (
            "∞" if math.isinf(half_life) else f"{half_life:,.1f}"  # 1-minute bars: minutes
        )
        side = "short spread" if (z if abs(z) >= 2 else row["signal_z"]) > 0 else "long"
        assert frame[watchlist.SIGNAL].iloc[i].startswith(side)
        if abs(z) >= 2:
            assert frame[watchlist.SIGNAL_AGE].iloc[i] == "now"
            assert frame[watchlist.SIGNAL].iloc[i].endswith(f"(z {z:+.2f})")
        else:
            assert frame[watchlist.SIGNAL].iloc[i].endswith(f"(z {row['signal_z']:+.2f})")
            ages = {watchlist.age_text(t - row["signal_bar_s"]) for t in (before_s, after_s)}
            assert frame[watchlist.SIGNAL_AGE].iloc[i] in ages
    assert (frame[watchlist.SIGNAL_AGE] == "now").sum() >= 1  # the fixture has both kinds
    assert (frame[watchlist.SIGNAL_AGE] != "now").sum() >= 1
    # The page opened on the scan's best pair, in the sidebar and every tab.
    assert sidebar_legs(at) == (SPOT_BTC, PERP_BTC)
    assert "BTCUSDT · perp last" in [m.label for m in at.metric]
    shown = texts(at.caption)
    assert "Scan of 4 legs (6 pairs) on 1-minute closes" in shown
    on_screen = "On screen in the other tabs: **BTCUSDT · spot against BTCUSDT · perp** (rank 1)"
    assert on_screen in shown
    assert "down" not in texts(at.warning)  # a fresh scan
    # The address holds the view.
    assert address(at)["y"] == "binance-spot:BTCUSDT"
    assert address(at)["x"] == "binance-usdm:BTCUSDT"


@pytest.mark.apptest
def test_a_row_clicked_loads_its_pair_in_every_tab_and_the_address(monkeypatch, scanned_db):
    at = app(monkeypatch, scanned_db)
    stored = stored_rows(scanned_db)
    row = next(i for i, r in enumerate(stored) if r["venue_x"] == "sim")  # a mixed pair
    pair = (
        Leg(stored[row]["venue_y"], stored[row]["symbol_y"]),
        Leg(stored[row]["venue_x"], stored[row]["symbol_x"]),
    )
    click_row(at, row)
    assert sidebar_legs(at) == pair
    labels = [unescaped(m.label) for m in at.metric]
    assert f"{pair[0].label} last" in labels and f"{pair[1].label} last" in labels
    assert address(at)["y"] == links.leg_param(pair[0])
    assert address(at)["x"] == links.leg_param(pair[1])
    assert f"(rank {row + 1})" in texts(at.caption)
    # The sidebar stays the user's: a leg changed there is not pulled back to the row.
    at.selectbox(key="x").set_value("ETHUSDT").run()
    assert at.selectbox(key="x").value == "ETHUSDT"
    at.run()  # a rerun with the row still selected changes nothing
    assert at.selectbox(key="x").value == "ETHUSDT"


@pytest.mark.apptest
def test_the_address_reopens_the_same_view(monkeypatch, scanned_db):
    at = app(monkeypatch, scanned_db)
    click_row(at, 1)
    at.select_slider(key="timeframe").set_value("1m")
    at.selectbox(key="lookback").set_value("3 days")
    at.number_input(key="window").set_value(90)
    at.selectbox(key="method").set_value("Huber")
    at.toggle(key="log_prices").set_value(False)
    at.number_input(key="z_entry").set_value(2.5)
    at.run()
    assert not at.exception
    address_now = address(at)
    assert address_now["timeframe"] == "1m" and address_now["lookback"] == "3d"
    assert address_now["window"] == "90" and address_now["method"] == "huber"
    assert address_now["log"] == "0"
    assert address_now["z_entry"] == "2.5" and address_now["z_exit"] == "0.5"

    again = app(monkeypatch, scanned_db, address_now)
    assert sidebar_legs(again) == sidebar_legs(at)
    for key in ("timeframe",):
        assert again.select_slider(key=key).value == at.select_slider(key=key).value
    for key in ("lookback", "method"):
        assert again.selectbox(key=key).value == at.selectbox(key=key).value
    for key in ("window", "z_entry", "z_exit"):
        assert again.number_input(key=key).value == at.number_input(key=key).value
    assert again.toggle(key="log_prices").value is False
    assert address(again) == address_now
    assert "Link" not in texts(again.warning)


@pytest.mark.apptest
def test_hostile_parameters_are_refused_by_name_and_the_defaults_used(monkeypatch, scanned_db):
    hostile = {
        "y": "binance-spot:<img src=x onerror=alert(1)>",
        "x": "[a](http://127.0.0.1:9/)",
        "window": "1e99",
        "z_entry": "nan",
        "timeframe": "<script>",
        "lookback": "999d",
    }
    at = app(monkeypatch, scanned_db, hostile)
    warning = next(w.value for w in at.warning if "**Link**" in w.value)
    for name, value in hostile.items():
        assert f"the link's {links.PARAMS[name]} {literal(value)} was refused" in warning
    # The defaults: the scan's best pair, the sidebar's own values.
    assert sidebar_legs(at) == (SPOT_BTC, PERP_BTC)
    assert at.select_slider(key="timeframe").value == "1s"
    assert at.selectbox(key="lookback").value == "1 h"
    assert at.number_input(key="window").value == 60
    assert at.number_input(key="z_entry").value == 2.0
    # The address is rewritten with the view shown; the message stays until it changes.
    assert address(at)["window"] == "60" and address(at)["y"] == "binance-spot:BTCUSDT"
    at.run()
    assert any("**Link**" in w.value for w in at.warning)
    at.number_input(key="window").set_value(30).run()
    assert not any("**Link**" in w.value for w in at.warning)


@pytest.mark.apptest
def test_a_stale_scan_says_the_scanner_is_down_and_how_to_start_it(monkeypatch, scanned_copy):
    conn = sqlite3.connect(scanned_copy)
    with conn:
        conn.execute(
            "UPDATE scan_runs SET finished_ms = ?", (int(time.time() * 1000) - 20 * 60_000,)
        )
    conn.close()
    at = app(monkeypatch, scanned_copy)
    warning = texts(at.warning)
    assert "**The newest pair scan is 20 min old**" in warning
    assert "more than 3 times its interval of 5 min: the daemon or its scanner is down" in warning
    assert "--scan-every 5" in warning
    assert opening_tab(at) == watchlist.TAB_NAME  # its ranks still stand, as of then
    assert len(watch_frame(at)) == 6


@pytest.mark.apptest
def test_without_a_scan_the_page_opens_on_the_default_pair_and_says_why(monkeypatch, tmp_path):
    db = build_basis_db(tmp_path / "ticks.db")
    at = app(monkeypatch, db)
    assert opening_tab(at) == "Live"
    assert sidebar_legs(at) == (SPOT_BTC, Leg(SPOT, "ETHUSDT"))  # the sidebar's defaults
    assert "no pair scan is stored in this database yet" in texts(at.caption)
    info = texts(at.info)
    assert "No pair scan in this database yet" in info and "--scan-every 5" in info
    assert not [f for f in at.dataframe if watchlist.Z_NOW in f.value.columns]
    # A scan that tested nothing: the same fallback, with its note.
    run = {c: 0 for c in RUN_COLUMNS} | {
        "finished_ms": int(time.time() * 1000),
        "params_json": "{}",
        "note": "1 of 4 legs have 120 one-minute closes in the window: nothing to test yet",
    }
    insert_scan(db, run, [])
    watchlist.newest.clear()
    at = app(monkeypatch, db)
    assert sidebar_legs(at) == (SPOT_BTC, Leg(SPOT, "ETHUSDT"))
    assert "the newest pair scan tested nothing (1 of 4 legs have 120" in texts(at.caption)
    assert "nothing to test yet" in texts(at.info)
