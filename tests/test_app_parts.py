"""The page's parts without Streamlit: upload validation, read-only queries, the database
path rule, warm-up counts (the alert store is in tests/test_page_alert_store.py)."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import analytics
from pairs_monitor.page import pipeline, queries, settings, upload
from pairs_monitor.page.settings import DEFAULT_DB, View, resolve_db_path
from pairs_monitor.page.tabs import literal
from tests.helpers.page_db import START_S, build_pair_db


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("parts") / "ticks.db", seconds=300)


# -- the database path rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--db", "/x/a.db"], {"TICKS_DB": "/y/b.db"}, Path("/x/a.db")),
        ([], {"TICKS_DB": "/y/b.db"}, Path("/y/b.db")),
        ([], {}, DEFAULT_DB),
        (["--other", "1"], {"TICKS_DB": ""}, DEFAULT_DB),
    ],
)
def test_db_path_rule(argv, env, expected):
    assert resolve_db_path(argv, env) == expected


# -- read-only queries ---------------------------------------------------------------


def test_read_connection_cannot_write(pair_db):
    db = pipeline.ReadOnlyDB(pair_db)
    with pytest.raises(sqlite3.OperationalError):
        db.conn.execute("DELETE FROM trades")
    db.close()


def test_series_bars_and_ticks(pair_db):
    db = pipeline.ReadOnlyDB(pair_db)
    assert db.run(queries.series) == [("sim", "BTCUSDT"), ("sim", "ETHUSDT"), ("sim", "SOLUSDT")]
    bars = db.run(queries.bars_1s, "sim", "BTCUSDT", START_S, START_S + 10, 1000)
    assert len(bars) == 10 and list(bars.columns) == [*analytics.BAR_COLUMNS, "from_klines"]
    assert not bars["from_klines"].any()  # every bar of this fixture is from trades
    assert (bars["trades"] == 2).all() and str(pd.DatetimeIndex(bars.index).tz) == "UTC"
    np.testing.assert_allclose(bars["vwap"], bars["quote_volume"] / bars["volume"])
    # A limit keeps the NEWEST rows of the range (a long lookback must end at the newest
    # data), oldest first.
    newest = db.run(queries.bars_1s, "sim", "BTCUSDT", START_S, START_S + 10, 3)
    assert list(newest.index) == list(bars.index[-3:])
    pd.testing.assert_frame_equal(newest, bars.iloc[-3:])
    ticks = db.run(queries.ticks, "sim", "BTCUSDT", START_S * 10**6, (START_S + 2) * 10**6, 99)
    assert list(ticks.columns) == queries.TICK_COLUMNS and len(ticks) == 4
    assert ticks["time"].iloc[1] == "2024-05-01T00:00:00.500000Z"
    assert db.run(queries.latest_bar_s, "sim", "BTCUSDT", 2**62) == START_S + 299
    assert db.run(queries.latest_bar_s, "sim", "BTCUSDT", START_S + 100) == START_S + 100
    assert db.run(queries.latest_bar_s, "sim", "NOPE", 2**62) is None
    run = db.run(queries.latest_run, "sim")
    assert run is not None and run.source == "sim"
    assert run.params["legs"]["ETHUSDT"]["hedge_ratio"] == 1.5
    assert len(db.run(queries.feed_status, "sim")) == 3
    db.close()


@pytest.mark.parametrize("method", ["ols", "huber", "theil-sen", "rolling", "kalman"])
def test_bars_needed_is_exactly_what_pair_frame_needs(pair_db, method):
    db = pipeline.ReadOnlyDB(pair_db)
    view = View(venue="sim", y="BTCUSDT", x="ETHUSDT", window=20, method=method)
    need = pipeline.bars_needed(view)
    end = START_S + need
    enough = pipeline.compute_pair(pipeline.DbSource(db), view, end_s=end)
    assert enough.frame is not None and not np.isnan(enough.latest("zscore"))
    assert enough.frame["zscore"].notna().sum() >= 1
    short = pipeline.compute_pair(pipeline.DbSource(db), view, end_s=end - 1)
    assert short.frame is None and short.waiting is not None
    assert short.waiting.startswith("need 1 more")
    db.close()


def bars_of(prices: np.ndarray, start_s: int = START_S, freq: str = "1s") -> pd.DataFrame:
    """A bars frame (one trade a bar) with these closes."""
    start = pd.Timestamp(start_s, unit="s", tz="UTC")
    index = pd.date_range(start, periods=len(prices), freq=freq)
    p = np.asarray(prices, dtype=float)
    return pd.DataFrame(
        {
            "open": p,
            "high": p,
            "low": p,
            "close": p,
            "volume": 1.0,
            "quote_volume": p,
            "taker_buy_volume": 0.0,
            "trades": 1,
            "vwap": p,
            "empty": False,
        },
        index=index,
    )


def moving(n: int, seed: int = 0, level: float = 100.0) -> np.ndarray:
    return level * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 3e-4, n)))


def test_a_flat_x_is_said_not_fitted_with_slope_zero():
    view = View(venue="upload", y="Y", x="X", lookback_s=300, window=60, method="ols")
    flat_x = pipeline.UploadSource(
        {"Y": bars_of(moving(300, seed=1)), "X": bars_of(np.full(300, 7.0))}
    )
    pair = pipeline.compute_pair(flat_x, view)
    assert pair.frame is None and pair.waiting is not None
    assert "ols hedge cannot be fitted" in pair.waiting and "x is flat" in pair.waiting


def test_kalman_on_a_flat_first_window_runs_and_an_unfittable_pair_waits():
    view = View(venue="upload", y="Y", x="X", lookback_s=600, window=60, method="kalman")
    # Y did not trade over the first window (flat), then moves: the auto noise is floored.
    y = moving(600, seed=1, level=50.0)
    y[:60] = y[0]
    pair = pipeline.compute_pair(
        pipeline.UploadSource({"Y": bars_of(y), "X": bars_of(moving(600))}), view
    )
    assert pair.frame is not None and not np.isnan(pair.latest("zscore"))
    # X at exactly 1.0 (a stablecoin) in log prices: its level is 0, Kalman cannot scale
    # its slope noise. The panels say so instead of raising.
    flat_x = pipeline.UploadSource({"Y": bars_of(y), "X": bars_of(np.ones(600))})
    pair = pipeline.compute_pair(flat_x, view)
    assert pair.frame is None and pair.waiting is not None
    assert "kalman hedge cannot be fitted" in pair.waiting


@pytest.mark.parametrize("method", ["ols", "huber", "theil-sen", "rolling", "kalman"])
def test_statistics_do_not_call_two_independent_random_walks_cointegrated(method):
    # A rolling or Kalman spread is a one-step forecast error: ADF on it "finds" a
    # stationary spread between two unrelated walks (p ~ 1e-18). The tests must not.
    n = 1500
    source = pipeline.UploadSource(
        {"Y": bars_of(moving(n, seed=21, level=50.0)), "X": bars_of(moving(n, seed=22))}
    )
    view = View(venue="upload", y="Y", x="X", lookback_s=n, window=60, method=method)
    pair = pipeline.compute_pair(source, view)
    stats = pipeline.statistics(pair)
    tests = ("adf", "adf_y", "adf_x", "engle_granger")  # "adf": the spread, before the fix
    verdicts = [getattr(stats, t).verdict for t in tests if getattr(stats, t, None)]
    assert len(verdicts) >= 2
    assert not any(v.startswith(("stationary", "cointegrated")) for v in verdicts), verdicts
    assert stats.engle_granger.pvalue > 0.05
    # Half-life and Hurst are of the Engle-Granger (OLS) residual, computed independently.
    logs = pair.fitted()[0].apply(np.log)
    fit = analytics.hedge_ratio(logs["Y"], logs["X"])
    resid = logs["Y"] - fit.slope * logs["X"] - fit.intercept
    # legs=2: the residual was fitted, so its unit-root test uses 2-variable values.
    assert stats.half_life_bars == analytics.half_life(resid, legs=2)
    assert stats.hurst == pytest.approx(analytics.hurst(resid), rel=1e-9)
    assert math.isinf(stats.half_life_bars)  # "no mean reversion" between unrelated walks
    assert stats.half_life is not None
    assert stats.half_life.reason.startswith("no mean reversion")


def test_a_stopped_leg_stops_the_pair_rows_and_the_live_z_score():
    # Y's feed stops after 300 of 600 s; X goes on. Carrying Y's last price over the rest
    # made X alone drive the z-score (|z| up to 4.6 in the review's run).
    n = 600
    y_bars = bars_of(moving(300, seed=1, level=50.0))
    source = pipeline.UploadSource({"Y": y_bars, "X": bars_of(moving(n))})
    view = View(venue="upload", y="Y", x="X", lookback_s=n, window=60, method="rolling")
    pair = pipeline.compute_pair(source, view)
    closes, frame = pair.fitted()
    last_y = y_bars.index[-1]
    assert closes.index[-1] == last_y + settings.MAX_STALE_BARS * pd.Timedelta("1s")
    assert frame.index[-1] <= last_y + pipeline.max_staleness(view)
    assert pair.stale == {"Y": 300.0}  # 300 s between its last bar and X's newest
    assert np.isnan(pair.now("zscore")[0]) and pair.now("zscore")[1] is None
    # Both legs fresh: the newest row's value and its time.
    fresh = pipeline.compute_pair(source, replace(view, lookback_s=300), end_s=START_S + 300)
    assert fresh.stale == {}
    assert fresh.now("zscore") == (fresh.fitted()[1]["zscore"].iloc[-1], START_S + 299)


@pytest.mark.parametrize("how", ["below the floor", "empty"])
def test_masked_or_empty_bars_are_left_out_not_carried(how):
    n, gap = 400, slice(200, 230)  # 30 bars of Y that must not count as prices
    y_bars = bars_of(moving(n, seed=1, level=50.0))
    y_bars["trades"] = 3
    if how == "empty":  # no trade: the close is only the previous one carried
        for col, value in (("empty", True), ("trades", 0), ("volume", 0.0)):
            y_bars.loc[y_bars.index[gap], col] = value
    else:
        y_bars.loc[y_bars.index[gap], "trades"] = 1
    x_bars = bars_of(moving(n))
    x_bars["trades"] = 3
    source = pipeline.UploadSource({"Y": y_bars, "X": x_bars})
    floor = 2 if how == "below the floor" else 0
    view = View(venue="upload", y="Y", x="X", lookback_s=n, window=20, min_trades=floor)
    closes = pipeline.compute_pair(source, view).closes
    assert closes is not None
    times = y_bars.index
    carried = times[200 : 200 + settings.MAX_STALE_BARS]
    # The last tradable close stands in for at most MAX_STALE_BARS bars, then no rows.
    assert (closes.loc[carried, "Y"] == y_bars["close"].iloc[199]).all()
    assert not closes.index.isin(times[200 + settings.MAX_STALE_BARS : 230]).any()
    assert times[230:].isin(closes.index).all()
    assert len(closes) == n - (30 - settings.MAX_STALE_BARS)


# -- upload validation ---------------------------------------------------------------

GOOD = b"timestamp,symbol,open,high,low,close,volume\n" + b"\n".join(
    f"2024-05-01T00:0{i}:00Z,{s},{p},{p + 1},{p - 1},{p},1".encode()
    for i in range(5)
    for s, p in (("AAA", 10 + i), ("BBB", 20 + i))
)


def test_good_upload_becomes_bars():
    result = upload.parse_files([("two.csv", GOOD)])
    assert sorted(result.frames) == ["AAA", "BBB"] and result.bar_seconds == 60
    bars = result.frames["AAA"]
    assert list(bars.columns) == list(analytics.BAR_COLUMNS)
    assert bars.index[0] == pd.Timestamp("2024-05-01T00:00:00Z")


def test_upload_without_symbol_column_uses_the_file_name_and_epoch_ms():
    content = b"time,open,high,low,close\n1714521600000,1,2,0.5,1.5\n1714521601000,1,2,1,1\n"
    result = upload.parse_files([("btcusdt.csv", content)])
    assert list(result.frames) == ["BTCUSDT"] and result.bar_seconds == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"timestamp,open,high,low\n1,1,1,1\n", "missing column(s) close"),
        (b"timestamp,open,high,low,close\n", "no rows"),
        (b"timestamp,open,high,low,close\nyesterday,1,1,1,1\n", "neither ISO-8601"),
        (b"timestamp,open,high,low,close\n1,1,1,1,abc\n", "column close has 1 missing"),
        (b"timestamp,open,high,low,close\n1,1,1,1,-1\n", "non-positive"),
        (b"timestamp,open,high,low,close\n1,5,4,3,5\n", "do not bracket"),
        (b"timestamp,open,high,low,close\n1,1,1,1,1\n1,1,1,1,1\n", "duplicate timestamp"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"timestamp,open,high,low,close\n1,1,1,1,1\ninf,1,1,1,1\n", "infinite timestamp(s)"),
    ],
)
def test_bad_uploads_say_what_is_wrong(content, message):
    with pytest.raises(upload.UploadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        upload.parse_files([("x.csv", content)])


@pytest.mark.parametrize(
    ("first", "step"),
    [(1714521600 * 10**k, 10**k) for k in (0, 3, 6, 9)],  # s, ms, us, ns
)
def test_upload_epoch_units_up_to_nanoseconds(first, step):
    content = f"time,open,high,low,close\n{first},1,1,1,1\n{first + step},1,1,1,1\n".encode()
    bars = upload.parse_files([("aaa.csv", content)]).frames["AAA"]
    assert list(bars.index) == [
        pd.Timestamp("2024-05-01T00:00:00Z"),
        pd.Timestamp("2024-05-01T00:00:01Z"),
    ]


def test_upload_epoch_out_of_range_is_an_upload_error_with_the_line():
    # 1e16 is read as microseconds: year 2286, beyond what pandas holds.
    content = b"time,open,high,low,close\n1714521600000000,1,1,1,1\n9999999999999999,1,1,1,1\n"
    with pytest.raises(upload.UploadError, match=r"1 Unix timestamp\(s\) .* line\(s\) 3 "):
        upload.parse_files([("x.csv", content)])


def test_upload_size_limit():
    big = b"timestamp,open,high,low,close\n" + b"1" * (settings.MAX_UPLOAD_MB * 1_048_576 + 1)
    with pytest.raises(upload.UploadError, match="the limit is 20 MB"):
        upload.parse_files([("big.csv", big)])


# -- process settings ------------------------------------------------------------------


@pytest.mark.parametrize("script", ["app.py", "bench/bench_analytics.py", "bench/bench_page.py"])
def test_blas_threads_are_set_before_anything_imports_numpy(script):
    """Every import before the BLAS settings is ``__future__`` or ``os`` (no numpy yet)."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parent.parent / script).read_text())
    seen: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.For) and "OPENBLAS_NUM_THREADS" in ast.unparse(node):
            assert "setdefault" in ast.unparse(node) and "MKL_NUM_THREADS" in ast.unparse(node)
            break
        if isinstance(node, ast.Import):
            seen += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            seen.append(node.module or ".")  # a relative import names no module
    else:
        raise AssertionError(f"{script} does not set OPENBLAS_NUM_THREADS")
    assert set(seen) <= {"__future__", "os"}


# -- the simulator's true parameters, in the orientation on screen --------------------

SIM: dict[str, Any] = {
    "hedge_leg": "BTCUSDT",
    "legs": {
        "ETHUSDT": {"hedge_ratio": 0.8, "intercept": -0.5},
        "SOLUSDT": {"hedge_ratio": 1.6, "intercept": -12.0},
    },
    "half_life_s": 60.0,
}


@pytest.mark.parametrize(
    ("y", "x", "slope", "intercept"),
    [
        ("ETHUSDT", "BTCUSDT", 0.8, -0.5),  # as simulated
        ("BTCUSDT", "ETHUSDT", 1 / 0.8, 0.5 / 0.8),  # log B = (log E + 0.5) / 0.8
        ("SOLUSDT", "ETHUSDT", 2.0, -12.0 + 0.5 * 2.0),  # both legs of BTC: 1.6 / 0.8
        ("ETHUSDT", "SOLUSDT", 0.5, -0.5 + 12.0 * 0.5),
    ],
)
def test_true_params_in_the_orientation_on_screen(y, x, slope, intercept):
    truth = pipeline.true_pair_params(SIM, y, x)
    assert truth is not None
    assert truth.hedge_ratio == pytest.approx(slope, rel=1e-12)
    assert truth.intercept == pytest.approx(intercept, rel=1e-12)
    assert truth.half_life_s == 60.0  # orientation-free
    # The relation holds on prices built from the model (log prices, zero spreads).
    log_b = np.array([10.0, 11.0])
    legs = {"BTCUSDT": log_b}
    for sym, p in SIM["legs"].items():
        legs[sym] = p["intercept"] + p["hedge_ratio"] * log_b
    np.testing.assert_allclose(legs[y], intercept + slope * legs[x], rtol=1e-12)


def test_true_params_undefined_when_x_does_not_follow_the_hedge_leg():
    # --sim-hedge-ratio 0: a leg with ratio 0 cannot be inverted (the Live tab divided by it).
    sim = {"hedge_leg": "BTCUSDT", "half_life_s": 60.0}
    sim["legs"] = {
        "ETHUSDT": {"hedge_ratio": 0.0, "intercept": 1.0},
        "SOLUSDT": SIM["legs"]["SOLUSDT"],
    }
    for y in ("BTCUSDT", "SOLUSDT"):
        truth = pipeline.true_pair_params(sim, y, "ETHUSDT")
        assert truth is not None
        assert math.isnan(truth.hedge_ratio) and math.isnan(truth.intercept)
        assert truth.how.startswith("undefined") and truth.half_life_s == 60.0
    as_simulated = pipeline.true_pair_params(sim, "ETHUSDT", "BTCUSDT")
    assert as_simulated is not None and as_simulated.hedge_ratio == 0.0


def test_true_params_none_outside_the_model():
    assert pipeline.true_pair_params(SIM, "ETHUSDT", "XRPUSDT") is None
    assert pipeline.true_pair_params(SIM, "ETHUSDT", "ETHUSDT") is None
    assert pipeline.true_pair_params({"speed": 2}, "ETHUSDT", "BTCUSDT") is None  # replay, say


@pytest.mark.parametrize("method", ["ols", "huber", "rolling", "kalman"])
def test_page_backtest_decisions_up_to_t_ignore_prices_after_t(method):
    """Whatever hedge the sidebar shows, no trade is signalled or sized with later prices."""
    rng = np.random.default_rng(3)
    n, cut = 900, 600
    index = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC")
    x = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), index=index)
    spread = np.zeros(n)
    for t in range(1, n):  # AR(1) spread: it mean-reverts, so there are trades to check
        spread[t] = 0.95 * spread[t - 1] + rng.normal(0, 2e-3)
    y = pd.Series(np.exp(0.8 * np.log(x) + spread + 1.0), index=index)
    altered_y = y.copy()
    altered_y.iloc[cut:] *= np.linspace(1.0, 1.3, n - cut)  # a different future

    def decisions(y_prices: pd.Series):
        view = View(venue="sim", y="Y", x="X", window=60, method=method, log_prices=True)
        closes = pd.DataFrame({"Y": y_prices, "X": x})
        frame = analytics.pair_frame(closes["Y"], closes["X"], 60, method, True)
        pair = pipeline.PairData(view, None, closes=closes, frame=frame)
        return pipeline.run_backtest(pair, entry=1.5, exit_=0.0, fee_bps=2.0)

    before, after = decisions(y), decisions(altered_y)
    assert before.n_trades > 0
    # The position held over bar t is decided at t-1's close: bars up to the cut agree.
    pd.testing.assert_series_equal(before.positions.iloc[:cut], after.positions.iloc[:cut])
    pd.testing.assert_series_equal(before.equity.iloc[:cut], after.equity.iloc[:cut])


@pytest.mark.parametrize(
    ("venue", "live", "label"),
    [
        ("binance-spot", True, "spot: binance-spot (live)"),
        ("binance-usdm", True, "perp: binance-usdm (live)"),
        ("sim", False, "sim (SIMULATED)"),
        ("replay-spot", False, "replay-spot (recorded replay)"),
        ("replay-usdm-agg", False, "replay-usdm-agg (recorded replay)"),
        ("my-own-venue", False, "my-own-venue (recorded replay)"),  # --replay-venue NAME
    ],
)
def test_only_the_binance_venues_pass_for_live_data(venue, live, label):
    assert settings.is_synthetic(venue) is not live
    assert settings.venue_label(venue) == label


@pytest.mark.parametrize("text", ["plain", "a `tick`", "``double`` and `single`", "`edge`"])
def test_literal_fences_any_text(text):
    """The fence is longer than any backtick run inside, so the span cannot close early."""
    span = literal(text)
    fence = span[: span.index(" ")]
    assert set(fence) == {"`"} and fence not in text
    assert span == f"{fence} {text} {fence}"
