"""The backtest's costs and headline ratio (issue 13, finding 9), against hand computations.

Fees default to the venue's standard taker rate per leg (Binance spot 10 bps, USD-M 5 bps),
a perpetual leg pays or receives funding at funding times, and no annualised Sharpe ratio
is given for less than a day of bars.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import analytics as A
from pairs_monitor.quant.backtest import (
    MIN_SHARPE_SPAN,
    SPOT_TAKER_FEE_BPS,
    USDM_TAKER_FEE_BPS,
    taker_fee_bps,
)

T0 = pd.Timestamp("2018-01-01")


def test_venue_taker_rates_are_binances_standard_tier():
    # /work/shared/BINANCE.md: spot 0.10 % taker, USD-M 0.05 % taker, standard tier.
    assert (SPOT_TAKER_FEE_BPS, USDM_TAKER_FEE_BPS) == (10.0, 5.0)
    assert taker_fee_bps("spot") == taker_fee_bps("binance-spot") == 10.0
    assert taker_fee_bps("usdm") == taker_fee_bps("binance-usdm") == 5.0
    with pytest.raises(ValueError, match="unknown venue"):
        taker_fee_bps("coinbase")


def _two_trades() -> tuple[pd.Series, pd.Series, pd.Series]:
    """A short round trip then a long one, hedge 1, on ten one-minute bars."""
    index = pd.date_range(T0, periods=10, freq="1min")
    y = pd.Series([10, 10, 12, 12, 11, 11, 8, 8, 9, 9], index, dtype=float)
    x = pd.Series([5, 5, 4, 4, 6, 6, 4, 4, 5, 5], index, dtype=float)
    z = pd.Series([0, 2.5, 1.0, -0.1, 0, -2.5, -1.0, 0.1, 0, 0], index)
    return y, x, z


def _hand_fees(fee_y: float, fee_x: float) -> tuple[float, float]:
    """Fees of the two trades of ``_two_trades`` at ``fee_y``, ``fee_x`` (fractions).

    Trade 1, short: signal bar 1, filled at bar 2 (y 12, x 4): 1/16 unit of each leg
    (gross 16 per unit = capital 1); exit signal bar 3, filled at bar 4 (y 11, x 6).
    Trade 2, long: signal bar 5, filled at bar 6 (y 8, x 4): 1/12 unit each; exit signal
    bar 7, filled at bar 8 (y 9, x 5).
    """
    first = fee_y * 12 / 16 + fee_x * 4 / 16 + fee_y * 11 / 16 + fee_x * 6 / 16
    second = fee_y * 8 / 12 + fee_x * 4 / 12 + fee_y * 9 / 12 + fee_x * 5 / 12
    return first, second


# P&L before fees: trade 1 short 1/16: -(11 - 12)/16 + (6 - 4)/16 = 3/16; trade 2 long
# 1/12: (9 - 8)/12 - (5 - 4)/12 = 0.
HAND_PNL = (3 / 16, 0.0)


@pytest.mark.parametrize(
    ("venue", "fee_y", "fee_x"),
    [
        ("spot", 0.001, 0.001),
        ("usdm", 0.0005, 0.0005),
        ("binance-usdm", 0.0005, 0.0005),
        (("spot", "usdm"), 0.001, 0.0005),  # a spot leg against a perpetual
    ],
)
def test_fees_default_to_each_venues_taker_rate(venue, fee_y, fee_x):
    y, x, z = _two_trades()
    res = A.backtest(y, x, z, hedge=1.0, entry=2.0, exit=0.0, venue=venue)
    fees = _hand_fees(fee_y, fee_x)
    assert res.n_trades == 2
    assert res.fee_bps == (fee_y * 10_000, fee_x * 10_000)
    np.testing.assert_allclose(res.trades["fees"], fees, rtol=1e-12)
    np.testing.assert_allclose(res.trades["pnl"], HAND_PNL, atol=1e-15)
    np.testing.assert_allclose(
        res.trades["net_pnl"], np.subtract(HAND_PNL, fees), rtol=1e-12, atol=1e-15
    )
    assert res.fees == pytest.approx(sum(fees), rel=1e-12)
    assert res.total_return == pytest.approx(sum(HAND_PNL) - sum(fees), rel=1e-12)
    assert res.funding == 0.0


def test_default_is_spot_and_fee_bps_overrides_per_leg():
    y, x, z = _two_trades()
    default = A.backtest(y, x, z, hedge=1.0)
    assert default.fee_bps == (10.0, 10.0)
    assert default.fees == pytest.approx(sum(_hand_fees(0.001, 0.001)), rel=1e-12)
    # One rate for both legs (positional, as the page passes it), or one per leg.
    both = A.backtest(y, x, z, 1.0, 2.0, 0.0, 2.0)
    assert both.fees == pytest.approx(sum(_hand_fees(0.0002, 0.0002)), rel=1e-12)
    per_leg = A.backtest(y, x, z, 1.0, fee_bps=(7.5, 0.0), venue="usdm")
    assert per_leg.fees == pytest.approx(sum(_hand_fees(0.00075, 0.0)), rel=1e-12)
    free = A.backtest(y, x, z, 1.0, fee_bps=0)
    assert free.fees == 0.0 and free.total_return == pytest.approx(3 / 16, rel=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        A.backtest(y, x, z, 1.0, fee_bps=-1)


def _funding_case() -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Hourly bars over two days at constant prices (y 10, x 5, hedge 1: 1/15 unit of
    each leg per trade), a short spread held 07:00 -> 16:00 on day 0 and a long one
    00:00 -> 09:00 on day 1, and 8-hourly funding plus one off-grid rate at 08:30."""
    index = pd.date_range(T0, periods=49, freq="1h")
    y = pd.Series(10.0, index)
    x = pd.Series(5.0, index)
    z = pd.Series(np.nan, index)  # NaN: no signal, a position is held
    z.iloc[6] = 2.5  # short the spread, filled at 07:00
    z.iloc[15] = -0.1  # exit, filled at 16:00
    z.iloc[23] = -2.5  # long the spread, filled at 00:00 day 1
    z.iloc[32] = 0.1  # exit, filled at 09:00 day 1
    times = T0 + pd.to_timedelta([0, 8, 16, 24, 32, 32.5, 40, 60], unit="h")
    rates = pd.Series([0.0001, 0.0003, -0.0002, 0.0005, 0.0001, 0.0004, 0.0002, 0.009], times)
    return y, x, z, rates


def test_funding_on_a_perpetual_x_leg_at_the_right_times_and_sign():
    y, x, z, rates = _funding_case()
    res = A.backtest(y, x, z, 1.0, fee_bps=0, venue=("spot", "usdm"), funding_x=rates)
    assert res.positions[T0 + pd.Timedelta(hours=7)] == -1
    assert res.positions[T0 + pd.Timedelta(hours=24)] == 1
    # Funding is paid by the position held at the funding time, on notional 1/15 unit x
    # 5 = 1/3. Trade 1 is short the spread = LONG x: pays +rate / 3 at 08:00 (0.0003) and
    # 16:00 (-0.0002: a long receives a negative rate); the 00:00 rate of day 0 finds no
    # position. Trade 2 is long the spread = SHORT x: it is filled at the close of the bar
    # stamped 00:00 day 1, after that rate; it receives rate / 3 at 08:00 (0.0001) and at
    # the off-grid 08:30 (0.0004, booked on the bar 08:00-09:00 that holds it). 16:00
    # day 1 finds it closed; 12:00 day 2 is after the last bar.
    first = (0.0003 - 0.0002) / 3
    second = -(0.0001 + 0.0004) / 3
    np.testing.assert_allclose(res.trades["funding"], [first, second], rtol=1e-12)
    np.testing.assert_allclose(res.trades["net_pnl"], [-first, -second], rtol=1e-12)
    assert res.funding == pytest.approx(first + second, rel=1e-12)
    # Booked on the right bars: equity moves only there (prices are constant, no fees).
    expected = pd.Series(1.0, y.index)
    for hours, paid in ((8, 0.0003 / 3), (16, -0.0002 / 3), (32, -0.0001 / 3), (32, -0.0004 / 3)):
        expected[expected.index >= T0 + pd.Timedelta(hours=hours)] -= paid
    np.testing.assert_allclose(res.equity, expected, rtol=0, atol=1e-15)
    assert res.total_return == pytest.approx(-(first + second), rel=1e-12)


def test_funding_inside_a_bar_is_paid_by_the_position_held_at_that_time():
    """Daily bars, so funding times fall inside bars: a bar stamped D covers [D, D + 1 day)
    and its close, where fills happen, is at its end.

    Constant prices y 10, x 5, hedge 1: 1/15 unit of each leg. Short the spread (LONG x)
    on the signal of bar 0, filled at the close of bar 1 (the end of day 1); the exit
    signal of bar 2 is filled at the close of bar 3 (the end of day 3). So long x is held
    from the end of day 1 to the end of day 3. By hand, funding times and whether that
    position holds x then:

    * day 1 08:00 (a) and 16:00 (b): no, it is bought at the close of day 1, after them;
    * day 2 00:00 (c), 08:00 (d): yes;
    * day 3 08:00 (e), 16:00 (f): yes, it is sold at the close of day 3, after them;
    * day 4 08:00 (g): no; day 5 00:00 (h), when the last bar closes: outside the run.

    Paid: (c + d + e + f) x 1/15 x 5. Booking each rate on the first bar stamped at or
    after it (the rule before issue 10) paid a + b + c + d instead: the rates of the day
    before the position existed, and none of its last day.
    """
    index = pd.date_range(T0, periods=5, freq="1D")
    y, x = pd.Series(10.0, index), pd.Series(5.0, index)
    z = pd.Series([2.5, np.nan, -0.1, np.nan, np.nan], index)
    hours = [32, 40, 48, 56, 80, 88, 104, 120]
    a, b, c, d, e, f, g, h = [0.001, 0.002, 0.0001, 0.0002, 0.0003, 0.0004, 0.005, 0.007]
    rates = pd.Series([a, b, c, d, e, f, g, h], T0 + pd.to_timedelta(hours, unit="h"))
    res = A.backtest(y, x, z, 1.0, fee_bps=0, venue=("spot", "usdm"), funding_x=rates)
    assert list(res.positions) == [0, -1, -1, 0, 0]
    paid = (c + d + e + f) / 15 * 5
    assert res.funding == pytest.approx(paid, rel=1e-12)
    np.testing.assert_allclose(res.trades["funding"], [paid], rtol=1e-12)
    # Booked on the bar whose span holds the funding time: c, d on day 2, e, f on day 3.
    expected = [1.0, 1.0, 1 - (c + d) / 3, 1 - paid, 1 - paid]
    np.testing.assert_allclose(res.equity, expected, rtol=0, atol=1e-15)
    # The same position paying the same rates on hourly bars (times on bar edges).
    hourly = pd.date_range(T0, periods=5 * 24, freq="1h")
    zh = pd.Series(np.nan, hourly)
    zh.iloc[46] = 2.5  # filled at the close of bar 47, 23:00-24:00 of day 1
    zh.iloc[94] = -0.1  # closed at the close of bar 95, the end of day 3
    hourly_res = A.backtest(
        pd.Series(10.0, hourly), pd.Series(5.0, hourly), zh, 1.0,
        fee_bps=0, venue=("spot", "usdm"), funding_x=rates,
    )  # fmt: skip
    assert hourly_res.funding == pytest.approx(paid, rel=1e-12)


def test_funding_on_a_perpetual_y_leg_and_spot_legs_unchanged():
    y, x, z, rates = _funding_case()
    res = A.backtest(y, x, z, 1.0, fee_bps=0, venue=("usdm", "spot"), funding_y=rates)
    # Trade 1 is SHORT y: 1/15 unit at 10 = 2/3 of notional, receives a positive rate.
    first = -(0.0003 - 0.0002) * 2 / 3
    second = (0.0001 + 0.0004) * 2 / 3  # trade 2 is long y: pays
    np.testing.assert_allclose(res.trades["funding"], [first, second], rtol=1e-12)
    # Without a funding series (spot pairs) nothing changes: equity is flat at 1.
    spot = A.backtest(y, x, z, 1.0, fee_bps=0)
    assert spot.funding == 0.0 and (spot.equity == 1.0).all()
    assert (spot.trades["funding"] == 0.0).all()
    with pytest.raises(ValueError, match="only perpetual legs"):
        A.backtest(y, x, z, 1.0, funding_x=rates)  # both legs spot
    with pytest.raises(ValueError, match="missing or infinite"):
        A.backtest(y, x, z, 1.0, venue="usdm", funding_x=rates.where(rates > 0.0002))


def test_no_annualised_sharpe_under_a_day():
    y, x, z = _two_trades()  # ten minutes
    res = A.backtest(y, x, z, hedge=1.0)
    assert res.sharpe is None
    assert res.sharpe_note.startswith("not annualised: the bars cover 9 min, less than 1 d")
    # One minute short of a day: still refused; a whole day: given.
    index = pd.date_range(T0, periods=1440, freq="1min")
    rng = np.random.default_rng(3)
    y = pd.Series(100 + np.cumsum(rng.standard_normal(1440)), index)
    x = pd.Series(50 + np.cumsum(rng.standard_normal(1440)), index)
    z = pd.Series(0.0, index)
    z.iloc[10] = -3.0
    assert A.backtest(y, x, z, 1.0).sharpe is None
    assert index[-1] - index[0] == MIN_SHARPE_SPAN - pd.Timedelta(minutes=1)
    # Bars without time stamps: the span is the number of bars over periods_per_year.
    bare = A.backtest(
        y.reset_index(drop=True),
        x.reset_index(drop=True),
        z.reset_index(drop=True),
        1.0,
        periods_per_year=525_600,
    )
    assert bare.sharpe is None and "cover 23 h 59 min, less than 1 d" in bare.sharpe_note
    daily = A.backtest(
        y.reset_index(drop=True),
        x.reset_index(drop=True),
        z.reset_index(drop=True),
        1.0,
        periods_per_year=365,
    )
    assert daily.sharpe is not None and daily.sharpe_note == ""


def test_sharpe_over_more_than_a_day_matches_a_hand_built_equity():
    n = 2000  # one-minute bars: 1 day 9 h 19 min
    index = pd.date_range(T0, periods=n, freq="1min")
    rng = np.random.default_rng(11)
    y = pd.Series(100 + np.cumsum(rng.standard_normal(n)), index)
    x = pd.Series(50 + np.cumsum(0.5 * rng.standard_normal(n)), index)
    z = pd.Series(-1.0, index)  # never above the exit level 0: a long is held
    z.iloc[10] = -3.0  # long the spread, filled at bar 11, held to the end
    h = 1.7
    res = A.backtest(y, x, z, h)  # spot: 10 bps per leg
    # Independent equity: 1 unit of y against h of x scaled to a gross of 1 at bar 11.
    units = 1.0 / (y.iloc[11] + h * x.iloc[11])
    pnl = units * (y - y.iloc[11]) - units * h * (x - x.iloc[11])
    equity = np.where(np.arange(n) >= 11, 1.0 + pnl - 0.001, 1.0)
    np.testing.assert_allclose(res.equity, equity, rtol=1e-12)
    returns = equity[1:] / equity[:-1] - 1.0
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(365 * 24 * 60)
    assert res.sharpe is not None and res.sharpe_note == ""
    assert res.sharpe == pytest.approx(sharpe, rel=1e-9)
