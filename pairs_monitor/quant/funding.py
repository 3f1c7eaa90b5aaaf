"""A coin's spot against its perpetual: the basis, and the carry that funding pays
(part of the ``analytics`` API).

Conventions (docs/analytics.md, "Basis and carry"):

* ``basis_bps = (perp - spot) / spot x 10^4`` on each bar, from that bar's two closes
  only: nothing later is used.
* Funding is settled at funding times: a long perpetual pays ``rate x notional`` to the
  shorts when the rate is positive. So the cash-and-carry position, long spot and short
  perpetual, *receives* the rate: its carry is the funding, counted positive when longs
  pay. A perpetual has no expiry at which the basis must close, so no basis roll-down is
  annualised; the basis itself is the position's mark-to-market.
* The funding interval is the one the settlements show (8 h for most symbols, 4 h or
  1 h for some, and it can change): each settled rate covers the time since the
  settlement before it, and the yield is annualised over the time the rates cover.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "MAX_FUNDING_INTERVAL",
    "MIN_CARRY_SETTLEMENTS",
    "FundingCarry",
    "basis_bps",
    "funding_carry",
    "funding_gaps",
]

YEAR = pd.Timedelta(days=365)
#: The longest funding interval Binance uses: a longer wait between two stored
#: settlements means settlements are missing, whatever the symbol's interval.
MAX_FUNDING_INTERVAL = pd.Timedelta(hours=8)
#: Settlements an annualised carry needs before it is a firm figure (one day at the usual
#: 8 h interval): fewer, and one or two rates, which swing several-fold from one
#: settlement to the next, are multiplied by up to 1,095 a year.
MIN_CARRY_SETTLEMENTS = 3


def basis_bps(spot: pd.Series, perp: pd.Series) -> pd.Series:
    """``(perp - spot) / spot x 10^4`` on each bar both legs have (inner join).

    :param spot: spot closes (positive). :param perp: the perpetual's closes, same clock.
    :return: Series ``basis_bps``; bar t uses only the two closes of bar t.
    """
    both = pd.concat({"spot": spot, "perp": perp}, axis=1, join="inner").dropna()
    if (both["spot"] <= 0).any():
        raise ValueError("spot has a price <= 0; the basis needs positive spot prices")
    return ((both["perp"] - both["spot"]) / both["spot"] * 1e4).rename("basis_bps")


@dataclass(frozen=True)
class FundingCarry:
    """:func:`funding_carry`'s result. Rates are fractions of notional (0.0001 = 1 bp).

    ``settlements``: settled rates it rests on; ``interval``: the funding interval seen
    (the latest spacing of settlement times, to the minute), None when no two times are
    known. ``rate_sum``, ``mean_rate``: of the settled rates; ``covered``: the time they
    cover (each rate the time since the settlement before it); ``annualised``: the
    realised funding yield per 365-day year, ``rate_sum / covered x 365 d`` (the carry of
    long spot / short perp), NaN without a settlement. ``next_rate``, ``next_time``: the
    rate due at the next funding time as it stands (NaN / None when not given);
    ``next_annualised``: it times the settlements a year at ``interval``. ``firm``: at
    least ``min_settlements`` settled rates; else ``reason`` says why the figure is not
    one (it is still computed, as an indication).
    """

    settlements: int
    interval: pd.Timedelta | None
    rate_sum: float
    mean_rate: float
    covered: pd.Timedelta | None
    annualised: float
    next_rate: float
    next_time: pd.Timestamp | None
    next_annualised: float
    firm: bool
    reason: str


def _to_minute(span: pd.Timedelta) -> pd.Timedelta:
    # Binance stamps some settlements a few milliseconds past the hour.
    return span.round("min")


def funding_carry(
    rates: pd.Series,
    *,
    previous_time: pd.Timestamp | None = None,
    next_rate: float | None = None,
    next_time: pd.Timestamp | None = None,
    min_settlements: int = MIN_CARRY_SETTLEMENTS,
) -> FundingCarry:
    """The annualised carry of long spot / short perpetual from settled funding rates.

    Each settled rate ``r_i`` at ``t_i`` covers ``d_i = t_i - t_(i-1)`` (to the minute), the
    first one back to ``previous_time`` (the settlement before the range) or, without it,
    as long as the next one's (``next_time - t_1`` for a single rate). The yield is
    ``sum(r_i) / sum(d_i) x 365 d``: with a constant interval ``d``, ``mean(r) x 365 d / d``
    (8 h: ``mean(r) x 1,095``), and exact when the interval changed inside the range.

    :param rates: settled rates indexed by funding time (tz-aware), e.g. those in a view.
    :param previous_time: the settlement before the first of ``rates``, when known.
    :param next_rate: the rate due at ``next_time`` as it stands (the live estimate).
    :param next_time: the next funding time.
    :param min_settlements: settled rates the figure needs to be ``firm``.
    """
    rates = rates.dropna().sort_index()
    times = pd.DatetimeIndex(rates.index)
    n = len(times)
    # The time each settled rate covers: back to the settlement before it.
    befores = [previous_time, *times[:-1]][:n]
    covers: list[pd.Timedelta | None] = [
        _to_minute(t - before) if before is not None else None
        for t, before in zip(times, befores, strict=True)
    ]
    if n and covers[0] is None:  # the first rate: as long as the next one's
        if n > 1:
            covers[0] = covers[1]
        elif next_time is not None:
            covers[0] = _to_minute(next_time - times[0])
    interval = covers[-1] if n else None
    if not n and previous_time is not None and next_time is not None:
        interval = _to_minute(next_time - previous_time)
    known = [c for c in covers if c is not None]
    covered = sum(known, pd.Timedelta(0)) if n and len(known) == n else None
    rate_sum = float(rates.sum())
    annualised = math.nan
    if n and covered is not None and covered > pd.Timedelta(0):
        annualised = rate_sum / (covered / YEAR)
    nxt = math.nan if next_rate is None else float(next_rate)
    next_annualised = math.nan
    if interval is not None and interval > pd.Timedelta(0):
        next_annualised = nxt * (YEAR / interval)
    reason = ""
    if n < min_settlements:
        reason = (
            f"rests on {n} settlement(s), needs {min_settlements}: one or two funding "
            "rates annualised are not a carry"
        )
    elif covered is None:
        reason = "the funding interval is unknown: no two funding times"
    return FundingCarry(
        settlements=n,
        interval=interval,
        rate_sum=rate_sum,
        mean_rate=rate_sum / n if n else math.nan,
        covered=covered,
        annualised=annualised,
        next_rate=nxt,
        next_time=next_time,
        next_annualised=next_annualised,
        firm=not reason,
        reason=reason,
    )


def funding_gaps(
    times: pd.DatetimeIndex,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    next_time: pd.Timestamp | None = None,
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Stretches of ``(start, end)`` where a settlement was due but none is known.

    ``times`` are the stored settlement times around the range (those just before and
    after it included), ``next_time`` the next funding time a live feed announced.
    Between two known times, a wait longer than 1.5 times the longer of its neighbouring
    waits (capped at ``MAX_FUNDING_INTERVAL``) has settlements missing: a change of
    interval (8 h to 4 h) is not a gap, a missing settlement is. Before the first known
    time, a gap when one interval (the first wait, at most 8 h) before it is still after
    ``start``; after the last, when one interval after it is still before ``end`` (a settlement
    exactly at ``start`` or ``end`` falls outside: no bar of a range pays it). Without any
    known time the whole range is a gap.

    :return: ``(from, to)`` pairs clipped to the range, oldest first; ``[]`` when covered.
    """
    known = pd.DatetimeIndex(times).sort_values().unique()
    if next_time is not None and (not len(known) or next_time > known[-1]):
        known = pd.DatetimeIndex([*known, next_time])
    if not len(known):
        return [(start, end)]
    waits = [_to_minute(b - a) for a, b in itertools.pairwise(known)]
    interval = min(waits[0], MAX_FUNDING_INTERVAL) if waits else MAX_FUNDING_INTERVAL
    gaps: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    if known[0] - interval > start:
        gaps.append((start, min(known[0], end)))
    for i, wait in enumerate(waits):
        neighbours = waits[max(i - 1, 0) : i] + waits[i + 1 : i + 2]
        longest = max(neighbours) if neighbours else MAX_FUNDING_INTERVAL
        if wait > 1.5 * min(longest, MAX_FUNDING_INTERVAL):
            lo, hi = max(known[i], start), min(known[i + 1], end)
            if lo < hi:
                gaps.append((lo, hi))
    last_interval = min(waits[-1], MAX_FUNDING_INTERVAL) if waits else MAX_FUNDING_INTERVAL
    if known[-1] + last_interval < end:
        gaps.append((max(known[-1], start), end))
    return gaps
