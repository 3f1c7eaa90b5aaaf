"""Issue 16 on the page (AppTest over a real SQLite file written by the real TradeWriter): a
pair quoted like XLMBTC (8 decimals) against ETHBTC (5), whose feed was down for 43
seconds, with that outage in the gaps table. The tables show human headers with units,
prices at each leg's decimals and no "None"; the charts draw the outage as a gap (no
candle, a break in every line) and shade it; the CSV keeps the prices as received."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import export, numbers, pipeline
from pairs_monitor.page.settings import View
from pairs_monitor.store.writer import TradeWriter

APP = str(Path(__file__).resolve().parent.parent / "app.py")
VENUE = "replay-spot"
Y, X = "XLMBTC", "ETHBTC"
START_S = 1_714_521_600  # 2024-05-01T00:00:00Z
SECONDS = 1200
GAP_FROM_S, GAP_S = 600, 43  # no trade of either leg in [600, 643) seconds from the start
TRADES_PER_S = 2


def pair_rows(seed: int = 5) -> list[tuple]:
    """Both legs' trades, two a second, none in the outage; ids run on across it (the
    daemon would log the missing ones as a gap, see ``gap_rows``)."""
    rng = np.random.default_rng(seed)
    n = SECONDS * TRADES_PER_S
    t_us = START_S * 1_000_000 + np.arange(n) * (1_000_000 // TRADES_PER_S)
    log_x = np.log(0.05123) + np.cumsum(rng.normal(0, 3e-4, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = 0.97 * ou[i - 1] + rng.normal(0, 2e-4)
    log_y = np.log(0.00005123 / 0.05123) + log_x + ou
    down = (t_us >= (START_S + GAP_FROM_S) * 1_000_000) & (
        t_us < (START_S + GAP_FROM_S + GAP_S) * 1_000_000
    )
    rows = []
    for symbol, logs, decimals in ((Y, log_y, 8), (X, log_x, 5)):
        prices = np.round(np.exp(logs), decimals)
        qty = np.round(rng.uniform(1, 500, n), 2)
        for i in np.flatnonzero(~down).tolist():
            rows.append(
                (
                    VENUE,
                    symbol,
                    i + 1,
                    int(t_us[i]),
                    float(prices[i]),
                    float(qty[i]),
                    i % 2,
                )
            )
    return rows


def gap_ids() -> tuple[int, int]:
    """The trade ids the outage swallowed (the same for both legs: one id per trade)."""
    first = GAP_FROM_S * TRADES_PER_S + 1
    return first, first + GAP_S * TRADES_PER_S - 1


@pytest.fixture(scope="module")
def gap_db(tmp_path_factory) -> Path:
    return build_gap_db(tmp_path_factory.mktemp("gaps") / "ticks.db")


def build_gap_db(path: Path) -> Path:
    """The pair's trades through the real TradeWriter, and the outage in ``gaps`` for both
    legs (abandoned: REST does not have the trades)."""
    writer = TradeWriter(path)
    writer.start()
    try:
        writer.put_trades(pair_rows())
        first, last = gap_ids()

        def outage(conn: sqlite3.Connection) -> None:
            for symbol in (Y, X):
                conn.execute(
                    "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason,"
                    " status, detected_ms, note) VALUES (?, ?, ?, ?, 'live-jump', 'abandoned',"
                    " ?, 'REST does not have them')",
                    (VENUE, symbol, first, last, (START_S + GAP_FROM_S + GAP_S) * 1000),
                )

        writer.submit(outage)
        writer.flush()
    finally:
        writer.close()
    return path


def run_app(monkeypatch, db: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="y").set_value(Y)
    at.selectbox(key="x").set_value(X)
    at.selectbox(key="lookback").set_value("1 h")
    at.number_input(key="window").set_value(30).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest, key_column: str):
    """The st.dataframe element whose frame has this column."""
    return next(f for f in at.dataframe if key_column in f.value.columns)


def headers(element) -> dict[str, str]:
    """Column -> the header the page shows (its column_config label, else the name)."""
    config = json.loads(element.proto.columns or "{}")
    return {
        str(col): config.get(str(col), {}).get("label") or str(col) for col in element.value.columns
    }


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def figure(at: AppTest, title: str) -> dict:
    return next(f for f in figures(at) if title in str(f["layout"].get("title", {}).get("text")))


def outage_window() -> tuple[pd.Timestamp, pd.Timestamp]:
    """From the last trade before the outage to the first after it."""
    last_before = pd.Timestamp((START_S + GAP_FROM_S) * 1_000_000 - 500_000, unit="us", tz="UTC")
    first_after = pd.Timestamp((START_S + GAP_FROM_S + GAP_S) * 1_000_000, unit="us", tz="UTC")
    return last_before, first_after


def times(values) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True))


def numbers_of(values) -> np.ndarray:
    """A trace's numbers as floats, NaN where none: plotly sends a numpy array as a typed
    array (``{"dtype": "f8", "bdata": <base64>}``) and a list with None."""
    if isinstance(values, dict):
        raw = base64.b64decode(values["bdata"])
        return np.frombuffer(raw, dtype=np.dtype(values["dtype"])).astype(float)
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def stored_closes(db: Path, symbol: str) -> dict[Any, float]:
    """Each stored 1-second bar's close of ``symbol``, by bar second."""
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT bar_time_s, close FROM bars_1s WHERE venue = ? AND symbol = ?"
        return dict(conn.execute(sql, (VENUE, symbol)).fetchall())
    finally:
        conn.close()


def last_price(db: Path, symbol: str) -> float:
    """The price of ``symbol``'s newest stored trade."""
    conn = sqlite3.connect(db)
    try:
        sql = (
            "SELECT price FROM trades WHERE venue = ? AND symbol = ? ORDER BY trade_id DESC LIMIT 1"
        )
        return float(conn.execute(sql, (VENUE, symbol)).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.apptest
def test_prices_tab_writes_each_legs_decimals_under_human_headers(monkeypatch, gap_db):
    at = run_app(monkeypatch, gap_db)
    stats = table(at, "Quote")
    shown = stats.value.set_index("Leg")
    conn = sqlite3.connect(gap_db)
    for symbol, decimals in ((Y, 8), (X, 5)):
        last = last_price(gap_db, symbol)
        assert shown.loc[symbol, "Last"] == f"{last:,.{decimals}f}"
        assert shown.loc[symbol, "Quote"] == "BTC"
        high = conn.execute(
            "SELECT max(high) FROM bars_1s WHERE venue = ? AND symbol = ?", (VENUE, symbol)
        ).fetchone()[0]
        assert shown.loc[symbol, "High"] == f"{high:,.{decimals}f}"
    conn.close()
    assert shown.loc[Y, "Last"].startswith("0.0000")  # not 0.00005, four decimals
    assert stats.proto.placeholder == numbers.DASH
    for label in headers(stats).values():
        assert "_" not in label


@pytest.mark.apptest
def test_an_outage_is_a_gap_in_every_chart_and_shaded(monkeypatch, gap_db):
    at = run_app(monkeypatch, gap_db)
    last_before, first_after = outage_window()
    # Candles: none in the outage (the bars there only carry the close), and it is shaded.
    candles = figure(at, Y)
    trace = candles["data"][0]
    x = times(trace["x"])
    inside = np.asarray((x > last_before) & (x < first_after))
    assert inside.sum() >= GAP_S - 1
    for price in ("open", "high", "low", "close"):
        drawn = numbers_of(trace[price])
        assert np.isnan(drawn[inside]).all() and not np.isnan(drawn[~inside]).any()
    shapes = [s for s in candles["layout"].get("shapes", []) if s.get("type") == "rect"]
    assert shapes, "the outage is shaded"
    assert {(times([s["x0"]])[0], times([s["x1"]])[0]) for s in shapes} == {
        (last_before, first_after)
    }
    assert candles["layout"]["yaxis"]["exponentformat"] == "none"
    assert candles["layout"]["yaxis"]["hoverformat"] == ",.8f"
    # Both legs rebased: each line breaks once, right after the last bar before the outage.
    rebased = figure(at, "rebased")
    for line in rebased["data"]:
        x = times(line["x"])
        breaks = np.flatnonzero(np.isnan(numbers_of(line["y"])))
        assert len(breaks) == 1
        assert last_before < x[breaks[0]] < first_after


@pytest.mark.apptest
def test_each_legs_candles_shade_that_legs_outages_only(monkeypatch, gap_db, tmp_path):
    """A second outage of Y alone (trade ids 201-220, 99.5 s to 110 s from the start) is
    shaded on Y's candles and not on X's."""
    db = Path(shutil.copy(gap_db, tmp_path / "ticks.db"))
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason,"
            " status, detected_ms, note) VALUES (?, ?, 201, 220, 'live-jump', 'open', ?, '')",
            (VENUE, Y, (START_S + 110) * 1000),
        )
    conn.close()
    at = run_app(monkeypatch, db)
    last_before, first_after = outage_window()
    y_only = (
        pd.Timestamp((START_S * 1_000_000 + 199 * 500_000), unit="us", tz="UTC"),
        pd.Timestamp((START_S + 110) * 1_000_000, unit="us", tz="UTC"),
    )
    for name, spans in (
        (Y, {(last_before, first_after), y_only}),
        (X, {(last_before, first_after)}),
    ):
        (candles,) = [f for f in figures(at) if f["layout"].get("title", {}).get("text") == name]
        shapes = [s for s in candles["layout"]["shapes"] if s.get("type") == "rect"]
        assert {(times([s["x0"]])[0], times([s["x1"]])[0]) for s in shapes} == spans, name
        assert all(s["name"].startswith(f"{name}: gap") for s in shapes), name


@pytest.mark.apptest
def test_pair_chart_breaks_at_the_outage_and_labels_bands_in_the_margin(monkeypatch, gap_db):
    at = run_app(monkeypatch, gap_db)
    pair = figure(at, "window 30")
    last_before, first_after = outage_window()
    for trace in pair["data"]:
        x = times(trace["x"])
        gaps = np.flatnonzero(np.isnan(numbers_of(trace["y"])))
        in_outage = [i for i in gaps.tolist() if last_before < x[i] < first_after]
        assert len(in_outage) == 1, trace.get("name")
    texts = {a["text"]: a for a in pair["layout"]["annotations"]}
    assert {"entry +2", "entry −2"} <= set(texts)
    assert all(a["xref"] == "paper" and a["x"] == 1 for a in texts.values())
    assert pair["layout"]["yaxis"]["exponentformat"] == "none"


@pytest.mark.apptest
def test_tables_have_human_headers_and_no_none(monkeypatch, gap_db):
    at = run_app(monkeypatch, gap_db)
    at.button(key="run_stats").click().run()
    assert not at.exception
    for column in ("verdict", "zscore", "eg_pvalue", "time"):
        element = table(at, column)
        labels = headers(element)
        assert element.proto.placeholder == numbers.DASH, column
        for name, label in labels.items():
            assert "_" not in label or label == name == "_index", (column, name, label)
    tests = headers(table(at, "verdict"))
    assert tests["p-value"] == "p-value" and tests["5% critical"] == "5% critical value"
    per_bar = headers(table(at, "zscore"))
    assert per_bar[f"{Y}_close"] == f"{Y} close (BTC)"
    config = json.loads(table(at, "zscore").proto.columns)
    assert config[f"{Y}_close"]["type_config"]["format"] == "%.8f"
    assert config[f"{X}_close"]["type_config"]["format"] == "%.5f"


@pytest.mark.apptest
def test_backtest_trades_show_prices_at_their_decimals_and_pnl_in_bps(monkeypatch, gap_db):
    at = run_app(monkeypatch, gap_db)
    at.number_input(key="bt_entry").set_value(1.0).run()
    assert not at.exception
    element = table(at, "closed")
    trades = element.value
    assert len(trades), "the fixture's spread reverts: it trades"
    np.testing.assert_allclose(trades["net_pnl_bps"], 1e4 * trades["net_pnl"])
    config = json.loads(element.proto.columns)
    assert config["entry_y"]["label"] == f"Entry {Y} (BTC)"
    assert config["entry_y"]["type_config"]["format"] == "%.8f"
    assert config["entry_x"]["type_config"]["format"] == "%.5f"
    shown = list(element.proto.column_order)
    assert "net_pnl" not in shown and "net_pnl_bps" in shown  # bps, not 0.0000x


def test_the_csv_export_keeps_the_prices_as_received(gap_db):
    view = View(venue=VENUE, y=Y, x=X, lookback_s=3600, window=30)
    pair = pipeline.compute_pair(pipeline.DbSource(pipeline.ReadOnlyDB(gap_db)), view)
    text = export.to_csv(export.bars_frame(pair)).decode()
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    stored = stored_closes(gap_db, Y)
    seconds = pd.DatetimeIndex(pd.to_datetime(frame["time"], utc=True)).as_unit("s").asi8
    checked = 0
    for second, cell, empty in zip(seconds, frame[f"{Y}_close"], frame[f"{Y}_empty"], strict=True):
        if empty == "False":
            assert float(cell) == stored[second]
            assert len(cell) <= len(repr(stored[second]))  # no 17-digit float noise
            checked += 1
    assert checked > 1000
    assert not any("0000000000" in c for c in frame[f"{Y}_close"] if not c.startswith("0.0"))
    assert math.isfinite(float(frame[f"{Y}_close"].iloc[-1]))


@pytest.mark.apptest
def test_live_panel_writes_last_prices_at_their_decimals_and_shades_the_outage(monkeypatch, gap_db):
    """Window 250: the live tail (3 windows, 750 bars) holds the outage."""
    at = run_app(monkeypatch, gap_db)
    at.number_input(key="window").set_value(250).run()
    assert not at.exception, [e.value for e in at.exception]
    for symbol, decimals in ((Y, 8), (X, 5)):
        last = last_price(gap_db, symbol)
        shown = next(m.value for m in at.metric if m.label == f"{symbol} last")
        assert shown == f"{last:,.{decimals}f}", symbol  # not 6 significant digits: 5.123e-05
    (live,) = [f for f in figures(at) if f["layout"].get("height") == 240]
    last_before, first_after = outage_window()
    shapes = live["layout"]["shapes"]
    shaded = [s for s in shapes if s.get("type") == "rect"]
    assert {(times([s["x0"]])[0], times([s["x1"]])[0]) for s in shaded} == {
        (last_before, first_after)
    }
    assert {s["name"].split(":")[0] for s in shaded} == {Y, X}  # each leg's outage
    lines = sorted(s["y0"] for s in shapes if s.get("type") == "line")
    assert lines == [-2, 0, 2]  # ±entry and the mean, drawn across the panel
    assert all(s["xref"] == "x domain" for s in shapes if s.get("type") == "line")
    (trace,) = live["data"]
    x = times(trace["x"])
    breaks = np.flatnonzero(np.isnan(numbers_of(trace["y"])))
    assert [i for i in breaks.tolist() if last_before < x[i] < first_after] != []
