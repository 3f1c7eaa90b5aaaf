"""A coin's spot against its perpetual (issue 10): the basis per bar, the carry funding
pays, and the stretches where settlements are missing, each against numbers worked by
hand here (the textbook annualisation: a rate every 8 hours is paid 3 x 365 = 1,095 times
a year), never against the code under test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import analytics as A

T0 = pd.Timestamp("2026-05-01", tz="UTC")
H = pd.Timedelta(hours=1)


def at_hours(*hours: float) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([T0 + h * H for h in hours])


# -- basis -------------------------------------------------------------------------------


def test_basis_is_perp_over_spot_in_bps_bar_by_bar():
    index = pd.date_range(T0, periods=4, freq="1min")
    spot = pd.Series([100.0, 200.0, 50.0, 80.0], index)
    perp = pd.Series([100.05, 199.9, 50.0, 80.8], index)
    # (100.05 - 100) / 100 = 5e-4 = 5 bps; (199.9 - 200) / 200 = -5 bps; 0; +100 bps.
    np.testing.assert_allclose(A.basis_bps(spot, perp), [5.0, -5.0, 0.0, 100.0], rtol=1e-9)


def test_basis_uses_only_bars_both_legs_have_and_nothing_later():
    index = pd.date_range(T0, periods=5, freq="1min")
    spot = pd.Series([100.0, 101.0, 102.0, 103.0, 104.0], index)
    perp = pd.Series([100.1, np.nan, 102.2, 103.1, 104.0], index).drop(index[3])
    basis = A.basis_bps(spot, perp)
    assert list(basis.index) == [index[0], index[2], index[4]]
    assert basis.iloc[1] == pytest.approx((102.2 - 102.0) / 102.0 * 1e4, rel=1e-12)
    changed = perp.copy()
    changed.iloc[-1] = 1.0  # a different last bar moves no earlier basis
    pd.testing.assert_series_equal(A.basis_bps(spot, changed).iloc[:-1], basis.iloc[:-1])
    with pytest.raises(ValueError, match="positive spot"):
        A.basis_bps(spot * 0, perp)


# -- carry -------------------------------------------------------------------------------


def test_eight_hour_carry_is_the_mean_rate_times_1095():
    rates = pd.Series([0.0001, 0.0003, -0.0001], at_hours(8, 16, 24))
    carry = A.funding_carry(rates, previous_time=T0, next_rate=0.0002, next_time=T0 + 32 * H)
    # By hand: mean 0.0001 per 8 h; 3 a day, 365 days: 0.0001 x 1095 = 10.95 % a year.
    assert carry.settlements == 3 and carry.interval == 8 * H
    assert carry.covered == 24 * H
    assert carry.rate_sum == pytest.approx(0.0003, rel=1e-12)
    assert carry.mean_rate == pytest.approx(0.0001, rel=1e-12)
    assert carry.annualised == pytest.approx(0.1095, rel=1e-12)
    assert carry.next_annualised == pytest.approx(0.0002 * 1095, rel=1e-12)
    assert carry.next_time == T0 + 32 * H
    assert carry.firm and carry.reason == ""
    # Without the settlement before the range, the first rate covers as long as the next.
    assert A.funding_carry(rates).annualised == pytest.approx(0.1095, rel=1e-12)


def test_four_and_one_hour_intervals_are_read_from_the_settlement_times():
    four = pd.Series([0.0001] * 6, at_hours(4, 8, 12, 16, 20, 24))
    carry = A.funding_carry(four)
    assert carry.interval == 4 * H
    assert carry.annualised == pytest.approx(0.0001 * 6 * 365, rel=1e-12)  # 21.9 %
    # Binance stamps some settlements a few milliseconds after the hour.
    ms = pd.Timedelta(milliseconds=3)
    hourly = pd.Series([0.00002, 0.00004, 0.00003], at_hours(1, 2, 3) + ms)
    carry = A.funding_carry(hourly, next_rate=0.00001, next_time=T0 + 4 * H)
    assert carry.interval == H
    assert carry.annualised == pytest.approx(0.00003 * 24 * 365, rel=1e-12)  # 26.28 %
    assert carry.next_annualised == pytest.approx(0.00001 * 8760, rel=1e-12)


def test_an_interval_change_weights_each_rate_by_the_time_it_covers():
    # 8 h, 8 h, 8 h then 4 h, 4 h: 32 hours covered by five rates of 1 bp.
    rates = pd.Series([0.0001] * 5, at_hours(8, 16, 24, 28, 32))
    carry = A.funding_carry(rates, previous_time=T0)
    assert carry.covered == 32 * H and carry.interval == 4 * H
    # By hand: 5 bp over 32 h = 5e-4 x (365 x 24 / 32) = 13.6875 % a year. The mean rate
    # times 1095 (8 h) would say 10.95 %, times 2190 (4 h) 21.9 %: both wrong.
    assert carry.annualised == pytest.approx(0.136875, rel=1e-12)


def test_too_few_settlements_are_not_a_firm_carry():
    assert A.MIN_CARRY_SETTLEMENTS == 3
    two = A.funding_carry(pd.Series([0.0004, 0.0002], at_hours(8, 16)))
    assert not two.firm
    assert two.reason.startswith("rests on 2 settlement(s), needs 3")
    assert two.annualised == pytest.approx(0.0003 * 1095, rel=1e-12)  # still an indication
    one = A.funding_carry(pd.Series([0.0001], at_hours(8)), next_time=T0 + 12 * H)
    assert one.interval == 4 * H and one.annualised == pytest.approx(0.0001 * 2190, rel=1e-12)
    # No settlement in the range: no realised carry; the live rate with the interval seen.
    none = A.funding_carry(
        pd.Series([], dtype=float, index=pd.DatetimeIndex([], tz="UTC")),
        previous_time=T0,
        next_rate=0.0001,
        next_time=T0 + 8 * H,
    )
    assert none.settlements == 0 and math.isnan(none.annualised) and not none.firm
    assert none.next_annualised == pytest.approx(0.1095, rel=1e-12)
    lonely = A.funding_carry(pd.Series([0.0001], at_hours(8)), min_settlements=1)
    assert not lonely.firm and "interval is unknown" in lonely.reason
    assert math.isnan(lonely.annualised)


# -- gaps --------------------------------------------------------------------------------


def test_a_regular_record_has_no_gap_and_a_missing_settlement_is_one():
    eight = at_hours(0, 8, 16, 24, 32)
    assert A.funding_gaps(eight, T0 + 1 * H, T0 + 31 * H) == []
    holed = eight.delete(2)  # 16:00 is missing
    assert A.funding_gaps(holed, T0 + 1 * H, T0 + 31 * H) == [(T0 + 8 * H, T0 + 24 * H)]
    # A change from 8 h to 4 h is not a gap.
    changed = at_hours(0, 8, 16, 20, 24, 28)
    assert A.funding_gaps(changed, T0, T0 + 28 * H) == []
    # Any wait longer than 12 h is (Binance's longest interval is 8 h).
    assert A.funding_gaps(at_hours(0, 13), T0, T0 + 13 * H) == [(T0, T0 + 13 * H)]


def test_gaps_before_the_first_and_after_the_last_known_settlement():
    known = at_hours(16, 24)
    start, end = T0, T0 + 48 * H
    # Due at 08:00 (one interval before 16:00, after the start) and at 32:00 and 40:00.
    assert A.funding_gaps(known, start, end) == [(start, T0 + 16 * H), (T0 + 24 * H, end)]
    # The live feed's next funding time at 32:00 covers up to 40:00 (< 48: still a gap).
    assert A.funding_gaps(known, T0 + 9 * H, end, next_time=T0 + 32 * H) == [(T0 + 32 * H, end)]
    # A settlement exactly at the range's ends is outside it: no gap for it.
    assert A.funding_gaps(known, T0 + 8 * H, T0 + 32 * H) == []
    assert A.funding_gaps(pd.DatetimeIndex([], tz="UTC"), start, end) == [(start, end)]
