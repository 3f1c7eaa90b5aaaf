"""Time, in one place: the wall clock, epoch units told from their size, and backoff.

- :func:`now_ms`: the wall clock every stored ``*_ms`` column is written with.
- :data:`EPOCH_UNITS`, :func:`epoch_unit`, :func:`epoch_us`, :func:`epoch_to_us`: a bare
  epoch number does not say its unit, but its magnitude does (today's date is about
  1.7e9 s, 1.7e12 ms, 1.7e15 µs, 1.7e18 ns); the page's upload and the daemon's replay
  both read timestamps through this one table.
- :class:`Backoff`: exponential, capped, with jitter; the reconnect loop, REST retries
  and the writer's commit retries all wait through it.
"""

from __future__ import annotations

import math
import random
import time
from typing import NamedTuple, TypeVar

import numpy as np


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class EpochUnit(NamedTuple):
    """One unit of epoch timestamps: its name and how many of it make a second."""

    name: str  # "s", "ms", "us" or "ns"
    per_second: int
    below: float  # a value under this (and over the previous unit's bound) is in this unit


# Seconds up to 1e11 (the year 5138), then ms up to 1e14, µs up to 1e17, ns beyond.
EPOCH_UNITS: tuple[EpochUnit, ...] = (
    EpochUnit("s", 1, 1e11),
    EpochUnit("ms", 10**3, 1e14),
    EpochUnit("us", 10**6, 1e17),
    EpochUnit("ns", 10**9, math.inf),
)
_BOUNDS = np.array([unit.below for unit in EPOCH_UNITS[:-1]])

# A recorded trade's time, in µs, must fall within 1973-03-03 .. 2286-11-20: anything
# outside is a unit mistake or a corrupt field, not a trade.
PLAUSIBLE_TRADE_US = (10**14, 10**16)


def epoch_unit(value: float) -> EpochUnit:
    """The unit of an epoch timestamp, judged from its magnitude (see :data:`EPOCH_UNITS`)."""
    magnitude = abs(value)
    return next(unit for unit in EPOCH_UNITS if magnitude < unit.below)


def epoch_us(value: int, units: tuple[str, ...] = ("ms", "us")) -> int | None:
    """A trade time in µs from an epoch number in one of ``units``; None when implausible.

    :param value: epoch time whose unit is told from its magnitude.
    :param units: the units accepted (a Binance time is ms or µs, never s or ns).
    """
    unit = epoch_unit(value)
    if unit.name not in units:
        return None
    us = _to_us(value, unit)
    low, high = PLAUSIBLE_TRADE_US
    return us if low <= us < high else None


def epoch_to_us(
    values: np.ndarray, units: tuple[str, ...] = ("ms", "us")
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`epoch_us` for a column: the µs values, and a mask of the implausible ones.

    Each value is judged on its own, so a file mixing ms and µs rows is read right.
    """
    index = np.searchsorted(_BOUNDS, np.abs(values), side="right")
    us = np.zeros_like(values)
    for i, unit in enumerate(EPOCH_UNITS):
        mask = index == i
        if mask.any():
            us[mask] = _to_us(values[mask], unit)
    allowed = np.isin(index, [i for i, u in enumerate(EPOCH_UNITS) if u.name in units])
    low, high = PLAUSIBLE_TRADE_US
    return us, ~(allowed & (us >= low) & (us < high))


_Epoch = TypeVar("_Epoch", int, np.ndarray)


def _to_us(value: _Epoch, unit: EpochUnit) -> _Epoch:
    if unit.per_second <= 10**6:
        return value * (10**6 // unit.per_second)
    return value // (unit.per_second // 10**6)


class Backoff:
    """Exponential backoff with jitter: ``uniform(c/2, c)`` where ``c = min(cap, base * 2**n)``.

    Any number of failures is fine: the exponent stops growing once ``base * 2**n``
    reaches ``cap``, so the delay is never computed from a number too big for a float
    (a million failures, 16 years of retries at 30 s, give ``cap`` as the first one does).

    :param base: first delay in seconds (finite, > 0; ``cap`` when larger than it).
    :param cap: largest delay in seconds (finite, > 0).
    :raises ValueError: for a base or cap out of those ranges.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        if not (math.isfinite(base) and math.isfinite(cap) and base > 0 and cap > 0):
            raise ValueError(f"backoff needs a finite base and cap > 0: {base!r}, {cap!r}")
        self.base = min(base, cap)
        self.cap = cap
        self.failures = 0
        # The first n from which base * 2**n >= cap: later failures change nothing.
        self._top = max(0, math.ceil(math.log2(cap / base)))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, math.ldexp(self.base, min(self.failures, self._top)))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Forget the failures: the last attempt succeeded."""
        self.failures = 0
