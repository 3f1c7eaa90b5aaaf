"""Issue 13 on the page: every headline statistic shown with its size and uncertainty, or
"n too small" where it means nothing yet; values compared with quant called directly on
closes read straight from SQL (never with numbers copied from the page)."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import analytics
from pairs_monitor.page import pipeline, settings
from pairs_monitor.page.settings import View
from tests.helpers.page_db import build_pair_db

APP = str(Path(__file__).resolve().parent.parent / "app.py")
Y, X = "BTCUSDT", "ETHUSDT"  # the sidebar's default pair on the fixture


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("stats") / "ticks.db")


@pytest.fixture(scope="module")
def usdm_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("usdm") / "ticks.db", venue="binance-usdm")


def sql_closes(
    db: Path, freq: str = "1s", venue: str = "sim", symbols: tuple[str, ...] = (Y, X)
) -> pd.DataFrame:
    """Aligned closes straight from SQL, resampled by analytics."""
    conn = sqlite3.connect(db)
    closes = {}
    for sym in symbols:
        raw = pd.read_sql_query(
            "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume,"
            " trade_count FROM bars_1s WHERE venue = ? AND symbol = ? ORDER BY bar_time_s",
            conn,
            params=(venue, sym),
        )
        raw.index = pd.to_datetime(raw.pop("bar_time_s"), unit="s", utc=True)
        closes[sym] = analytics.resample_bars(raw, freq)["close"]
    conn.close()
    return analytics.align_closes(closes)


def eg_residual(closes: pd.DataFrame) -> pd.Series:
    """The Engle-Granger residual of log Y on log X, from quant directly."""
    ly, lx = np.log(closes[Y]), np.log(closes[X])
    eg = analytics.engle_granger(ly, lx)
    return ly - eg.hedge_ratio * lx - eg.intercept


def run_app(monkeypatch, db: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def verdict_table(at: AppTest) -> pd.DataFrame:
    return next(f.value for f in at.dataframe if "verdict" in f.value.columns)


def captions(at: AppTest) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(c.value)) for c in at.caption)


HALF_LIFE = "Half-life of the Engle-Granger residual"
HURST = "Hurst exponent of the Engle-Granger residual"


@pytest.mark.apptest
def test_statistics_tab_shows_half_life_interval_hurst_johansen_case_and_slope_ci(
    monkeypatch, pair_db
):
    at = run_app(monkeypatch, pair_db)
    at.button(key="run_stats").click().run()
    assert not at.exception
    closes = sql_closes(pair_db)
    resid = eg_residual(closes)
    hl = analytics.half_life_fit(resid, legs=2)  # a fitted 2-leg residual
    # The fixture's last 20 s shock Y away from the relation: over the whole window the
    # residual's reversion is not significant, and the page says so with quant's reason.
    assert not hl.mean_reverting
    assert metric(at, HALF_LIFE) == "∞: no mean reversion"
    text = captions(at)
    assert hl.reason in text
    h = analytics.hurst_fit(resid)
    assert metric(at, HURST) == f"{h.hurst:.3f}"
    assert f"lags {h.min_lag}..{h.max_lag} bars, n = {h.nobs:,}" in text
    help_text = next(m.help for m in at.metric if m.label == HURST)
    assert "not a test" in help_text and "microstructure" in help_text
    # Johansen: the row names its case, the caption its critical values' source.
    jo = analytics.johansen(closes[[Y, X]].apply(np.log))
    table = verdict_table(at)
    assert "restricted constant" in table["test"].iloc[3]
    assert jo.critical_values_source in text
    assert table["statistic"].iloc[3] == pytest.approx(jo.statistic, rel=1e-9)
    assert table["n"].iloc[2] == analytics.engle_granger(np.log(closes[Y]), np.log(closes[X])).nobs
    # The static fit: its HAC interval, the kind of standard error, and when it means anything.
    fit = analytics.hedge_ratio(np.log(closes[Y]), np.log(closes[X]))
    lo, hi = fit.slope_ci
    assert f"[{lo:.6g}, {hi:.6g}] ({fit.stderr_kind})" in text
    assert "HAC" in fit.stderr_kind
    assert "only if Engle-Granger rejects" in text


@pytest.mark.apptest
def test_under_the_minimum_the_tab_says_n_too_small_with_n_and_the_minimum(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    at.select_slider(key="timeframe").set_value("1m")
    at.number_input(key="window").set_value(5).run()
    at.button(key="run_stats").click().run()
    assert not at.exception
    n = len(sql_closes(pair_db, "1min"))
    assert n < settings.MIN_TEST_OBS
    expected = f"n too small: {n:,} observations, needs {settings.MIN_TEST_OBS}"
    johansen = f"n too small: {n:,} observations, needs {settings.MIN_JOHANSEN_OBS}"
    table = verdict_table(at)
    assert list(table["verdict"]) == [expected] * 3 + [johansen]
    assert table["statistic"].isna().all() and table["p-value"].isna().all()
    assert metric(at, HALF_LIFE) == "n too small"
    assert metric(at, HURST) == "n too small"
    assert expected in captions(at)


def test_hurst_waits_for_its_own_minimum_while_the_tests_run(pair_db):
    # 15 s bars over 20 minutes: 80 bars, enough for ADF and Engle-Granger (50), not for
    # Hurst or Johansen (100 each).
    db = pipeline.ReadOnlyDB(pair_db)
    try:
        view = View(venue="sim", y=Y, x=X, timeframe="15s", window=20)
        stats = pipeline.statistics(pipeline.compute_pair(pipeline.DbSource(db), view))
    finally:
        db.close()
    closes = sql_closes(pair_db, "15s")
    n = len(closes)
    assert settings.MIN_TEST_OBS <= n < settings.MIN_HURST_BARS
    eg = analytics.engle_granger(np.log(closes[Y]), np.log(closes[X]))
    assert stats.engle_granger.statistic == pytest.approx(eg.statistic, rel=1e-12)
    assert stats.too_small == {
        "hurst": f"n too small: {n} bars, needs 100",
        "johansen": f"n too small: {n} observations, needs {settings.MIN_JOHANSEN_OBS}",
    }
    assert stats.johansen is None
    assert math.isnan(stats.hurst)
    assert math.isnan(analytics.hurst(eg_residual(closes)))  # quant refuses it too
    hl = analytics.half_life_fit(eg_residual(closes), legs=2)
    assert stats.half_life_bars == pytest.approx(hl.half_life, rel=1e-12)


def test_hurst_minimum_is_quants(pair_db):
    from pairs_monitor.quant.stationarity import HURST_MIN_BARS

    assert settings.MIN_HURST_BARS == HURST_MIN_BARS


def test_unrelated_legs_show_no_mean_reversion_with_its_reason(pair_db):
    # SOLUSDT is an independent walk: the half-life is "no mean reversion", said with why.
    db = pipeline.ReadOnlyDB(pair_db)
    try:
        view = View(venue="sim", y="SOLUSDT", x=X)
        stats = pipeline.statistics(pipeline.compute_pair(pipeline.DbSource(db), view))
    finally:
        db.close()
    assert stats.engle_granger.pvalue > 0.05
    assert math.isinf(stats.half_life_bars)
    assert stats.half_life is not None and stats.residual is not None
    assert stats.half_life.reason.startswith("no mean reversion")
    assert stats.half_life == analytics.half_life_fit(stats.residual, legs=2)


@pytest.mark.apptest
def test_backtest_fee_defaults_to_the_venues_taker_rate_and_no_sharpe_under_a_day(
    monkeypatch, pair_db, usdm_db
):
    for db, venue, quant_venue in ((pair_db, "sim", "spot"), (usdm_db, "binance-usdm", "usdm")):
        at = run_app(monkeypatch, db)
        closes = sql_closes(db, venue=venue)
        frame = analytics.pair_frame(closes[Y], closes[X], 60, "rolling", log_prices=True)
        expected = analytics.backtest(  # quant's own default fee for the venue
            closes[Y],
            closes[X],
            frame["zscore"],
            frame["hedge_ratio"],
            2.0,
            0.5,
            venue=quant_venue,
            log_prices=True,
        )
        fee = at.number_input(key="bt_fee")
        assert fee.value == expected.fee_bps[0] == expected.fee_bps[1]
        assert venue in fee.help.replace("\\", "")  # the venue is markdown-escaped
        assert metric(at, "Total return") == f"{100 * expected.total_return:.2f}%"
        # 20 minutes of bars: quant gives no Sharpe, the page says why instead of a number.
        assert expected.sharpe is None and expected.sharpe_note
        assert metric(at, "Sharpe (annualised)") == "n too small"
        # 1,200 one-second bars cover 1,200 s (their count times the bar length).
        assert "n too small: 1,200 seconds of bars, needs 86,400" in captions(at)


@pytest.mark.parametrize(("delta", "obs_var"), [(None, None), (1e-4, 1e-3)])
def test_kalman_hedge_path_and_band_are_quants_on_log_prices(pair_db, delta, obs_var):
    db = pipeline.ReadOnlyDB(pair_db)
    try:
        view = View(
            venue="sim", y=Y, x=X, method="kalman", kalman_delta=delta, kalman_obs_var=obs_var
        )
        pair = pipeline.compute_pair(pipeline.DbSource(db), view)
        paths = pipeline.hedge_paths(pair)
    finally:
        db.close()
    closes = sql_closes(pair_db)
    ly, lx = np.log(closes[Y]), np.log(closes[X])
    ref = analytics.kalman_hedge_ratio(
        ly, lx, delta, obs_var, init_window=max(60, settings.KALMAN_MIN_INIT), log_prices=True
    )
    np.testing.assert_allclose(paths[pipeline.KALMAN_PATH], ref["slope_pred"], rtol=1e-9)
    low, high = pipeline.KALMAN_BAND
    band = 2 * ref["slope_pred_std"]
    np.testing.assert_allclose(paths[low], ref["slope_pred"] - band, rtol=1e-9)
    np.testing.assert_allclose(paths[high], ref["slope_pred"] + band, rtol=1e-9)
    # Both noise modes draw a hedge over (nearly) the whole lookback (issue 13, finding 3).
    assert paths[pipeline.KALMAN_PATH].notna().mean() > 0.9
    assert pair.frame is not None and pair.frame["zscore"].notna().mean() > 0.9
    both = paths[[low, high]].dropna()
    assert len(both) and (both[high] >= both[low]).all()


@pytest.mark.apptest
def test_live_truth_table_half_life_is_the_fitted_residuals(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    truth = next(f.value for f in at.dataframe if "true (simulator)" in f.value.columns)
    estimate = truth.set_index("quantity").loc["half-life (s)", "estimate"]
    tail = sql_closes(pair_db).tail(300).apply(np.log)  # the live tail: max(3 x 60, 300) bars
    fit = analytics.hedge_ratio(tail[Y], tail[X])
    hl = analytics.half_life_fit(tail[Y] - fit.slope * tail[X] - fit.intercept, legs=2)
    assert estimate == pytest.approx(hl.half_life, rel=1e-9)  # 1 s bars


def test_a_mean_reverting_spread_shows_its_half_life_with_the_interval():
    # A seeded OU spread of known phi: the tab's text carries quant's estimate and interval.
    from pairs_monitor.page.tabs import statistics as stats_tab

    rng = np.random.default_rng(5)
    n, phi = 2000, 0.9
    index = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC")
    log_x = np.log(100.0) + np.cumsum(rng.normal(0, 1e-3, n))
    s = np.zeros(n)
    for t in range(1, n):
        s[t] = phi * s[t - 1] + rng.normal(0, 5e-4)
    frames = {
        name: pd.DataFrame(
            {
                "open": p,
                "high": p,
                "low": p,
                "close": p,
                "volume": 1.0,
                "quote_volume": p,
                "taker_buy_volume": 0.5,
                "trades": 1,
                "vwap": p,
                "empty": False,
            },
            index=index,
        )
        for name, p in (("Y", np.exp(0.5 + 1.2 * log_x + s)), ("X", np.exp(log_x)))
    }
    view = View(venue="upload", y="Y", x="X", lookback_s=n, window=60)
    stats = pipeline.statistics(pipeline.compute_pair(pipeline.UploadSource(frames), view))
    ly, lx = np.log(frames["Y"]["close"]), np.log(frames["X"]["close"])
    eg = analytics.engle_granger(ly, lx)
    hl = analytics.half_life_fit(ly - eg.hedge_ratio * lx - eg.intercept, legs=2)
    assert hl.mean_reverting
    true = math.log(0.5) / math.log(phi)  # 6.6 bars
    assert hl.low < true < hl.high  # the interval covers the truth (seeded)
    value, note = stats_tab._half_life_text(stats, view)
    assert value == f"{hl.half_life:,.1f} bars ≈ {hl.half_life:,.0f} s"
    assert f"95% interval [{hl.low:,.1f}, {hl.high:,.1f}] bars" in note


@pytest.mark.apptest
def test_scanner_shows_q_values_and_out_of_sample_candidates_first(monkeypatch, pair_db):
    at = run_app(monkeypatch, pair_db)
    shown = next(f.value for f in at.dataframe if "eg_pvalue" in f.value.columns)
    assert list(shown.columns[:5]) == ["candidate", "y", "x", "eg_pvalue", "eg_qvalue"]
    closes = sql_closes(pair_db, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    expected = analytics.scan_pairs(closes, log_prices=True, min_obs=settings.MIN_TEST_OBS)
    np.testing.assert_allclose(shown["eg_qvalue"], expected["eg_qvalue"], rtol=1e-9)
    assert list(shown["candidate"]) == list(expected["candidate"])
    assert "Benjamini-Hochberg" in captions(at)
