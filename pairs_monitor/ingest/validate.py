"""What an exchange can send: every trade value is checked here where it enters.

The live socket (``binance/feed.py``), REST pages (``binance/rest.py``) and replayed dumps
all hold their values to the same ranges, so nothing the writer or the page cannot
handle (an id beyond 64 bits, a year-2255 trade, ``inf`` prices) is ever queued:

- **trade id**: an ``int`` (not a bool, float or string), ``1 <= id < 2**62``. Binance
  ids start at 1 and are about 5e9 today. The bound keeps every id, and every sum or
  difference of two ids (gap lengths, ``high + 1``), inside SQLite's and numpy's signed
  64 bits, with room to spare: 2**63 itself would overflow them.
- **trade time**: integer milliseconds, not before Binance opened (2017-07-14; the floor
  is 2017-07-01, as the API documentation's own example trade is dated 2017-07-12)
  nor more than :data:`MAX_CLOCK_SKEW_MS` (5 min) ahead of this machine's clock; stored in
  microseconds, far inside 64 bits.
- **price, quantity**: the exchange's plain decimal strings (``"4.00000100"``): ASCII
  digits with at most one point, no sign, exponent, underscore, space or ``inf``/``nan``,
  at most :data:`MAX_DECIMAL_CHARS` characters; the value finite and ``> 0``. A JSON number
  where a string is expected is refused too: Binance never sends one.
- **buyer is maker**: a JSON boolean.
- **trade type** (USD-M's ``X``): absent or ``MARKET`` for an order-book trade; any other
  value is a non-market trade (insurance fund, ADL) and must be a short word of letters,
  digits and underscores (:data:`MAX_TRADE_TYPE_CHARS`). Its price and quantity are
  ``"0"`` and are not looked at; its id and time are checked as a trade's.
- **aggregate** (``aggTrades``): its own id and its first and last trade ids are trade
  ids, ``first <= last`` and at most :data:`MAX_AGGREGATE_IDS` ids; price, quantity, time
  and side as a trade's.

:func:`socket_trade` and :func:`rest_trade` return a writer row or a :class:`Refusal`
saying which field was wrong and why; :class:`Rejects` logs refusals (rate limited,
naming the symbol, field and value) and counts them in the feed's ``rejected``.
Smaller checks (:func:`check_id`, :func:`check_time_ms`, :func:`check_decimal`, ...) raise
:class:`Refused` for callers that parse other formats.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MIN_TRADE_ID = 1
TRADE_ID_LIMIT = 2**62  # exclusive; why: see the module docstring
# Binance opened on 2017-07-14; its API documentation's example trade (1499865549590) is
# from 2017-07-12, so the floor is the first of that month.
EARLIEST_TRADE_MS = 1_498_867_200_000  # 2017-07-01T00:00:00Z
EARLIEST_TRADE_US = EARLIEST_TRADE_MS * 1000
BINANCE_OPENED_MS = EARLIEST_TRADE_MS  # the same floor, by the name first published
BINANCE_OPENED_US = EARLIEST_TRADE_US
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_DECIMAL_CHARS = 64
# USD-M's trade types are words like MARKET, INSURANCE_FUND, ADL.
MARKET_TRADE = "MARKET"
MAX_TRADE_TYPE_CHARS = 32
# One aggregate is the fills of one taker order at one price within 100 ms (Binance's
# aggTrades documentation). Each of its ids becomes a stored trade, so one row claiming
# millions of ids would flood the store: more than this is refused as no exchange's.
MAX_AGGREGATE_IDS = 10_000
VALUE_SHOWN = 40  # characters of a refused value's repr in messages

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_plain = _DECIMAL.fullmatch
_TRADE_TYPE = re.compile(r"[A-Za-z0-9_]+")

TradeRow = tuple[str, str, int, int, float, float, int]  # as store.writer.TradeRow
# venue, symbol, trade_id, trade_time_us (None: known only as an id REST left out), type
NonMarketRow = tuple[str, str, int, int | None, str]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


clock: Callable[[], int] = _wall_ms
"""The time source (ms since the epoch) for the "not ahead of now" check; tests replace it."""


def shown(value: object) -> str:
    """``repr(value)`` cut to :data:`VALUE_SHOWN` characters, for messages."""
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[: VALUE_SHOWN - 3] + "..."


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a value was refused: the field, the value as shown in messages, the reason."""

    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}={self.value}: {self.reason}"


class Refused(ValueError):
    """A value no exchange sends; ``refusal`` says which and why."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.refusal = Refusal(field, shown(value), reason)
        super().__init__(str(self.refusal))


# -- single values ---------------------------------------------------------------------


def check_id(value: object, field: str = "id") -> int:
    """A trade id: an int, ``MIN_TRADE_ID <= id < TRADE_ID_LIMIT``.

    :raises Refused: otherwise (strings, floats and booleans included).
    """
    if type(value) is not int:
        raise Refused(field, value, "a trade id must be a JSON integer")
    if not MIN_TRADE_ID <= value < TRADE_ID_LIMIT:
        raise Refused(field, value, f"a trade id must be in [{MIN_TRADE_ID}, 2**62)")
    return value


def time_bounds_ms(now_ms: int | None = None) -> tuple[int, int]:
    """The trade times (ms, inclusive) accepted now: Binance's opening to now + skew."""
    return EARLIEST_TRADE_MS, (clock() if now_ms is None else now_ms) + MAX_CLOCK_SKEW_MS


def check_time_ms(value: object, field: str = "time", *, now_ms: int | None = None) -> int:
    """A trade time in integer ms, between Binance's opening and a small skew past now.

    :raises Refused: otherwise.
    """
    if type(value) is not int:
        raise Refused(field, value, "a trade time must be integer milliseconds")
    low, high = time_bounds_ms(now_ms)
    if value < low:
        raise Refused(field, value, "before Binance opened (July 2017)")
    if value > high:
        raise Refused(field, value, "more than 5 min ahead of this machine's clock")
    return value


def check_time_us(value: object, field: str = "time", *, now_ms: int | None = None) -> int:
    """:func:`check_time_ms` for a time already in integer microseconds."""
    if type(value) is not int:
        raise Refused(field, value, "a trade time must be integer microseconds")
    low, high = time_bounds_ms(now_ms)
    if value < low * 1000:
        raise Refused(field, value, "before Binance opened (July 2017)")
    if value > high * 1000:
        raise Refused(field, value, "more than 5 min ahead of this machine's clock")
    return value


def check_decimal(value: object, field: str) -> float:
    """A price or quantity from the exchange's plain decimal string; finite and > 0.

    :raises Refused: for anything else: numbers, booleans, ``"1e309"``, ``"Infinity"``,
        ``"NaN"``, ``"1_000"``, ``" 1"``, ``"-1"``, ``"0.000"``.
    """
    if type(value) is not str:
        raise Refused(field, value, "must be a decimal string")
    if len(value) > MAX_DECIMAL_CHARS or not _DECIMAL.fullmatch(value):
        raise Refused(field, value, "not a plain decimal (digits and one point only)")
    number = float(value)
    if not number > 0:
        raise Refused(field, value, "must be > 0")
    return number


def check_amount(value: object, field: str) -> float:
    """A price or quantity already parsed to a number (e.g. from a CSV): finite, > 0.

    :raises Refused: otherwise (booleans included).
    """
    if type(value) not in (int, float):
        raise Refused(field, value, "must be a number")
    number = float(value)  # type: ignore[arg-type]  # int or float, checked above
    if not (math.isfinite(number) and number > 0):
        raise Refused(field, value, "must be finite and > 0")
    return number


def check_maker(value: object, field: str = "isBuyerMaker") -> int:
    """The buyer-is-maker flag: a JSON boolean, stored as 0/1.

    :raises Refused: otherwise.
    """
    if type(value) is not bool:
        raise Refused(field, value, "must be true or false")
    return 1 if value else 0


def check_trade_type(value: object, field: str = "X") -> str:
    """A trade type such as ``INSURANCE_FUND``: a short word of letters, digits, ``_``.

    :raises Refused: otherwise (numbers, ``null``, lists, long or odd strings).
    """
    if type(value) is not str:
        raise Refused(field, value, "a trade type must be a string")
    if len(value) > MAX_TRADE_TYPE_CHARS or not _TRADE_TYPE.fullmatch(value):
        raise Refused(
            field,
            value,
            f"a trade type is letters, digits and _ (at most {MAX_TRADE_TYPE_CHARS})",
        )
    return value


# -- whole trades ------------------------------------------------------------------------


def socket_trade(
    venue: str, payload: Mapping[str, Any], *, now_ms: int | None = None
) -> TradeRow | Refusal:
    """A writer row from one ``@trade`` payload, or why it was refused.

    Example payload: ``{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,
    "p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}`` (times in ms; stored in
    µs). The symbol must be a string; whether it is one of ours is the caller's check.
    """
    # The socket's hot path: the checks of check_id, check_time_ms, check_decimal and
    # check_maker inlined (about a third of the cost of calling them); the slow path
    # below runs them one by one to say which field was refused.
    try:
        symbol = payload["s"]
        trade_id = payload["t"]
        time_ms = payload["T"]
        price = payload["p"]
        qty = payload["q"]
        maker = payload["m"]
    except KeyError as exc:
        return Refusal(str(exc.args[0]), "missing", "field missing")
    if now_ms is None:
        now_ms = clock()  # once: both paths must judge the time against the same instant
    if (
        type(trade_id) is int
        and MIN_TRADE_ID <= trade_id < TRADE_ID_LIMIT
        and type(time_ms) is int
        and EARLIEST_TRADE_MS <= time_ms <= now_ms + MAX_CLOCK_SKEW_MS
        and type(price) is str
        and type(qty) is str
        and len(price) <= MAX_DECIMAL_CHARS
        and len(qty) <= MAX_DECIMAL_CHARS
        and _plain(price)
        and _plain(qty)
        and type(maker) is bool
        and type(symbol) is str
    ):
        p = float(price)
        q = float(qty)
        if p > 0 and q > 0:
            return (venue, symbol, trade_id, time_ms * 1000, p, q, 1 if maker else 0)
    try:
        if type(symbol) is not str:
            raise Refused("s", symbol, "a symbol must be a string")
        check_id(trade_id, "t")
        check_time_ms(time_ms, "T", now_ms=now_ms)
        check_decimal(price, "p")
        check_decimal(qty, "q")
        check_maker(maker, "m")
    except Refused as exc:
        return exc.refusal
    raise AssertionError("socket_trade: the fast and slow checks disagree")  # pragma: no cover


def socket_nonmarket(
    venue: str, payload: Mapping[str, Any], *, now_ms: int | None = None
) -> NonMarketRow | Refusal:
    """A ``nonmarket_trades`` row from an ``@trade`` payload whose ``X`` is not ``MARKET``.

    Example payload (USD-M, an insurance-fund trade): ``{"e":"trade","E":1787137583835,
    "T":1787137583835,"s":"BTCUSDT","t":7978350772,"p":"0","q":"0","X":"INSURANCE_FUND",
    "m":false,"st":1}``. The id, time, symbol and type are checked; the price and quantity
    (``"0"``) are not used.
    """
    try:
        symbol = payload["s"]
        trade_id = payload["t"]
        time_ms = payload["T"]
        kind = payload["X"]
    except KeyError as exc:
        return Refusal(str(exc.args[0]), "missing", "field missing")
    try:
        if type(symbol) is not str:
            raise Refused("s", symbol, "a symbol must be a string")
        check_id(trade_id, "t")
        check_time_ms(time_ms, "T", now_ms=now_ms)
        check_trade_type(kind, "X")
    except Refused as exc:
        return exc.refusal
    return (venue, symbol, trade_id, time_ms * 1000, kind)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One ``aggTrades`` row: the trade ids ``first..last``, all at ``price``, at ``time_ms``,
    on one taker side, ``qty`` in all."""

    agg_id: int
    first: int
    last: int
    price: float
    qty: float
    time_ms: int
    maker: int


def agg_trade(item: object, *, now_ms: int | None = None) -> Aggregate | Refusal:
    """An :class:`Aggregate` from one ``aggTrades`` row, or why it was refused.

    Example row: ``{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,
    "T":1498793709153,"m":true}``. Beyond a trade's checks: ``f <= l`` and at most
    :data:`MAX_AGGREGATE_IDS` ids.
    """
    if not isinstance(item, Mapping):
        return Refusal("item", shown(item), "an aggregate must be a JSON object")
    try:
        first = check_id(item["f"], "f")
        last = check_id(item["l"], "l")
        if last < first:
            raise Refused("l", last, f"before the first trade id {first}")
        if last - first >= MAX_AGGREGATE_IDS:
            raise Refused("l", last, f"more than {MAX_AGGREGATE_IDS} ids from f={first}")
        return Aggregate(
            check_id(item["a"], "a"),
            first,
            last,
            check_decimal(item["p"], "p"),
            check_decimal(item["q"], "q"),
            check_time_ms(item["T"], "T", now_ms=now_ms),
            check_maker(item["m"], "m"),
        )
    except Refused as exc:
        return exc.refusal
    except KeyError as exc:
        return Refusal(str(exc.args[0]), "missing", "field missing")


def rest_trade(
    venue: str, symbol: str, item: object, *, now_ms: int | None = None
) -> TradeRow | Refusal:
    """A writer row from one ``historicalTrades``/``trades`` item, or why it was refused.

    Example item: ``{"id": 28457, "price": "4.00000100", "qty": "12.00000000",
    "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": true,
    "isBestMatch": true}`` (time in ms; stored in µs).
    """
    if not isinstance(item, Mapping):
        return Refusal("item", shown(item), "a trade must be a JSON object")
    try:
        return (
            venue,
            symbol,
            check_id(item["id"], "id"),
            check_time_ms(item["time"], "time", now_ms=now_ms) * 1000,
            check_decimal(item["price"], "price"),
            check_decimal(item["qty"], "qty"),
            check_maker(item["isBuyerMaker"], "isBuyerMaker"),
        )
    except Refused as exc:
        return exc.refusal
    except KeyError as exc:
        return Refusal(str(exc.args[0]), "missing", "field missing")


# -- reporting -------------------------------------------------------------------------


class RateLimitedLog:
    """Log at most a few lines per kind a minute, then a count of what was suppressed."""

    def __init__(self, logger: logging.Logger, per_minute: int = 5) -> None:
        self.logger = logger
        self.per_minute = per_minute
        self.window: dict[str, tuple[float, int]] = {}
        self.counts: collections.Counter[str] = collections.Counter()

    def report(self, kind: str, fmt: str, *args: object) -> None:
        """Count one event of ``kind``; log it unless this minute's lines are spent."""
        self.counts[kind] += 1
        now = time.monotonic()
        start, seen = self.window.get(kind, (now, 0))
        if now - start > 60:
            if seen > self.per_minute:
                self.logger.warning(
                    "%d more %s message(s) suppressed in the last minute",
                    seen - self.per_minute,
                    kind,
                )
            start, seen = now, 0
        seen += 1
        self.window[kind] = (start, seen)
        if seen <= self.per_minute:
            self.logger.warning(fmt, *args)


class _Counts(Protocol):
    rejected: int


class Rejects:
    """Where refused trades are reported: a rate-limited log line and a counter.

    :param logger: where the lines go.
    :param source: shown in the line, e.g. ``socket``, ``REST``, ``dump``.
    """

    def __init__(self, logger: logging.Logger, source: str, per_minute: int = 5) -> None:
        self.source = source
        self.log = RateLimitedLog(logger, per_minute)
        self.total = 0

    def report(self, symbol: str, refusal: Refusal, stats: _Counts | None = None) -> None:
        """Log (rate limited per field) and count one refused trade of ``symbol``."""
        self.total += 1
        if stats is not None:
            stats.rejected += 1
        self.log.report(
            f"{self.source} {refusal.field}",
            "%s: trade from %s refused, %s",
            symbol[:VALUE_SHOWN],
            self.source,
            refusal,
        )
