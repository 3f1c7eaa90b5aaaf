"""Issue 16: numbers for traders. Prices at the decimals their market quotes them (read off
the prices, tick sizes from 1e-8 to 1e5), an em dash for a missing value, CSV floats at the
precision they were received, plain decimals on price and spread axes, small-sample guards
checked on simulated series of known truth."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import streamlit as st

import analytics
from pairs_monitor.page import charts, export, numbers, pipeline
from pairs_monitor.page.settings import MIN_HURST_BARS, MIN_SHARPE_TRADES, MIN_TEST_OBS, Leg, View
from pairs_monitor.page.tabs import backtest as backtest_tab
from pairs_monitor.page.tabs import prices as prices_tab
from pairs_monitor.page.tabs import statistics as stats_tab

# tick size -> decimals a price on that tick is written with
TICKS = [
    (1e-8, 8),
    (1e-7, 7),
    (2.5e-7, 8),
    (1e-6, 6),
    (1e-5, 5),
    (0.00025, 5),
    (1e-4, 4),
    (1e-3, 3),
    (0.01, 2),
    (0.05, 2),
    (0.1, 1),
    (0.5, 1),
    (1.0, 0),
    (10.0, 0),
    (100.0, 0),
    (1e5, 0),
]


@pytest.mark.parametrize(("tick", "decimals"), TICKS)
def test_decimals_of_a_tick_and_of_prices_on_it(tick, decimals):
    assert numbers.price_decimals([tick]) == decimals
    rng = np.random.default_rng(int(tick * 1e9) % 1000)
    # Prices on the tick as a parser makes them from the exchange's text (float noise in).
    steps = rng.integers(1, 10**6, 500)
    prices = [float(f"{k * tick:.{decimals}f}") for k in steps]
    assert numbers.price_decimals(prices) == decimals
    # Written back at those decimals, each reads as the price it was.
    for p in prices[:50]:
        assert float(numbers.price(p, decimals).replace(",", "")) == p


def test_xlmbtc_is_written_with_its_eight_decimals_not_rounded_to_four():
    closes = [0.00005123, 0.00005, 0.0000513, 0.00004987]
    d = numbers.price_decimals(closes)
    assert d == 8
    assert numbers.price(0.00005123, d) == "0.00005123"
    assert numbers.price(0.00005, d) == "0.00005000"
    assert numbers.price(60123.45, numbers.price_decimals([60123.45, 60000.0])) == "60,123.45"


def test_prices_no_decimals_write_get_significant_digits():
    averages = [599.9383 / 3, 1 / 7]  # VWAPs, not traded prices
    assert numbers.price_decimals(averages) == numbers.significant_decimals(599.9383 / 3)
    assert numbers.significant_decimals(199.97943333) == 3  # 6 significant digits
    assert numbers.significant_decimals(0.0000512345) == 10  # capped at MAX_DECIMALS
    assert numbers.price_decimals([]) == 0
    assert numbers.price_decimals([math.nan, math.inf]) == 0


@pytest.mark.parametrize(
    ("prices", "decimals"),
    [
        ([599.9383 / 3], 3),  # one average alone: 199.979, not 10 decimals of float noise
        ([60123.45 * 1.000000123], 1),  # a computed price near 60,000: 60,123.5
        ([99.33728610551], 4),  # an uploaded computed price near 100: 99.3373
        ([57.12345678901234], 4),
        ([60000.1 + 0.2], 1),  # 60000.299999999996: a sum's ulp of noise is still 60,000.3
        ([0.1 + 0.2], 1),
    ],
)
def test_a_computed_price_gets_significant_digits_not_float_noise(prices, decimals):
    assert numbers.price_decimals(prices) == decimals


def test_computed_prices_of_every_size_seldom_read_as_quoted_finer():
    """Random values from 1e-6 to 1e6 are computed prices: each alone should get its six
    significant digits; a value that happens to lie within a few ulps of a 12-digit
    decimal may read as that (about one in a thousand), never more digits."""
    rng = np.random.default_rng(16)
    values = rng.uniform(1, 10, 2000) * 10.0 ** rng.integers(-6, 6, 2000)
    read = np.array([numbers.price_decimals([v]) for v in values])
    expected = np.array([numbers.significant_decimals(v) for v in values])
    assert np.mean(read != expected) < 0.005
    magnitude = np.floor(np.log10(values))
    assert np.all(magnitude + 1 + read <= max(numbers.MAX_READ_DIGITS, 6))


@pytest.mark.parametrize("gone", [None, math.nan, np.nan, pd.NA, pd.NaT])
def test_a_missing_value_is_an_em_dash_never_none(gone):
    assert numbers.missing(gone)
    assert numbers.price(gone, 2) == "—"
    assert numbers.number(gone) == "—"
    assert numbers.percent(gone) == "—"
    assert numbers.bps(gone) == "—"


def test_percent_bps_and_formats():
    assert numbers.percent(0.0123) == "1.23%"
    assert numbers.bps(0.0004) == "4.0 bps"
    assert numbers.printf(8) == "%.8f"
    assert numbers.d3(2) == ",.2f"
    assert not numbers.missing(0.0)
    assert not numbers.missing("text")


@pytest.mark.parametrize(
    ("symbol", "quote"),
    [
        ("XLMBTC", "BTC"),
        ("BTCUSDT", "USDT"),
        ("ETHFDUSD", "FDUSD"),
        ("BNBETH", "ETH"),
        ("AAA", None),
        ("USDT", None),  # an asset alone quotes nothing
    ],
)
def test_quote_asset(symbol, quote):
    assert numbers.quote_asset(symbol) == quote
    assert numbers.price_unit(symbol) == (quote or "quote")


def btc_bars(opens, highs, lows, closes) -> pd.DataFrame:
    index = pd.date_range("2026-01-01", periods=len(closes), freq="1s", tz="UTC")
    return pd.DataFrame(
        {"open": opens, "high": highs, "low": lows, "close": closes, "empty": False},
        index=index,
    )


def test_a_legs_decimals_are_read_off_every_traded_price_and_never_drop_back():
    """Read off prices, 60000.0 and 60001.0 look like a tick of 1; the format must not
    flip between 0 and 1 decimals as a 60001.5 enters and leaves the bars read."""
    whole = btc_bars([60000.0, 60001.0], [60001.0, 60001.0], [60000.0, 60000.0], [60001.0] * 2)
    assert prices_tab.leg_decimals(whole) == 0
    # A half in a high alone (the closes whole) is a trade's price all the same.
    half = btc_bars([60000.0, 60001.0], [60001.5, 60001.0], [60000.0, 60000.0], [60001.0] * 2)
    assert prices_tab.leg_decimals(half) == 1
    leg = Leg("test-decimals-kept", "BTCUSDT")  # a leg no other test's session has seen
    try:
        assert prices_tab.leg_decimals(whole, leg) == 0
        assert prices_tab.leg_decimals(half, leg) == 1
        assert prices_tab.leg_decimals(whole, leg) == 1  # kept once seen
        assert prices_tab.leg_decimals(whole, Leg("test-decimals-kept", "ETHUSDT")) == 0
    finally:
        st.session_state.pop(prices_tab.DECIMALS_SEEN, None)


# -- CSV: the precision received -----------------------------------------------------------


def test_csv_floats_are_written_as_received_and_read_back_exactly():
    received = ["599.9383", "0.00005123", "60123.45", "2", "0.1", "1e-08"]
    prices = [float(t) for t in received] + [math.nan]
    frame = pd.DataFrame({"symbol": "XLMBTC", "price": prices})
    text = export.to_csv(frame).decode()
    cells = [line.split(",")[1] for line in text.split("\r\n")[1:-1]]
    assert cells[0] == "599.9383"  # %.17g wrote 599.93830000000003
    assert "599.93830000000003" not in text
    assert cells[3] == "2" and cells[-1] == ""  # a whole number without .0; NaN empty
    # Each cell reads back to the float received, in no more digits than Python's repr.
    for cell, value in zip(cells[:-1], prices, strict=False):
        assert float(cell) == value
        assert len(cell) <= len(repr(value))
    back = pd.read_csv(io.StringIO(text))["price"]
    assert math.isnan(back.iloc[-1])


def test_csv_of_random_prices_round_trips_every_float():
    rng = np.random.default_rng(3)
    values = np.round(rng.uniform(1e-8, 1e5, 2000), 8)
    values[::17] = rng.normal(0, 1, len(values[::17]))  # computed values too
    text = export.to_csv(pd.DataFrame({"v": values})).decode()
    back = [float(line) for line in text.split("\r\n")[1:-1]]
    np.testing.assert_array_equal(back, values)


# -- charts: plain decimals, labels off the data, gaps as gaps -------------------------------


def bars_with_an_empty_one() -> pd.DataFrame:
    index = pd.date_range("2026-01-01", periods=4, freq="1s", tz="UTC")
    close = [0.00005123, 0.00005125, 0.00005125, 0.0000512]
    return pd.DataFrame(
        {
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": [1.0, 2.0, 0.0, 1.0],
            "empty": [False, False, True, False],
        },
        index=index,
    )


def test_candles_have_no_candle_for_a_bar_without_a_trade_and_plain_price_ticks():
    fig = charts.candles(bars_with_an_empty_one(), "XLMBTC")
    candle = fig.data[0]
    assert math.isnan(candle.close[2]) and math.isnan(candle.open[2])
    assert candle.close[1] == 0.00005125 and candle.close[3] == 0.0000512
    assert fig.layout.yaxis.exponentformat == "none"  # no "51.2µ"
    assert fig.layout.yaxis.hoverformat == ",.8f"
    assert fig.layout.yaxis.title.text == "price (BTC)"


def pair_frame(n: int = 40, gap_at: int = 20, gap_s: int = 43) -> pd.DataFrame:
    index = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC")
    index = index.where(index < index[gap_at], index + pd.Timedelta(seconds=gap_s))
    z = np.linspace(-3, 3, n)
    return pd.DataFrame(
        {"spread": 1e-4 * z, "zscore": z, "corr": np.full(n, 0.5)}, index=pd.DatetimeIndex(index)
    )


def test_pair_panels_label_bands_in_the_margin_and_break_at_a_gap():
    frame = pair_frame()
    fig = charts.pair_panels(frame, 2.0, 0.5, "Y vs X", "bps", spread_scale=1e4, max_bars=5)
    labels = {a.text: a for a in fig.layout.annotations}
    assert set(labels) == {"entry +2", "entry −2", "exit +0.5", "exit −0.5"}
    for a in labels.values():
        # In the right margin, beside the plot: never on the newest z values.
        assert (a.xref, a.x, a.xanchor) == ("paper", 1, "left")
    assert fig.layout.margin.r >= charts.LABEL_MARGIN
    # No subplot titles (they sat on the lines of the panel below); axes name the panels.
    assert fig.layout.yaxis2.title.text == "z-score (σ)"
    spread, z = fig.data[0], fig.data[1]
    assert np.nanmax(np.abs(spread.y)) == pytest.approx(3.0)  # 3e-4 in bps
    assert fig.layout.yaxis.exponentformat == "none"
    # One break, one bar after the last row before the 43 s gap.
    x = pd.DatetimeIndex(z.x).tz_localize("UTC")  # Plotly gets naive UTC times
    nan_at = [i for i, v in enumerate(z.y) if v is None or math.isnan(v)]
    assert len(nan_at) == 1
    assert x[nan_at[0]] == frame.index[19] + pd.Timedelta(seconds=1)


def test_with_breaks_keeps_short_steps_joined_and_breaks_longer_ones():
    index = pd.DatetimeIndex(
        pd.to_datetime([0, 1, 2, 5, 6, 20, 21], unit="s", utc=True), name="time"
    )
    s = pd.Series(np.arange(7.0), index=index)
    one = charts.with_breaks(s, pd.Timedelta(seconds=1), max_bars=1)
    assert one.isna().sum() == 2  # 2 -> 5 and 6 -> 20
    five = charts.with_breaks(s, pd.Timedelta(seconds=1), max_bars=5)
    assert isinstance(five, pd.Series)
    assert five.isna().sum() == 1  # only 6 -> 20
    assert five.index[five.isna()][0] == index[4] + pd.Timedelta(seconds=1)
    assert five.dropna().equals(s)
    assert charts.with_breaks(s.iloc[:1]).equals(s.iloc[:1])


def test_outage_spans_clip_to_the_view_and_an_open_gap_runs_to_its_end():
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    end = start + pd.Timedelta(minutes=10)
    us = int(start.value // 1000)
    gaps = pd.DataFrame(
        [
            {"after_us": us + 60_000_000, "before_us": us + 103_000_000, "status": "abandoned"},
            {"after_us": us + 500_000_000, "before_us": None, "status": "open"},
            {"after_us": None, "before_us": us, "status": "open"},  # no known start
            {"after_us": us - 9e8, "before_us": us - 1e8, "status": "abandoned"},  # before
            {
                "after_us": us - 60_000_000,
                "before_us": us + 1_000_000,
                "status": "filled",
                "covered_by": "1s klines",
            },
        ]
    )
    spans = charts.outage_spans(gaps, start, end, "XLMBTC")
    assert [(s.start, s.end, s.status) for s in spans] == [
        (start + pd.Timedelta(seconds=60), start + pd.Timedelta(seconds=103), "abandoned"),
        (start + pd.Timedelta(seconds=500), end, "open"),
        (start, start + pd.Timedelta(seconds=1), "filled"),
    ]
    assert spans[2].label == "XLMBTC: gap filled, bars from 1s klines"
    assert {s.leg for s in spans} == {"XLMBTC"}
    fig = charts.candles(bars_with_an_empty_one(), "XLMBTC", outages=spans)
    # Each span shaded once in each of the two panels (price, volume), red for trades
    # missing and grey where klines stand in, named by its label; nothing else drawn.
    shaded = [
        (pd.Timestamp(s.x0, tz="UTC"), pd.Timestamp(s.x1, tz="UTC"), s.xref, s.yref, s.fillcolor)
        for s in fig.layout.shapes
    ]
    red, grey = charts.OUTAGE_FILL["open"], "rgba(158,158,158,0.16)"
    assert sorted(shaded) == sorted(
        (span.start, span.end, f"x{axis}", f"y{axis} domain", fill)
        for span, fill in zip(spans, (red, red, grey), strict=True)
        for axis in ("", "2")
    )
    assert [s.name for s in fig.layout.shapes][::2] == [s.label for s in spans]


# -- small samples: checked on series of known truth ---------------------------------------


def random_walk_pair(n: int, seed: int = 11) -> pipeline.PairData:
    """Two independent geometric random walks (no cointegration, Hurst 0.5) as uploads."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-01", periods=n, freq="1s", tz="UTC")
    frames = {}
    for name in ("Y", "X"):
        p = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        frames[name] = pd.DataFrame(
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
    view = View(venue="upload", y="Y", x="X", lookback_s=n, window=10)
    return pipeline.compute_pair(pipeline.UploadSource(frames), view)


def test_a_random_walks_hurst_is_a_half_once_n_is_large():
    rng = np.random.default_rng(1)
    walks = [analytics.hurst_fit(pd.Series(np.cumsum(rng.normal(size=20_000)))) for _ in range(5)]
    assert np.mean([w.hurst for w in walks]) == pytest.approx(0.5, abs=0.05)


def test_under_the_minimum_no_statistic_is_shown_as_a_number():
    pair = random_walk_pair(MIN_TEST_OBS - 13)
    stats = pipeline.statistics(pair)
    n = MIN_TEST_OBS - 13
    for name in ("adf_y", "adf_x", "engle_granger", "half_life", "hurst"):
        assert name in stats.too_small, name
        assert f"{n:,}" in stats.too_small[name]
    assert stats_tab._hurst_text(stats) == ("n too small", stats.too_small["hurst"])
    value, _ = stats_tab._half_life_text(stats, pair.view)
    assert value == "n too small"
    # Between the tests' minimum and Hurst's: the tests run, Hurst still waits.
    middle = pipeline.statistics(random_walk_pair(MIN_HURST_BARS - 10))
    assert middle.engle_granger is not None and "hurst" in middle.too_small
    # Above both: a number, and for two unrelated walks no cointegration found.
    big = pipeline.statistics(random_walk_pair(3000))
    assert not big.too_small and big.engle_granger.pvalue > 0.05
    text, note = stats_tab._hurst_text(big)
    assert 0.0 <= float(text) <= 1.0 and "n = " in note


def test_a_hurst_slope_outside_zero_to_one_is_not_shown_as_an_exponent():
    stats = pipeline.Statistics(
        hurst_fit=analytics.HurstResult(-0.081, 2, 30, 400, ""), hurst=-0.081
    )
    text, note = stats_tab._hurst_text(stats)
    assert text == "out of range"
    assert "-0.081" in note and "not a Hurst exponent" in note


@pytest.mark.parametrize(
    ("covered_s", "n_trades", "shown"),
    [
        (600, 50, False),  # minutes of bars: the -1808 of issue 13
        (2 * 86400, 3, False),  # two days, three trades
        (2 * 86400, MIN_SHARPE_TRADES, True),
        (86400, 40, True),
    ],
)
def test_sharpe_needs_a_day_of_bars_and_enough_trades(covered_s, n_trades, shown):
    why = backtest_tab.sharpe_too_small(covered_s, n_trades)
    assert (why is None) == shown
    if why:
        assert why.startswith("n too small")


def test_the_sharpe_guard_counts_the_time_the_bars_cover_not_first_to_last():
    """Five minutes of 1 s bars yesterday and five today: a day from first to last, ten
    minutes of data."""
    day_one = pd.date_range("2026-01-01 12:00", periods=300, freq="1s", tz="UTC")
    frame = pd.DataFrame({"zscore": 0.0}, index=day_one.append(day_one + pd.Timedelta(days=1)))
    assert (frame.index[-1] - frame.index[0]).total_seconds() > 86400
    assert backtest_tab.covered_seconds(frame, 1) == 600
    assert backtest_tab.covered_seconds(frame, 60) == 600 * 60  # as 1 m bars: 10 hours
    why = backtest_tab.sharpe_too_small(backtest_tab.covered_seconds(frame, 1), 50)
    assert why == "n too small: 600 seconds of bars, needs 86,400"
    full_day = pd.DataFrame(
        {"zscore": 0.0}, index=pd.date_range("2026-01-01", periods=1440, freq="1min")
    )
    assert backtest_tab.sharpe_too_small(backtest_tab.covered_seconds(full_day, 60), 50) is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.00005123, "0.00005123"),  # a price: its own decimals, not 5.123e-05 or 0.0001
        (2.0, "2"),
        (60123.45, "60,123.45"),
        (2.345678912345, "2.34568"),  # computed: six significant digits
        (57.12345678901234, "57.1235"),  # not 57.123456789 (float noise read as decimals)
        (99.33728610551, "99.3373"),
        (1e-12, "1e-12"),  # a tiny p-value or spread is not 0.0000000000
        (1.234567e-7, "1.23e-07"),
        (-3.2e-11, "-3.2e-11"),
        (0.0000512345, "0.0000512345"),  # ten decimals still hold its six digits
        (1.5e-9, "0.0000000015"),  # written exactly at ten decimals
        (0.0, "0"),
        (None, "—"),
        (math.nan, "—"),
    ],
)
def test_a_number_of_unknown_kind_reads_as_written(value, shown):
    assert numbers.plain(value) == shown


@pytest.mark.parametrize(
    ("kind", "price", "decimals", "levels"),
    [
        ("price_above", 60123.45, 2, (60123.45, 60003.2)),  # not 60123.5: the price now
        ("price_below", 60123.45, 2, (60123.45, 60243.7)),
        ("price_above", 0.00005123, 8, (0.00005123, 0.00005113)),  # not 0.0000511275
        ("price_above", 95088.7601, 4, (95088.7601, 94898.5826)),
    ],
)
def test_a_price_rule_starts_from_the_price_now_at_its_legs_decimals(kind, price, decimals, levels):
    from pairs_monitor.page.tabs import alerts as alerts_tab

    threshold, rearm = alerts_tab.suggested(kind, price, decimals)
    assert (threshold, rearm) == levels  # exact: these are the fields' values
    assert numbers.price_decimals([threshold, rearm]) <= decimals
