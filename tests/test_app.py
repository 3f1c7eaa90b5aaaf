"""The page, run headless with Streamlit's AppTest over real SQLite files made by the writer."""

from __future__ import annotations

import io
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import analytics
from pairs_monitor.page import export, pipeline
from pairs_monitor.page.settings import View
from pairs_monitor.page.tabs import TAB_NAMES
from tests.helpers.page_db import (
    START_S,
    TRUE_SLOPE,
    build_empty_db,
    build_pair_db,
    pair_trades,
    true_half_life_s,
)

pytestmark = pytest.mark.apptest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("dash") / "ticks.db")


def run_app(monkeypatch, db: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def table(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table on the page with these columns (st.dataframe has no test key)."""
    for frame in at.dataframe:
        value = frame.value
        if set(columns) <= set(value.columns):
            return value
    raise KeyError(columns)


def has_table(at: AppTest, column: str) -> bool:
    return any(column in f.value.columns for f in at.dataframe)


def texts(elements) -> str:
    """The elements' texts as a reader sees them: markdown backslash escapes (``text.md``
    escapes every stored value) removed."""
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def test_every_tab_renders_over_a_fixture_database(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    assert [t.label for t in at.tabs] == list(TAB_NAMES)
    # Live: prices, z, hedge, correlation; simulated data plainly marked.
    # The z-score, independently: SQL closes, the live tail (max(3 x 60, 300) = 300 bars),
    # analytics.pair_frame with the sidebar's defaults (OLS, log prices, window 60).
    tail = sql_closes(pair_db).tail(300)
    z = analytics.pair_frame(tail["BTCUSDT"], tail["ETHUSDT"], 60, "ols", True)["zscore"]
    assert metric(at, "z-score") == f"{z.iloc[-1]:.2f}" and abs(z.iloc[-1]) > 0.5
    assert metric(at, "BTCUSDT last") != "—"
    assert "SIMULATED" in texts(at.warning)
    assert "Feed health" in texts(at.subheader)
    # Statistics: the slow tests run when asked.
    assert not has_table(at, "verdict")
    at.button(key="run_stats").click().run()
    assert not at.exception
    tests = table(at, "verdict")
    assert list(tests["test"]) == [
        "ADF on BTCUSDT (unit root in the leg?)",
        "ADF on ETHUSDT (unit root in the leg?)",
        "Engle-Granger: ADF on the OLS residual of BTCUSDT on ETHUSDT",
        "Johansen trace, restricted constant (in the cointegrating relation)",
    ]
    assert "Half-life of the Engle-Granger residual" in [m.label for m in at.metric]
    # Backtest, correlation, export preview all drawn.
    assert metric(at, "Closed trades").isdigit()
    assert set(table(at, "eg_pvalue")["y"]) <= {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert len(table(at, "time", "spread")) == 200


def test_widgets_change_what_is_shown(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    before = table(at, "time", "spread")
    assert (pd.to_datetime(before["time"]).diff().dropna() == pd.Timedelta("1s")).all()
    at.select_slider(key="timeframe").set_value("1m").run()
    assert not at.exception
    after = table(at, "time", "spread")
    assert (pd.to_datetime(after["time"]).diff().dropna() == pd.Timedelta("1min")).all()
    # 20 minutes of data is not enough for a 60-bar window of 1-minute bars: it says so.
    assert "more 1m bars" in texts(at.info)
    at.select_slider(key="timeframe").set_value("1s").run()
    at.selectbox(key="y").set_value("ETHUSDT")
    at.selectbox(key="x").set_value("BTCUSDT").run()
    assert not at.exception
    assert table(at, "time", "spread").columns[1] == "ETHUSDT_open"
    assert at.metric[0].label == "ETHUSDT last"
    at.selectbox(key="method").set_value("Kalman").run()
    assert not at.exception
    assert "kalman hedge is dynamic" in texts(at.markdown)
    # Kalman noise controls appear with the method; delta changes the hedge shown.
    assert at.radio(key="kalman_mode").value == "auto"
    auto_hedge = metric(at, "hedge ratio")
    at.number_input(key="kalman_delta_auto").set_value(50.0).run()
    assert not at.exception and metric(at, "hedge ratio") != auto_hedge
    at.radio(key="kalman_mode").set_value("fixed").run()
    assert not at.exception and at.number_input(key="kalman_obs_var").value == 1e-3
    # With fixed noise there is no estimation window: two diffuse bars, then the window
    # and the bar judged against it.
    # A liquidity floor above the fixture's 2 trades per second leaves no bar to analyse.
    at.number_input(key="min_trades").set_value(3).run()
    assert not at.exception
    assert "need 63 more 1s bars with both legs (0 of 63" in texts(at.info)
    at.radio(key="kalman_mode").set_value("auto").run()
    assert "need 120 more 1s bars with both legs (0 of 120" in texts(at.info)


def sql_closes(db: Path, symbols=("BTCUSDT", "ETHUSDT")) -> pd.DataFrame:
    """Aligned 1s closes straight from SQL, independently of the page's queries."""
    conn = sqlite3.connect(db)
    closes = {}
    for sym in symbols:
        raw = pd.read_sql_query(
            "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume,"
            " trade_count FROM bars_1s WHERE venue = 'sim' AND symbol = ? ORDER BY bar_time_s",
            conn,
            params=(sym,),
        )
        raw.index = pd.to_datetime(raw.pop("bar_time_s"), unit="s", utc=True)
        closes[sym] = analytics.resample_bars(raw, "1s")["close"]
    conn.close()
    return analytics.align_closes(closes)


def test_backtest_with_log_prices_sizes_legs_in_value(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    assert at.toggle(key="log_prices").value is True
    closes = sql_closes(pair_db)
    y, x = closes["BTCUSDT"], closes["ETHUSDT"]
    # The sidebar's hedge is static OLS; the backtest trades on its causal counterpart.
    frame = analytics.pair_frame(y, x, 60, "rolling", log_prices=True)

    def page_backtest(log_prices: bool) -> analytics.BacktestResult:
        # The tab's default entry and exit; its default fee is quant's own default (spot
        # taker rate: the sim venue has no fee schedule, so the page assumes spot's).
        return analytics.backtest(
            y, x, frame["zscore"], frame["hedge_ratio"], 2.0, 0.5, log_prices=log_prices
        )

    expected = page_backtest(log_prices=True)
    in_units = page_backtest(log_prices=False)
    assert expected.n_trades > 0
    assert metric(at, "Total return") == f"{100 * expected.total_return:.2f}%"
    assert metric(at, "Closed trades") == str(expected.n_trades)
    # Sizing a log-price hedge as units of x would be another backtest altogether.
    assert f"{100 * in_units.total_return:.2f}%" != metric(at, "Total return")
    trades = table(at, "closed")
    np.testing.assert_allclose(trades["pnl"], expected.trades["pnl"], rtol=1e-9)


def test_live_tab_shows_true_parameters_in_the_orientation_on_screen(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    # On screen Y = BTCUSDT, X = ETHUSDT; the fixture simulated log ETH = -5 + 1.5 log BTC.
    truth = table(at, "true (simulator)").set_index("quantity")
    hedge = truth.loc["hedge ratio (log Y on log X)"]
    assert hedge["true (simulator)"] == pytest.approx(1 / TRUE_SLOPE, rel=1e-12)
    assert truth.loc["intercept (log)", "true (simulator)"] == pytest.approx(5.0 / 1.5)
    assert truth.loc["half-life (s)", "true (simulator)"] == pytest.approx(true_half_life_s())
    # The estimates are the pair's own: the OLS hedge over the lookback, near the truth.
    closes = sql_closes(pair_db)
    fit = analytics.hedge_ratio(np.log(closes["BTCUSDT"]), np.log(closes["ETHUSDT"]))
    assert hedge["estimate"] == pytest.approx(fit.slope, rel=1e-9)
    assert 0.9 < hedge["estimate / true"] < 1.1
    # The other way round, the true ratio is the simulated one; the half-life is the same.
    at.selectbox(key="y").set_value("ETHUSDT")
    at.selectbox(key="x").set_value("BTCUSDT").run()
    swapped = table(at, "true (simulator)").set_index("quantity")
    assert swapped.loc["hedge ratio (log Y on log X)", "true (simulator)"] == TRUE_SLOPE
    assert swapped.loc["half-life (s)", "true (simulator)"] == pytest.approx(true_half_life_s())
    # Raw prices: the model's local slope b * Y / X is what a price-unit hedge estimates.
    at.toggle(key="log_prices").set_value(False).run()
    raw = table(at, "true (simulator)").set_index("quantity")
    local = raw.loc["hedge ratio in prices, b·Y/X at the last bar"]
    assert 0.8 < local["estimate / true"] < 1.25
    # A pair outside the model says so.
    at.selectbox(key="x").set_value("SOLUSDT").run()
    assert "is not a pair of the simulated model" in texts(at.caption)


def test_export_equals_analytics_output(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    preview = table(at, "time", "spread")
    # Independently: bars straight from SQL, then the analytics pipeline.
    aligned = sql_closes(pair_db)
    expected = analytics.pair_frame(aligned["BTCUSDT"], aligned["ETHUSDT"], 60, "ols", True)
    tail = expected.tail(len(preview))
    assert list(preview["time"]) == export.iso_utc(pd.DatetimeIndex(tail.index))
    for col in export.PAIR_COLUMNS:
        np.testing.assert_allclose(preview[col].to_numpy(), tail[col].to_numpy(), rtol=1e-12)
    # The CSV bytes themselves: every row of the whole export.
    view = View(venue="sim", y="BTCUSDT", x="ETHUSDT")
    pair = pipeline.compute_pair(pipeline.DbSource(pipeline.ReadOnlyDB(pair_db)), view)
    csv = pd.read_csv(io.BytesIO(export.to_csv(export.bars_frame(pair))))
    assert csv.columns[0] == "time" and csv["time"].iloc[0].endswith("Z")
    assert len(csv) == len(expected)
    for col in export.PAIR_COLUMNS:
        np.testing.assert_allclose(csv[col], expected[col], rtol=1e-12, equal_nan=True)
    name = export.file_name("bars", pair, pd.DatetimeIndex(pair.bars["BTCUSDT"].index))
    assert name == "bars_sim_BTCUSDT-ETHUSDT_1s_20240501T000000Z_20240501T001959Z.csv"


def test_empty_database_says_what_it_waits_for(monkeypatch, tmp_path):
    at = run_app(monkeypatch, build_empty_db(tmp_path / "empty.db"))
    assert "holds no bars yet" in texts(at.info)
    assert "Waiting for data" in texts(at.info)


def test_young_database_counts_the_bars_still_needed(monkeypatch, tmp_path):
    db = build_pair_db(tmp_path / "young.db", seconds=30)
    at = run_app(monkeypatch, db)
    assert "need 31 more 1s bars with both legs (30 of 61" in texts(at.info)


def test_missing_database_is_a_clear_message(monkeypatch, tmp_path):
    at = run_app(monkeypatch, tmp_path / "nowhere.db")
    assert "No database at" in texts(at.error)


def test_not_a_pairs_database_is_a_clear_message(monkeypatch, tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.close()
    at = run_app(monkeypatch, other)
    assert "db_setup.py" in texts(at.error)


def test_bad_upload_gives_a_clear_message(monkeypatch, tmp_path):
    at = run_app(monkeypatch, build_empty_db(tmp_path / "empty.db"))
    at.file_uploader(key="upload").set_value(("prices.csv", b"foo,bar\n1,2\n", "text/csv"))
    at.run()
    assert not at.exception
    message = texts(at.error)
    assert "Upload rejected" in message and "missing column(s) timestamp, open" in message


def upload_csv(seconds: int = 400, stop: dict[str, int] | None = None) -> bytes:
    """The fixture pair as a 1 s OHLC CSV; ``stop`` ends a symbol's rows after N seconds."""
    rows = pair_trades(seconds=seconds, trades_per_s=1)
    frame = pd.DataFrame(rows, columns=["venue", "symbol", "id", "t", "price", "qty", "m"])
    for symbol, after_s in (stop or {}).items():
        frame = frame[(frame["symbol"] != symbol) | (frame["t"] < (START_S + after_s) * 10**6)]
    frame["timestamp"] = pd.to_datetime(frame["t"], unit="us", utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    for col in ("open", "high", "low", "close"):
        frame[col] = frame["price"]
    csv = frame[["timestamp", "symbol", "open", "high", "low", "close", "qty"]].rename(
        columns={"qty": "volume"}
    )
    return csv.to_csv(index=False).encode()


def test_good_upload_is_analysed_without_the_daemon(monkeypatch, tmp_path):
    at = run_app(monkeypatch, build_empty_db(tmp_path / "empty.db"))
    at.file_uploader(key="upload").set_value(("bars.csv", upload_csv(), "text/csv"))
    at.run()
    assert "Read 1,200 bars" in texts(at.success)
    at.radio(key="source").set_value("Uploaded CSV").run()
    assert not at.exception
    assert metric(at, "z-score") != "—"
    assert "uploaded CSV" in texts(at.warning)
    preview = table(at, "time", "spread")
    assert preview["time"].iloc[-1] == pd.Timestamp(START_S + 399, unit="s").strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_a_stopped_leg_is_named_on_the_live_tab_and_stops_the_z_score(monkeypatch, tmp_path):
    at = run_app(monkeypatch, build_empty_db(tmp_path / "empty.db"))
    csv = upload_csv(stop={"ETHUSDT": 300})  # ETHUSDT's last bar: 100 s before BTCUSDT's
    at.file_uploader(key="upload").set_value(("bars.csv", csv, "text/csv"))
    at.run()
    at.radio(key="source").set_value("Uploaded CSV").run()
    assert not at.exception
    assert "Stale leg: ETHUSDT** has no traded bar for 100 s (100 1s bars)" in texts(at.warning)
    assert "BTCUSDT**" not in texts(at.warning)
    assert metric(at, "z-score") == "—"


def daily_csv(days: int, step: str = "1D") -> bytes:
    """Two cointegrated symbols as OHLC bars every ``step`` (a daily or weekly file)."""
    rng = np.random.default_rng(5)
    index = pd.date_range("2020-01-01", periods=days, freq=step, tz="UTC")
    log_x = np.log(100.0) + np.cumsum(rng.normal(0, 0.02, days))
    log_y = 0.5 + 0.9 * log_x + rng.normal(0, 0.01, days)
    parts = []
    for symbol, logs in (("AAA", log_y), ("BBB", log_x)):
        p = np.exp(logs)
        parts.append(
            pd.DataFrame(
                {"date": index.strftime("%Y-%m-%d"), "symbol": symbol, "open": p, "high": p}
                | {"low": p, "close": p, "volume": 1.0}
            )
        )
    return pd.concat(parts).to_csv(index=False).encode()


def test_daily_upload_is_analysed_as_daily_and_weekly_is_refused(monkeypatch, tmp_path):
    at = run_app(monkeypatch, build_empty_db(tmp_path / "empty.db"))
    at.file_uploader(key="upload").set_value(("daily.csv", daily_csv(300), "text/csv"))
    at.run()
    at.radio(key="source").set_value("Uploaded CSV").run()
    assert not at.exception
    assert "showing 1d instead of 1s" in texts(at.sidebar.warning)
    assert at.selectbox(key="lookback").value == "whole file"
    preview = table(at, "time", "spread")
    steps = pd.to_datetime(preview["time"]).diff().dropna()
    assert (steps == pd.Timedelta("1D")).all()
    assert preview["time"].iloc[-1] == "2020-10-26T00:00:00Z"  # day 300: the whole file
    assert metric(at, "z-score") != "—"
    # Weekly bars are coarser than any timeframe: refused in words, not shown as daily.
    at.file_uploader(key="upload").set_value(("weekly.csv", daily_csv(60, "7D"), "text/csv"))
    at.run()
    assert not at.exception
    assert "coarser than the coarsest timeframe" in texts(at.sidebar.error)
