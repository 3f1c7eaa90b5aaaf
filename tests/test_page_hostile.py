"""The page over a database whose names are hostile: markdown, HTML and spreadsheet
formulas in symbols and venues are shown as text, never rendered or run.

Real fixture databases (written by the TradeWriter, then renamed as if the tape had
carried these names), the page run by AppTest, the exports built by the page's own code.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import export, pipeline, queries
from pairs_monitor.page.alert_rules import AlertStore, new_rule
from pairs_monitor.page.settings import Leg, View
from pairs_monitor.page.text import md, plot
from tests.helpers.page_db import add_firing, build_pair_db, rename_series

APP = str(Path(__file__).resolve().parent.parent / "app.py")
IMAGE_URL = "http://127.0.0.1:9/x.png"
Y = f"![x]({IMAGE_URL})[a](http://b)**B**"  # was ETHUSDT
X = '=HYPERLINK("http://127.0.0.1:9/","x")'  # was BTCUSDT
Z = "@SUM(1+1)"  # was SOLUSDT
VENUE = "<img src=http://127.0.0.1:9/v.png>[v](http://c)"


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory) -> Path:
    path = build_pair_db(tmp_path_factory.mktemp("hostile") / "ticks.db")
    rename_series(path, {"ETHUSDT": Y, "BTCUSDT": X, "SOLUSDT": Z}, ("sim", VENUE))
    return path


_CODE_SPAN = re.compile(r"(`+).*?\1", re.S)
_LINK = re.compile(r"(?<!\\)!?(?<!\\)\[[^\]]*(?<!\\)\]\(")
_TAG = re.compile(r"(?<!\\)<\s*(img|a)\b", re.I)


def rendered_markup(body: str) -> list[str]:
    """Links, images or tags a CommonMark renderer would draw from ``body``: unescaped
    ``[..](`` / ``![..](`` and raw ``<img`` / ``<a`` outside code spans."""
    outside = _CODE_SPAN.sub("", body)
    return _LINK.findall(outside) + _TAG.findall(outside)


def markdown_bodies(at: AppTest) -> list[str]:
    """Every text the page passed to Streamlit that Streamlit renders as markdown."""
    bodies: list[str] = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "toast"):
        bodies += [str(e.value) for e in getattr(at, kind)]
    bodies += [str(m.label) for m in at.metric] + [str(m.help or "") for m in at.metric]
    bodies += [str(e.label) for e in at.expander]
    return bodies


@pytest.mark.apptest
def test_hostile_symbols_and_venue_are_shown_as_text(monkeypatch, hostile_db):
    store = AlertStore(hostile_db)
    rule_id = store.add_rule(new_rule("price_above", Leg(VENUE, Y), 1e-6, 5e-7))
    store.close()
    # Fired by the daemon, whose message names the symbol and venue: a banner until acked.
    message = f"Rule {rule_id}, {Y} on {VENUE}: price above 1e-06 fired"
    add_firing(
        hostile_db, rule_id, message, 1.0, deliveries=(("c", VENUE, "sent", 1, None, None, 1),)
    )
    monkeypatch.setenv("TICKS_DB", str(hostile_db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # Both hostile legs are the pair on screen (in the order the daemon recorded them).
    assert {at.selectbox(key="y").value, at.selectbox(key="x").value} == {Y, X}
    bodies = markdown_bodies(at)
    drawn = {b: rendered_markup(b) for b in bodies if rendered_markup(b)}
    assert drawn == {}
    # The names are on the page, escaped: the metric labels, the alert, the stale banner.
    assert f"{md(Y)} last" in [m.label for m in at.metric]
    assert f"{md(X)} last" in [m.label for m in at.metric]
    assert any(md(message) in str(e.value) for e in at.error)
    assert any(md(VENUE) in b for b in bodies)
    # Markdown parsing of the escaped form gives back exactly the stored name.
    assert re.sub(r"\\(.)", r"\1", md(Y)) == Y


def test_rendered_markup_finds_what_a_renderer_would_draw():
    """The checker itself: it sees the raw hostile names, not their escaped forms."""
    assert rendered_markup(Y) and rendered_markup(VENUE)
    assert not rendered_markup(md(Y)) and not rendered_markup(md(VENUE))
    assert not rendered_markup(f"`{Y}`")


def test_plotly_text_is_escaped_in_every_chart(hostile_db):
    """Plotly draws <a href> from titles, legends and tick labels: the charts get entities."""
    db = pipeline.ReadOnlyDB(hostile_db)
    try:
        view = View(VENUE, Y, X, lookback_s=3600, window=30)
        pair = pipeline.compute_pair(pipeline.DbSource(db), view)
        assert pair.frame is not None and pair.closes is not None, pair.waiting
        from pairs_monitor.page import charts

        candle = charts.candles(pair.bars[Y], f"<a href='http://b'>{Y}</a>")
        heat = charts.heatmap(pd.DataFrame([[1.0]], index=[VENUE], columns=[VENUE]), VENUE)
        normal = charts.normalised(pair.closes)
    finally:
        db.close()
    texts = [
        candle.layout.title.text,
        *[t.name for t in candle.data],
        heat.layout.title.text,
        *heat.data[0].x,
        *heat.data[0].y,
        *[t.name for t in normal.data],
    ]
    assert all("<" not in t for t in texts), texts
    assert plot(VENUE) in heat.data[0].x


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cells(data: bytes) -> tuple[list[str], list[list[str]]]:
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    return list(frame.columns), frame.to_numpy().tolist()


def assert_no_formula(data: bytes) -> None:
    header, rows = csv_cells(data)
    for cell in [*header, *(c for row in rows for c in row)]:
        if cell.startswith(FORMULA_START):
            # A number (a negative price or z-score) is data, not a formula.
            float(cell)


def test_every_export_neutralises_formula_cells(hostile_db):
    db = pipeline.ReadOnlyDB(hostile_db)
    try:
        source = pipeline.DbSource(db)
        view = View(VENUE, Y, X, lookback_s=3600, window=30)
        pair = pipeline.compute_pair(source, view)
        assert pair.frame is not None, pair.waiting
        bars = export.to_csv(export.bars_frame(pair))
        stats = export.to_csv(export.stats_frame(pipeline.stats_table(pair)))
        assert pair.end_s is not None
        start_us = int(pair.bars[Y].index[0].value // 1000)
        ticks = export.to_csv(
            pd.concat(
                db.run(queries.ticks, VENUE, s, start_us, pair.end_s * 1_000_000, 1000)
                for s in (Y, X, Z)
            )
        )
    finally:
        db.close()
    for data in (bars, stats, ticks):
        assert_no_formula(data)
    header, _rows = csv_cells(bars)
    assert f"'{X}_close" in header and f"{Y}_close" in header
    _header, rows = csv_cells(ticks)
    symbols = {r[2] for r in rows}
    assert symbols == {Y, f"'{X}", f"'{Z}"}  # text quoted once, the rest unchanged
    # Numbers are written as numbers: negative z-scores stay negative.
    frame = pd.read_csv(io.BytesIO(bars))
    assert frame["zscore"].min() < 0 and pd.api.types.is_float_dtype(frame["zscore"])


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-x", "@A1", "\tx", "\rx"])
def test_to_csv_prefixes_each_formula_lead(cell):
    data = export.to_csv(pd.DataFrame({"s": [cell, "ok"], "n": [-1.5, 2.0]}))
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert frame["s"].tolist() == ["'" + cell, "ok"]
    assert frame["n"].tolist() == ["-1.5", "2"]
