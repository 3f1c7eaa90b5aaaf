"""Numbers as a trader reads them: one place for how the page writes prices, spreads,
percentages and missing values.

A price is written with the decimals its market quotes it at (XLMBTC ``0.00005123``,
BTCUSDT ``60,123.45``), never rounded to a fixed four places and never with an SI prefix
(``55µ``). The database holds no exchange tick size, so the decimals are read off the
prices themselves: the fewest decimals that write every stored price
(:func:`price_decimals`). A value that is missing is an em dash, never ``None`` or ``nan``.

Streamlit-free, so every rule here is tested without a page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DASH = "—"
"""What a missing value is shown as (tables get it as their ``placeholder``)."""

MAX_DECIMALS = 10
"""The most decimals a price is written with. Binance's smallest spot tick is 1e-8; two
more leave room for a replayed or uploaded market quoted finer."""

SIGNIFICANT_DIGITS = 6
"""Significant digits for a price that no number of decimals up to ``MAX_DECIMALS``
writes exactly (a computed price such as an average): enough to tell ticks apart on any
market Binance lists, from 1e-8 to 1e5."""

MAX_READ_DIGITS = 12
"""The most significant digits a price may be read as having (its magnitude plus its
decimals). A double holds about 16: a computed value rounded to 15 digits lands within
``_FIT_ULPS`` of itself four times in five by chance, to 13 one time in a hundred, to 12
one in a thousand (measured on random values). Markets quote far fewer: BTCUSDT
``60123.45`` and ETHBTC ``0.05123456`` have 7."""

_FIT_ULPS = 4
"""How far, in units of a price's last place, its rounding to a number of decimals may
be and still write it: a price parsed from the exchange's text is the rounding itself (0
ulps), one carried through a sum or product (60000.1 + 0.2) is a few ulps off."""

SMALL_SIGNIFICANT_DIGITS = 3
"""Significant digits of a computed value so small that ``MAX_DECIMALS`` decimals would
show fewer than ``SIGNIFICANT_DIGITS`` of its digits (a p-value of 1e-12): written in
exponent notation, as the page writes p-values."""

# The ends a Binance symbol's quote asset may have, longest first so FDUSD is not USD.
_QUOTE_ASSETS = (
    "FDUSD",
    "USDT",
    "USDC",
    "TUSD",
    "BUSD",
    "USDP",
    "DAI",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
    "JPY",
    "GBP",
    "AUD",
    "XRP",
    "SOL",
)


def _finite(values: Iterable[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
    return array[np.isfinite(array)]


def price_decimals(prices: Iterable[float] | np.ndarray, sample: int = 5_000) -> int:
    """The fewest decimals (0 to ``MAX_DECIMALS``) that write every price (rounded to
    them, each moves by at most ``_FIT_ULPS`` of its last place): the decimals the market
    quotes it at, read off the prices themselves.

    Prices that no decimals up to ``MAX_DECIMALS`` and ``MAX_READ_DIGITS`` significant
    digits write (averages, not trades) get ``SIGNIFICANT_DIGITS`` significant digits of
    their largest magnitude instead.

    :param prices: traded prices (closes, highs, lows); NaN and infinities are ignored.
    :param sample: at most this many distinct prices are looked at (the largest and
        smallest kept), so a week of one-second bars costs no more than an hour.
    :return: 0 when there is no finite price.
    """
    values = np.unique(_finite(prices))
    if not len(values):
        return 0
    if len(values) > sample:
        step = len(values) // sample + 1
        values = np.r_[values[::step], values[-1]]
    decimals = _fitting_decimals(values)
    if decimals is not None:
        return decimals
    return significant_decimals(float(np.max(np.abs(values))))


def _fitting_decimals(values: np.ndarray) -> int | None:
    """The fewest decimals that write every one of ``values`` to within ``_FIT_ULPS`` of
    it, or None when none up to ``MAX_DECIMALS`` (and ``MAX_READ_DIGITS``) does."""
    largest = float(np.max(np.abs(values)))
    magnitude = math.floor(math.log10(largest)) if largest > 0 else 0
    # Relative to each value, not to the value scaled by 10**decimals: that grows past 0.5
    # near 5e11, and then every price of 50 or more fits at some decimals.
    tolerance = _FIT_ULPS * np.finfo(float).eps * np.abs(values)
    for decimals in range(MAX_DECIMALS + 1):
        if magnitude + 1 + decimals > MAX_READ_DIGITS:
            return None
        if bool(np.all(np.abs(np.round(values, decimals) - values) <= tolerance)):
            return decimals
    return None


def significant_decimals(value: float, digits: int = SIGNIFICANT_DIGITS) -> int:
    """Decimals that give ``value`` ``digits`` significant digits (0 for large values),
    at most ``MAX_DECIMALS``."""
    if not math.isfinite(value) or value == 0:
        return 0
    magnitude = math.floor(math.log10(abs(value)))
    return int(min(MAX_DECIMALS, max(0, digits - 1 - magnitude)))


def missing(value: object) -> bool:
    """True for None, NaN and pandas' NA: a value the page shows as ``DASH``."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pd.NA are not equal to themselves
    except TypeError:  # pd.NA refuses bool(): it is missing
        return True


def price(value: float | None, decimals: int) -> str:
    """A price at its market's decimals with thousands separators: ``60,123.45``,
    ``0.00005123``; ``DASH`` when missing."""
    if missing(value):
        return DASH
    return f"{float(value):,.{decimals}f}"  # type: ignore[arg-type]


def plain(value: float | None) -> str:
    """A number whose kind is not known (a price, a z-score, a ratio) as it reads: at the
    decimals that write it exactly, else ``SIGNIFICANT_DIGITS`` significant digits
    (``0.00005123``, ``2``, ``2.34568``); in exponent notation with
    ``SMALL_SIGNIFICANT_DIGITS`` digits only when ``MAX_DECIMALS`` decimals would cut its
    significant digits (``1e-12``, ``1.23e-07``: not ``0.0000000000``); ``DASH`` when
    missing."""
    if missing(value):
        return DASH
    number_ = float(value)  # type: ignore[arg-type]
    tiny = 0 < abs(number_) < 10.0 ** (SIGNIFICANT_DIGITS - 1 - MAX_DECIMALS)
    if tiny and _fitting_decimals(np.array([number_])) is None:
        return f"{number_:.{SMALL_SIGNIFICANT_DIGITS}g}"
    return price(number_, price_decimals([number_]))


def number(value: float | None, spec: str = ",.2f") -> str:
    """Any number through a format spec; ``DASH`` when missing."""
    if missing(value):
        return DASH
    return format(value, spec)


def percent(fraction: float | None, decimals: int = 2) -> str:
    """A fraction as a percentage: ``0.0123`` gives ``1.23%``; ``DASH`` when missing."""
    if missing(fraction):
        return DASH
    return f"{100 * float(fraction):,.{decimals}f}%"  # type: ignore[arg-type]


def bps(fraction: float | None, decimals: int = 1) -> str:
    """A fraction in basis points: ``0.0004`` gives ``4.0 bps``; ``DASH`` when missing."""
    if missing(fraction):
        return DASH
    return f"{1e4 * float(fraction):,.{decimals}f} bps"  # type: ignore[arg-type]


def printf(decimals: int) -> str:
    """A printf format for Streamlit's ``NumberColumn`` at these decimals (``%.8f``)."""
    return f"%.{decimals}f"


def d3(decimals: int) -> str:
    """A d3 format for Plotly's ``hoverformat``/``tickformat`` at these decimals, with
    thousands separators and no SI prefix (``,.8f``)."""
    return f",.{decimals}f"


def quote_asset(symbol: str) -> str | None:
    """The quote asset a Binance symbol is priced in (``XLMBTC`` gives ``BTC``,
    ``BTCUSDT`` gives ``USDT``), or None when its end is none this page knows."""
    upper = symbol.upper()
    for asset in _QUOTE_ASSETS:
        if upper.endswith(asset) and len(upper) > len(asset):
            return asset
    return None


def price_unit(symbol: str) -> str:
    """The unit a symbol's price is in: its quote asset, else ``quote``."""
    return quote_asset(symbol) or "quote"
