"""Pairs across venues on the page (issue 10): a coin's spot against its perpetual, over a
real SQLite file holding both Binance markets, their funding and a simulated leg
(``tests/helpers/page_db.build_basis_db``). The basis, the carry and the funding the
backtest books are compared with values computed here from the rows themselves: bars read
with plain SQL and pandas, the funding formula worked by hand."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import export, pipeline, queries
from pairs_monitor.page.settings import Leg, View
from tests.helpers.page_db import (
    FUNDING,
    LIVE_FUNDING,
    PERP,
    SPOT,
    START_S,
    build_basis_db,
    build_pair_db,
)

APP = str(Path(__file__).resolve().parent.parent / "app.py")
DAY = 86_400
SPOT_BTC, PERP_BTC = Leg(SPOT, "BTCUSDT"), Leg(PERP, "BTCUSDT")
SPOT_NAME, PERP_NAME = "BTCUSDT · spot", "BTCUSDT · perp"


@pytest.fixture(scope="module")
def basis_db(tmp_path_factory) -> Path:
    return build_basis_db(tmp_path_factory.mktemp("basis") / "ticks.db")


@pytest.fixture
def basis_copy(basis_db, tmp_path) -> Path:
    """A private copy, for tests that write alert rules."""
    return Path(shutil.copy(basis_db, tmp_path / "ticks.db"))


# -- independent computations -------------------------------------------------------------


def minute_closes(db: Path, leg: Leg) -> pd.Series:
    """A leg's 1-minute closes with plain SQL and pandas: the last 1 s close of each minute."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT bar_time_s, close FROM bars_1s WHERE venue = ? AND symbol = ?"
            " ORDER BY bar_time_s",
            leg,
        ).fetchall()
    finally:
        conn.close()
    seconds = np.array([r[0] for r in rows])
    closes = pd.Series([r[1] for r in rows], index=seconds // 60 * 60)
    closes = closes.groupby(level=0).last()
    closes.index = pd.to_datetime(closes.index, unit="s", utc=True)
    return closes


def view_closes(db: Path, lookback_s: int) -> pd.DataFrame:
    """Both BTCUSDT legs' 1 m closes over the lookback as the page bounds it: from the
    minute holding (newest second + 1 - lookback) to the newest bar."""
    spot, perp = minute_closes(db, SPOT_BTC), minute_closes(db, PERP_BTC)
    conn = sqlite3.connect(db)
    newest = conn.execute("SELECT max(bar_time_s) FROM bars_1s WHERE venue != 'sim'").fetchone()
    conn.close()
    start = pd.Timestamp((newest[0] + 1 - lookback_s) // 60 * 60, unit="s", tz="UTC")
    both = pd.concat({"spot": spot, "perp": perp}, axis=1, join="inner")
    return both[both.index >= start]


def settled(start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """The fixture's settled rates with start <= funding time < end."""
    times = [pd.Timestamp(START_S * 1000 + offset, unit="ms", tz="UTC") for offset, _ in FUNDING]
    rates = pd.Series([rate for _, rate in FUNDING], index=pd.DatetimeIndex(times))
    return rates[(rates.index >= start) & (rates.index < end)]


# -- the page ------------------------------------------------------------------------------


def run_app(monkeypatch, db: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def choose_spot_perp(at: AppTest, lookback: str = "24 h") -> None:
    """Y = BTCUSDT on spot (the default), X on the perpetual: the X venue alone."""
    at.selectbox(key="venue_x").set_value(PERP)
    at.select_slider(key="timeframe").set_value("1m")
    at.selectbox(key="lookback").set_value(lookback).run()
    assert not at.exception, [e.value for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(elements) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


@pytest.mark.apptest
def test_spot_against_perp_shows_basis_and_carry_as_computed_by_hand(monkeypatch, basis_db):
    at = run_app(monkeypatch, basis_db)
    assert at.selectbox(key="venue").value == SPOT
    choose_spot_perp(at)
    # Each leg labelled with its market, at once.
    assert at.selectbox(key="y").options[0] == SPOT_NAME
    assert at.selectbox(key="x").value == "BTCUSDT"
    assert at.selectbox(key="x").options == [PERP_NAME]
    assert {f"{SPOT_NAME} last", f"{PERP_NAME} last"} <= {m.label for m in at.metric}
    assert "the only leg" not in texts(at.sidebar.info)
    # The basis, by hand: (perp - spot) / spot x 10^4 on each minute of the 24 h view.
    closes = view_closes(basis_db, DAY)
    basis = (closes["perp"] - closes["spot"]) / closes["spot"] * 1e4
    assert metric(at, "Basis now (bps)") == f"{basis.iloc[-1]:.2f}"
    assert metric(at, "Basis, mean over the view (bps)") == f"{basis.mean():.2f}"
    assert 1.0 < basis.mean() < 5.0  # the fixture's 3 bps
    # The carry, by hand: the rates settled in the view, each covering 8 hours (the one at
    # 08:00:00.003 too), annualised: sum / (n x 8 h) x 365 days.
    start, end = closes.index[0], closes.index[-1] + pd.Timedelta(minutes=1)
    rates = settled(start, end)
    assert len(rates) == 3
    carry = rates.sum() / (len(rates) * 8) * 24 * 365
    assert metric(at, "Carry, annualised") == f"{100 * carry:.2f}%"
    assert f"Carry rests on 3 settlement(s) of {PERP_NAME} in the view, every 8 h" in texts(
        at.caption
    )
    next_rate = LIVE_FUNDING[1]
    assert metric(at, "Next funding, annualised") == f"{100 * next_rate * 3 * 365:.2f}%"
    # The perpetual's feed problem (a wrong route) is said on the Live tab.
    assert "wrong route: the socket delivers nothing" in texts(at.error)
    assert "non-market trades" in next(f.value for f in at.dataframe if "symbol" in f.value)


@pytest.mark.apptest
def test_too_few_settlements_are_not_shown_as_a_carry(monkeypatch, basis_db):
    at = run_app(monkeypatch, basis_db)
    choose_spot_perp(at, "4 h")  # 22:00 to 02:00: one settlement, at 24:00
    assert metric(at, "Carry, annualised") == "n too small"
    captions = texts(at.caption)
    assert "rests on 1 settlement(s), needs 3" in captions
    assert "MIN_FUNDING_SETTLEMENTS" in captions and "indicative only" in captions


@pytest.mark.apptest
def test_backtest_books_each_legs_fee_and_the_perpetuals_funding(monkeypatch, basis_db):
    at = run_app(monkeypatch, basis_db)
    choose_spot_perp(at)
    # Each leg's venue's taker rate: spot 10 bps, USD-M 5 bps.
    assert at.number_input(key="bt_fee_y").value == 10.0
    assert at.number_input(key="bt_fee_x").value == 5.0
    # Nearly always in a position, so funding times find one open.
    at.number_input(key="bt_entry").set_value(0.5)
    at.number_input(key="bt_exit").set_value(-0.4).run()
    assert not at.exception, [e.value for e in at.exception]
    trades = next(f.value for f in at.dataframe if "closed" in f.value.columns)
    closes = view_closes(basis_db, DAY)
    bar = pd.Timedelta(minutes=1)
    last_close = closes.index[-1] + bar
    rates = settled(closes.index[0], last_close)
    # By hand: a trade holds the perpetual (X) from its entry fill, at the close (the end)
    # of its entry bar, to its exit fill; every funding time in between charges
    # rate x quantity x the price of the bar holding it (a long pays a positive rate).
    expected = []
    for trade in trades.to_dict("records"):
        held_from = pd.Timestamp(trade["entry_time"]) + bar
        held_to = pd.Timestamp(trade["exit_time"]) + bar if trade["closed"] else last_close
        paid = 0.0
        for when, rate in zip(pd.DatetimeIndex(rates.index), rates, strict=True):
            if held_from <= when < held_to:
                price = float(closes["perp"][when.floor("min")])
                paid += float(rate) * float(trade["qty_x"]) * price
        expected.append(paid)
    assert sum(1 for p in expected if p) >= 2, "the case must hold positions at funding times"
    np.testing.assert_allclose(trades["funding"], expected, rtol=1e-9, atol=1e-15)
    assert metric(at, "Funding paid (bps)") == f"{1e4 * sum(expected):.2f}"
    assert "3 settlement(s) of BTCUSDT · perp booked" in texts(at.caption)
    # Fees: spot 10 bps on Y, USD-M 5 bps on X, on each fill of each trade.
    exits_y = np.where(trades["closed"], trades["exit_y"], 0.0)
    exits_x = np.where(trades["closed"], trades["exit_x"], 0.0)
    y_notional = trades["qty_y"].abs() * (trades["entry_y"] + exits_y)
    x_notional = trades["qty_x"].abs() * (trades["entry_x"] + exits_x)
    np.testing.assert_allclose(trades["fees"], 0.001 * y_notional + 0.0005 * x_notional)


@pytest.mark.apptest
def test_a_cross_venue_z_score_rule_starts_from_the_pairs_z_and_stores_venue_x(
    monkeypatch, basis_copy
):
    at = run_app(monkeypatch, basis_copy)
    choose_spot_perp(at)
    z = float(metric(at, "z-score"))
    # The form follows the pair on screen: its threshold starts at this pair's z-score.
    assert at.number_input(key="rule_threshold").value == round(z, 2)
    at.selectbox(key="rule_kind").set_value("zscore_above" if z > 0 else "zscore_below").run()
    at.number_input(key="rule_threshold").set_value(round(z - 0.1 if z > 0 else z + 0.1, 4))
    at.number_input(key="rule_rearm").set_value(z - 5 if z > 0 else z + 5)
    at.button(key="rule_add").click().run()
    assert not at.exception and "Rule 1 added" in texts(at.success)
    conn = sqlite3.connect(basis_copy)
    row = conn.execute(
        "SELECT venue, symbol, venue_x, symbol_x, timeframe, window_bars FROM alert_rules"
    ).fetchone()
    conn.close()
    assert row == (SPOT, "BTCUSDT", PERP, "BTCUSDT", "1m", 60)
    rules_shown = next(df.value for df in at.dataframe if "judged in" in df.value.columns)
    assert rules_shown["rule"].iloc[0].startswith(f"{SPOT_NAME}/{PERP_NAME}: z-score")


@pytest.mark.apptest
def test_a_live_leg_against_a_simulated_one_says_so(monkeypatch, basis_db):
    at = run_app(monkeypatch, basis_db)
    at.selectbox(key="venue_x").set_value("sim").run()
    assert not at.exception
    assert at.selectbox(key="x").options == ["ETHUSDT · sim (SIMULATED)"]
    warnings = texts(at.warning)
    assert "A live leg against one that is not" in warnings
    assert "ETHUSDT · sim (SIMULATED) is not" in warnings


# -- the pipeline, without Streamlit -------------------------------------------------------


def test_spot_perp_pairs_only_one_coin_across_the_two_binance_markets():
    assert View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP).spot_perp() == (SPOT_NAME, PERP_NAME)
    assert View(PERP, "BTCUSDT", "BTCUSDT", venue_x=SPOT).spot_perp() == (SPOT_NAME, PERP_NAME)
    assert View(SPOT, "ETHUSDT", "BTCUSDT", venue_x=PERP).spot_perp() is None
    assert View("sim", "BTCUSDT", "BTCUSDT", venue_x=PERP).spot_perp() is None
    same = View(SPOT, "BTCUSDT", "ETHUSDT", venue_x=SPOT)
    assert same.venue_x is None and same.names == ("BTCUSDT", "ETHUSDT")


def spot_perp_pair(db: Path, lookback_s: int = DAY) -> tuple[pipeline.DbSource, pipeline.PairData]:
    source = pipeline.DbSource(pipeline.ReadOnlyDB(db))
    view = View(SPOT, "BTCUSDT", "BTCUSDT", venue_x=PERP, timeframe="1m", lookback_s=lookback_s)
    return source, pipeline.compute_pair(source, view)


def test_carry_rests_on_the_settlements_of_the_view(basis_db):
    source, pair = spot_perp_pair(basis_db)
    sp = pipeline.spot_perp(source, pair)
    assert sp is not None and sp.gaps == ()
    closes = view_closes(basis_db, DAY)
    rates = settled(closes.index[0], closes.index[-1] + pd.Timedelta(minutes=1))
    pd.testing.assert_series_equal(sp.rates, rates, check_names=False, check_freq=False)
    assert sp.carry.settlements == 3 and sp.carry.firm
    assert sp.carry.annualised == pytest.approx(rates.sum() * 365, rel=1e-12)  # 3 a day
    assert sp.carry.interval == pd.Timedelta(hours=8)
    assert sp.live is not None and sp.live.rate == LIVE_FUNDING[1]
    source.db.close()


def test_funding_not_stored_is_not_included_and_never_zero(basis_db, tmp_path):
    no_funding = Path(shutil.copy(basis_db, tmp_path / "none.db"))
    conn = sqlite3.connect(no_funding)
    with conn:
        conn.execute("DELETE FROM funding_rates")
        conn.execute("DELETE FROM funding_live")
    conn.close()
    source, pair = spot_perp_pair(no_funding)
    funding = pipeline.backtest_funding(source, pair)
    assert list(funding) == [PERP_NAME]
    assert funding[PERP_NAME].rates is None
    assert "no funding rate is stored" in funding[PERP_NAME].note
    result = pipeline.run_backtest(pair, 0.5, -0.4, None, funding)
    assert result.funding == 0.0 and result.fee_bps == (10.0, 5.0)
    source.db.close()


def test_a_missing_settlement_is_named_and_the_rest_booked(basis_db, tmp_path):
    holed = Path(shutil.copy(basis_db, tmp_path / "holed.db"))
    conn = sqlite3.connect(holed)
    with conn:  # the 16:00 settlement never recorded
        conn.execute(
            "DELETE FROM funding_rates WHERE funding_time_ms = ?", ((START_S + 16 * 3600) * 1000,)
        )
    conn.close()
    source, pair = spot_perp_pair(holed)
    leg = pipeline.backtest_funding(source, pair)[PERP_NAME]
    assert leg.rates is not None and leg.settlements == 2
    eight = pd.Timestamp((START_S + 8 * 3600) * 1000 + 3, unit="ms", tz="UTC")
    assert leg.gaps == ((eight, pd.Timestamp(START_S + 24 * 3600, unit="s", tz="UTC")),)
    assert "settlements missing (2024-05-01 08:00 to 2024-05-02 00:00 UTC)" in leg.note
    source.db.close()


def test_a_database_before_funding_records_says_so(tmp_path):
    db = build_pair_db(tmp_path / "old.db", venue=PERP, seconds=300)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DROP TABLE funding_rates")
    conn.close()
    reader = pipeline.ReadOnlyDB(db)
    record = reader.run(queries.funding, PERP, "BTCUSDT", 0, 2**62)
    assert not record.stored and record.rates.empty
    source = pipeline.DbSource(reader)
    pair = pipeline.compute_pair(source, View(PERP, "BTCUSDT", "ETHUSDT", window=20))
    funding = pipeline.backtest_funding(source, pair)
    assert {f.rates is None for f in funding.values()} == {True}
    assert "predates funding records" in funding["BTCUSDT"].note
    reader.close()


def test_same_venue_pairs_keep_their_names_and_file_names(basis_db):
    source = pipeline.DbSource(pipeline.ReadOnlyDB(basis_db))
    pair = pipeline.compute_pair(source, View(SPOT, "BTCUSDT", "ETHUSDT", timeframe="1m"))
    assert list(pair.bars) == ["BTCUSDT", "ETHUSDT"]
    assert pipeline.backtest_funding(source, pair) == {}  # spot legs pay no funding
    assert export.file_name("bars", pair, pd.DatetimeIndex(pair.bars["BTCUSDT"].index)).startswith(
        "bars_binance-spot_BTCUSDT-ETHUSDT_1m_"
    )
    view = View(SPOT, "ETHUSDT", "BTCUSDT", venue_x=PERP, timeframe="1m")
    cross = pipeline.compute_pair(source, view)
    assert list(cross.bars) == ["ETHUSDT · spot", PERP_NAME]
    assert export.file_name(
        "bars", cross, pd.DatetimeIndex(cross.bars[PERP_NAME].index)
    ).startswith("bars_binance-spot.ETHUSDT-binance-usdm.BTCUSDT_1m_")
    assert export.bars_frame(cross).columns[1] == "ETHUSDT · spot_open"
    source.db.close()


@pytest.mark.apptest
def test_the_perpetual_as_y_pairs_with_the_same_coins_spot(monkeypatch, basis_db):
    at = run_app(monkeypatch, basis_db)
    at.selectbox(key="venue").set_value(PERP).run()
    # The perpetual's venue has one symbol: X on the same venue would be Y itself.
    assert "the only leg of perp: binance-usdm (live)" in texts(at.sidebar.info)
    at.selectbox(key="venue_x").set_value(SPOT)
    at.select_slider(key="timeframe").set_value("1m")
    at.selectbox(key="lookback").set_value("24 h").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="x").value == "BTCUSDT"  # the same coin first
    closes = view_closes(basis_db, DAY)
    basis = (closes["perp"] - closes["spot"]) / closes["spot"] * 1e4  # perp over spot
    assert metric(at, "Basis now (bps)") == f"{basis.iloc[-1]:.2f}"
    assert "Basis and carry: BTCUSDT · perp against BTCUSDT · spot" in texts(at.subheader)
