"""Hostile input for the property and chaos tests, and the check that none of it was stored.

Every hostile frame or REST item here is one the exchange cannot send: at least one field
is outside what Binance publishes (ids ``1 <= id < 2**62``, a trade time from the day
Binance opened to a few minutes ahead of now, finite positive decimal strings for price
and quantity), or the frame is not a trade of a subscribed symbol at all. So whatever the
daemon stores beyond the genuine tape is a bug, and :func:`bogus_rows` names the rows
whose values alone prove it.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import orjson

from tests.helpers.binance_server import Trade

MAX_ID = 2**62  # ids are below this (the plausible range)
BINANCE_OPENED_MS = 1_499_990_400_000  # 2017-07-14T00:00:00Z
CLOCK_SKEW_MS = 5 * 60 * 1000  # a trade time at most this far ahead of our clock
FAR_FUTURE_MS = 3_600_000  # hostile times are at least this far ahead of now

# Raw JSON tokens, each impossible in its field (ids and times are JSON integers, price
# and quantity decimal strings of a positive finite number).
BAD_IDS = [
    "0", "-1", "-9223372036854775808", str(MAX_ID), str(2**63 - 1), str(2**63),
    "18446744073709551615", "18446744073709551616", "100000000000000000000000000000",
    "1.5", "1000000.0", "1e6", "1e309", '"1000000"', '"1_000"', '" 1"', '"NaN"',
    '"Infinity"', "true", "false", "null", "[]", "{}",
]  # fmt: skip
BAD_TIMES_MS = [
    "0", "-1", "1", str(BINANCE_OPENED_MS - 1), "253402300800000",  # year 10000
    "9300000000000000",  # its microseconds overflow 64 bits
    str(2**63 - 1), str(2**63), "1767225600000.5", "1e309", '"1767225600000"', "true",
    "null", "[]",
]  # fmt: skip
BAD_DECIMALS = [
    '"0"', '"0.00000000"', '"-1.5"', '"-0"', '"1e309"', '"-1e309"', '"Infinity"',
    '"-Infinity"', '"inf"', '"NaN"', '"nan"', '"1_000"', '" 1"', '"1 "', '""', '"abc"',
    '"0x10"', '"\\u0661\\u0662"',  # Arabic-Indic digits, which float() reads as 12
    "true", "false", "null", "[]", "{}", "0", "-5", '"1e-400"',
]  # fmt: skip
BAD_SYMBOLS = ['"币安人生USDT"', '"BTCÜSDT"', '""', "null", "123", '"BTC USDT"']
BAD_EVENTS = ['"aggTrade"', '"TRADE"', '""', "null", "1", '"kline"', '"trade "']


def far_future_ms() -> list[str]:
    """Trade times too far ahead of now to be real (computed when called)."""
    now = time.time_ns() // 1_000_000
    return [str(now + FAR_FUTURE_MS), str(now + 86_400_000), str(now + 230 * 365 * 86_400_000)]


def frame_text(trade: Trade, *, stream: str | None = None, **fields: str | None) -> str:
    """A combined-stream trade frame for ``trade`` as raw text, with fields replaced.

    :param fields: raw JSON tokens by field name (``t``, ``T``, ``p``, ``q``, ``s``,
        ``e``, ``m``); None leaves the field out.
    """
    data = {
        "e": '"trade"',
        "E": str(trade.time_ms + 1),
        "s": orjson.dumps(trade.symbol).decode(),
        "t": str(trade.id),
        "p": orjson.dumps(trade.price).decode(),
        "q": orjson.dumps(trade.qty).decode(),
        "T": str(trade.time_ms),
        "m": "true" if trade.buyer_is_maker else "false",
        "M": "true",
    }
    for name, token in fields.items():
        if token is None:
            data.pop(name, None)
        else:
            data[name] = token
    inner = ",".join(f'"{k}":{v}' for k, v in data.items())
    stream = stream if stream is not None else f"{trade.symbol.lower()}@trade"
    return f'{{"stream":{orjson.dumps(stream).decode()},"data":{{{inner}}}}}'


def rest_item_text(trade: Trade, **fields: str | None) -> str:
    """A historicalTrades item for ``trade`` as raw text, with fields replaced or removed."""
    item = {
        "id": str(trade.id),
        "price": orjson.dumps(trade.price).decode(),
        "qty": orjson.dumps(trade.qty).decode(),
        "quoteQty": '"0"',
        "time": str(trade.time_ms),
        "isBuyerMaker": "true" if trade.buyer_is_maker else "false",
        "isBestMatch": "true",
    }
    for name, token in fields.items():
        if token is None:
            item.pop(name, None)
        else:
            item[name] = token
    return "{" + ",".join(f'"{k}":{v}' for k, v in item.items()) + "}"


def big_frame(trade: Trade, megabytes: int = 10) -> str:
    """A trade frame padded past ``megabytes`` MB with a field nobody reads."""
    pad = "x" * (megabytes * 1024 * 1024)
    return frame_text(trade, t="0")[:-2] + f',"pad":"{pad}"}}}}'


def nested_frame(depth: int = 100_000) -> str:
    """JSON nested far deeper than any parser's recursion allows."""
    return '{"stream":"btcusdt@trade","data":' + "[" * depth + "]" * depth + "}"


def hostile_frames(trade: Trade) -> dict[str, str]:
    """Frames covering each hostile case once, by a short name (for the daemon runs)."""
    return {
        "id 2**63": frame_text(trade, t=str(2**63)),
        "id 0": frame_text(trade, t="0"),
        "id as string": frame_text(trade, t='"1000"'),
        "id 1e309": frame_text(trade, t="1e309"),
        "time overflowing us": frame_text(trade, T="9300000000000000"),
        "time year 2256": frame_text(trade, T=far_future_ms()[2]),
        "time 1970": frame_text(trade, T="1"),
        "price 1e309": frame_text(trade, p='"1e309"'),
        "price Infinity": frame_text(trade, p='"Infinity"'),
        "qty NaN": frame_text(trade, q='"NaN"'),
        "price 1_000": frame_text(trade, p='"1_000"'),
        "qty ' 1'": frame_text(trade, q='" 1"'),
        "price true": frame_text(trade, p="true"),
        "qty 0": frame_text(trade, q='"0"'),
        "non-ASCII symbol": frame_text(trade, s='"币安人生USDT"'),
        "event aggTrade": frame_text(trade, e='"aggTrade"'),
        "price missing": frame_text(trade, p=None),
        "truncated JSON": '{"stream":"btcusdt@trade","data":',
        "not JSON": "not json at all \x00\xff",
        "a JSON list": "[1, 2, 3]",
        "nested 100,000 deep": nested_frame(),
        "10 MB": big_frame(trade),
    }


def bogus_rows(db: Path) -> list[tuple]:
    """Stored trades with a value the exchange cannot send (empty when all is well)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker FROM trades"
        ).fetchall()
    except sqlite3.OperationalError:  # no schema yet
        return []
    finally:
        conn.close()
    latest_us = (time.time_ns() // 1_000_000 + CLOCK_SKEW_MS) * 1000
    return [row for row in rows if not _plausible(row, latest_us)]


def _plausible(row: tuple, latest_us: int) -> bool:
    _venue, _symbol, trade_id, time_us, price, qty, maker = row
    return (
        type(trade_id) is int
        and 1 <= trade_id < MAX_ID
        and type(time_us) is int
        and BINANCE_OPENED_MS * 1000 <= time_us <= latest_us
        and isinstance(price, float)
        and math.isfinite(price)
        and price > 0
        and isinstance(qty, float)
        and math.isfinite(qty)
        and qty > 0
        and maker in (0, 1)
    )
