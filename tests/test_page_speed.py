"""Issue 16, item 5 on the Pair, Backtest and Data tabs: what a control change no longer pays
for changes nothing shown. Charts draw each pixel's lowest and highest value of a long
line (every spike and every break still drawn); the hedge paths (the Kalman filter) are
computed once per view and data; the bars CSV is built on click and its preview from the
newest bars alone.
Checked against the full computations they stand in for."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor import quant
from pairs_monitor.page import cache, charts, export, pipeline
from pairs_monitor.page.settings import PREVIEW_ROWS, TABS_ENV, View
from pairs_monitor.page.tabs import Context
from pairs_monitor.page.tabs.pair import hedge_paths
from tests.helpers.page_db import build_pair_db
from tests.test_app import APP, run_app, table
from tests.test_page_gaps import numbers_of, times

DAY = 86_400


def walk(n: int = DAY, seed: int = 3) -> pd.Series:
    """A random walk of one-second bars with a one-bar spike each way and a 43 s break."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-05-01", periods=n, freq="1s", tz="UTC")
    values = pd.Series(np.cumsum(rng.normal(0, 1, n)), index=index)
    values.iloc[20_000] += 500.0
    values.iloc[60_001] -= 500.0
    return values


def test_decimation_keeps_every_buckets_lowest_and_highest_value():
    line = walk()
    buckets = 1_440  # 60 bars each: the buckets are whole minutes
    drawn = charts.decimated(line, buckets)
    assert len(drawn) <= 2 * buckets + 2
    assert drawn.index.is_monotonic_increasing and drawn.index.isin(line.index).all()
    assert (drawn == line.loc[drawn.index]).all()  # values drawn where they were
    minutes = line.to_numpy().reshape(buckets, 60)
    by_minute = drawn.groupby(pd.DatetimeIndex(drawn.index).floor("min"))
    assert np.array_equal(by_minute.min().to_numpy(), minutes.min(axis=1))
    assert np.array_equal(by_minute.max().to_numpy(), minutes.max(axis=1))
    assert drawn.max() == line.iloc[20_000] and drawn.min() == line.iloc[60_001]  # the spikes


def test_decimation_keeps_a_break_a_break_and_leaves_short_lines_whole():
    line = walk().drop(walk().index[40_000:40_043])  # 43 s with no bar
    broken = charts.with_breaks(line, max_bars=5)
    drawn = charts.decimated(broken)
    assert len(drawn) <= 3 * charts.MAX_BUCKETS + 2
    gaps = np.flatnonzero(np.isnan(numbers_of(drawn.to_numpy())))
    (gap,) = gaps.tolist()
    assert line.index[39_999] < drawn.index[gap] < line.index[40_000]
    short = broken.iloc[:3_000]
    assert charts.decimated(short) is short


def test_pair_panels_draw_a_day_from_a_few_thousand_points_with_every_extreme():
    z = walk() / 50
    frame = pd.DataFrame({"spread": walk(seed=4), "zscore": z, "corr": np.tanh(z / 10)})
    fig = charts.pair_panels(frame, 2.0, 0.5, "day")
    for trace, column in zip(fig.data, ("spread", "zscore", "corr"), strict=True):
        assert len(trace.y) <= 3 * charts.MAX_BUCKETS + 2
        drawn = numbers_of(trace.y)
        assert np.nanmax(drawn) == frame[column].max(), column
        assert np.nanmin(drawn) == frame[column].min(), column
    lines = [(s.yref, s.y0) for s in fig.layout.shapes if s.type == "line"]
    assert sorted(lines) == [("y2", -2.0), ("y2", -0.5), ("y2", 0.5), ("y2", 2.0)]


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory):
    return build_pair_db(tmp_path_factory.mktemp("speed") / "ticks.db")


@pytest.mark.parametrize(
    ("method", "log_prices"),
    [("ols", True), ("huber", False), ("rolling", True), ("kalman", True), ("theil-sen", True)],
)
def test_hedge_paths_cached_are_the_pipelines(pair_db, method, log_prices):
    source = pipeline.DbSource(pipeline.ReadOnlyDB(pair_db))
    view = View(
        venue="sim", y="ETHUSDT", x="BTCUSDT", window=45, method=method, log_prices=log_prices
    )
    pair = pipeline.compute_pair(source, view)
    ctx = Context(str(pair_db), source, view)
    expected = pipeline.hedge_paths(pair)
    kept = hedge_paths(ctx, pair)
    pd.testing.assert_frame_equal(kept, expected)
    # New z bands change no path: the kept frame is shown again, not recomputed.
    banded = replace(view, z_entry=3.0, z_exit=1.0)
    assert hedge_paths(ctx, replace(pair, view=banded)) is kept
    # Another window is another key (the Kalman's initial window is the view's).
    other = pipeline.compute_pair(source, replace(view, window=90))
    pd.testing.assert_frame_equal(hedge_paths(ctx, other), pipeline.hedge_paths(other))


def test_the_bars_preview_is_the_newest_rows_of_the_full_export(pair_db):
    source = pipeline.DbSource(pipeline.ReadOnlyDB(pair_db))
    pair = pipeline.compute_pair(source, View(venue="sim", y="ETHUSDT", x="BTCUSDT", window=30))
    full = export.bars_frame(pair)
    preview = export.bars_frame(pair, last=20)
    pd.testing.assert_frame_equal(preview, full.tail(20).reset_index(drop=True))
    assert len(export.bar_times(pair)) == len(full)


@pytest.mark.apptest
def test_the_data_tab_builds_its_bars_file_on_click_and_previews_the_newest_bars(
    monkeypatch, pair_db
):
    at: AppTest = run_app(monkeypatch, pair_db)
    (button,) = [b for b in at.get("download_button") if b.proto.id.endswith("dl_bars")]
    assert button.proto.HasField("deferred_file_id") and not button.proto.url
    preview = table(at, "time", "BTCUSDT_close")
    assert len(preview) == PREVIEW_ROWS
    newest = sqlite3.connect(pair_db).execute("SELECT max(bar_time_s) FROM bars_1s").fetchone()[0]
    assert times(preview["time"])[-1] == pd.Timestamp(newest, unit="s", tz="UTC")
    caption = next(c.value for c in at.caption if " rows × " in c.value)
    assert int(caption.split(": ")[1].split(" rows")[0].replace(",", "")) > PREVIEW_ROWS


def test_the_live_chart_put_together_unvalidated_is_what_plotly_validates_it_to():
    """charts.live_z skips Plotly's validation of each refresh's figure: the figure must be
    one Plotly would have written itself, and the layout kept between refreshes must not
    take on what a figure built from it is given."""
    index = pd.date_range("2024-05-01", periods=900, freq="1s", tz="UTC")
    line = pd.Series(np.random.default_rng(5).normal(0, 1, 900), index=index)
    frame = pd.DataFrame({"zscore": line}).drop(line.index[300:350])
    outage = charts.Outage(line.index[299], line.index[350], "BTCUSDT: gap open", "open", "BTCUSDT")
    fig = charts.live_z(frame, 2.0, outages=[outage])
    spec = fig.to_dict()
    written = json.loads(pio.to_json(spec, validate=False))
    assert json.loads(pio.to_json(go.Figure(spec))) == written  # validating changes nothing
    (trace,) = spec["data"]
    breaks = np.flatnonzero(np.isnan(numbers_of(trace["y"])))
    assert len(breaks) == 1 and line.index[299] < times(trace["x"])[breaks[0]] < line.index[350]
    assert [s["type"] for s in spec["layout"]["shapes"]] == ["line", "line", "line", "rect"]
    fig.update_layout(height=999)
    fig.add_vrect(x0=line.index[0], x1=line.index[1])
    again = charts.live_z(frame, 2.0, outages=[outage])
    assert json.loads(pio.to_json(again, validate=False)) == written
    other = charts.live_z(frame, 1.5).to_dict()
    assert sorted(s["y0"] for s in other["layout"]["shapes"]) == [-1.5, 0.0, 1.5]


def test_the_correlation_scan_depends_on_the_bars_and_not_on_the_pair_or_its_fit(pair_db):
    """The Correlation tab keys its scan by ``correlation_inputs``: every view with the same
    inputs must give the same matrix and scan, and a view that changes them another key."""
    source = pipeline.DbSource(pipeline.ReadOnlyDB(pair_db))
    view = View(venue="sim", y="ETHUSDT", x="BTCUSDT", window=45)
    end_s = pipeline.end_of_view(source, view.legs)
    assert end_s is not None
    matrix, scan = pipeline.correlation(source, view, end_s)
    assert matrix.shape == (3, 3) and len(scan) == 3  # the fixture records three legs
    refit = replace(
        view, y="BTCUSDT", x="ETHUSDT", window=90, method="kalman", z_entry=3.0, z_exit=1.0
    )
    assert pipeline.correlation_inputs(refit) == pipeline.correlation_inputs(view)
    matrix_again, scan_again = pipeline.correlation(source, refit, end_s)
    pd.testing.assert_frame_equal(matrix_again, matrix)
    pd.testing.assert_frame_equal(scan_again, scan)
    for changed in (
        replace(view, log_prices=False),
        replace(view, lookback_s=600),
        replace(view, timeframe="5s"),
        replace(view, min_volume=0.5),  # about half the bars (the fixture trades 2 a second)
    ):
        assert pipeline.correlation_inputs(changed) != pipeline.correlation_inputs(view)
        assert not pipeline.correlation(source, changed, end_s)[1].equals(scan)


def open_on(monkeypatch, db, tab: str) -> AppTest:
    """The page on ``db`` opened on ``tab``, computing that tab alone (the default)."""
    monkeypatch.setenv("TICKS_DB", str(db))
    monkeypatch.setenv(TABS_ENV, "open")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["tab"] = tab
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.apptest
def test_a_window_change_on_the_correlation_tab_does_not_scan_again(monkeypatch, pair_db):
    scans = []
    correlation = pipeline.correlation

    def counted(*args):
        scans.append(args[1])
        return correlation(*args)

    monkeypatch.setattr(pipeline, "correlation", counted)
    cache.cached_call.clear()  # another test of this database may have scanned it already
    at = open_on(monkeypatch, pair_db, "Correlation")
    assert len(scans) == 1 and at.session_state["tab_runs"] == {"Correlation": 1}
    shown = table(at, "eg_pvalue")
    at.session_state["tab"] = "Correlation"
    at.number_input(key="window").set_value(scans[0].window + 30).run()
    assert at.session_state["tab_runs"] == {"Correlation": 2}
    assert len(scans) == 1  # the heatmap and the scan are drawn again from the kept result
    pd.testing.assert_frame_equal(table(at, "eg_pvalue"), shown)
    at.session_state["tab"] = "Correlation"
    at.toggle(key="log_prices").set_value(not scans[0].log_prices).run()
    assert len(scans) == 2 and scans[1].log_prices != scans[0].log_prices


@pytest.mark.apptest
def test_a_window_change_on_the_prices_tab_fits_nothing_and_redraws_no_chart(monkeypatch, pair_db):
    built: list[str] = []
    fits: list[int] = []
    for name in ("candles", "normalised"):
        drawn = getattr(charts, name)

        def counted(*args, _drawn=drawn, _name=name, **kwargs):
            built.append(_name)
            return _drawn(*args, **kwargs)

        monkeypatch.setattr(charts, name, counted)
    pair_frame = quant.pair_frame

    def fitted(*args, **kwargs):
        fits.append(args[2])  # the window
        return pair_frame(*args, **kwargs)

    monkeypatch.setattr(quant, "pair_frame", fitted)
    at = open_on(monkeypatch, pair_db, "Prices")
    assert sorted(built) == ["candles", "candles", "normalised"] and fits == []
    shown = [chart.proto.spec for chart in at.get("plotly_chart")]
    for window in (45, 90):
        at.session_state["tab"] = "Prices"
        at.number_input(key="window").set_value(window).run()
        assert len(built) == 3 and fits == []  # no fit, no chart built again
        assert [chart.proto.spec for chart in at.get("plotly_chart")] == shown
    at.session_state["tab"] = "Prices"
    at.number_input(key="min_trades").set_value(3).run()  # every bar below it: no closes
    assert len(built) == 3 and fits == []  # the candles are the same bars: kept
    assert "Waiting for bars where both legs have traded" in " ".join(i.value for i in at.info)
    at.session_state["tab"] = "Prices"
    at.selectbox(key="lookback").set_value("15 min").run()
    assert sorted(built[3:]) == ["candles", "candles"] and fits == []  # other bars: drawn
    candles = [c for c in at.get("plotly_chart") if "candles" in c.proto.id]
    assert len(candles) == 2 and [c.proto.spec for c in candles] != shown[:2]
