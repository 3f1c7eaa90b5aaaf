"""Validators for the daemon's numeric flags: a value no operator means is refused at parse.

argparse turns the ``ArgumentTypeError`` into a usage message naming the flag (exit 2).
"""

from __future__ import annotations

import argparse
import math

# Durations and sizes above this are typing mistakes, and Python's sleeps and timers
# overflow on values near infinity (``--connect-timeout inf``, ``--log-max-mb 1e309``).
LARGEST = 1e9


def positive_number(text: str) -> float:
    """A finite number above 0 and at most :data:`LARGEST`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= LARGEST):
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {LARGEST:g}, not {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number from 1 to :data:`LARGEST`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= LARGEST:
        raise argparse.ArgumentTypeError(f"must be from 1 to {LARGEST:g}, not {text}")
    return value
