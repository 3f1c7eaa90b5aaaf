"""Writing bars from klines and the spans they cover (schema version 7, docs/schema.md).

Used inside the writer's transaction (``TradeWriter.submit``) by the history backfill
(``ingest/binance/history.py``) and the replay of kline files (``ingest/replay``). A
1-second kline becomes a ``bars_1s`` row marked ``from_klines``; a longer one a
``kline_bars`` row. Neither ever overwrites a bar: a second that already has a bar from
trades keeps it, and trades folded in later replace a kline's bar (the schema's trigger).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pairs_monitor.clock import now_ms


class KlineBar(NamedTuple):
    """One kline with trades, as stored: open time (s), prices, volumes, trade count."""

    open_s: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    taker_buy_volume: float
    trade_count: int


# A kline bar's trade ids are 0: it has no trade rows (from_klines = 1 says why).
INSERT_BAR_1S = """
INSERT INTO bars_1s (venue, symbol, bar_time_s, open, high, low, close, volume, quote_volume,
                     taker_buy_volume, trade_count, first_trade_id, last_trade_id, from_klines)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 1)
ON CONFLICT (venue, symbol, bar_time_s) DO NOTHING
"""
INSERT_KLINE_BAR = """
INSERT INTO kline_bars (venue, symbol, interval_s, bar_time_s, open, high, low, close, volume,
                        quote_volume, taker_buy_volume, trade_count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol, interval_s, bar_time_s) DO NOTHING
"""
# Where a symbol's tape of trades begins: the trades_by_time index answers at once.
TAPE_START_US = "SELECT min(trade_time_us) FROM trades WHERE venue = ? AND symbol = ?"
# The trades around a gap of ids: the kline bars of an outage go strictly between them.
TIME_BEFORE_ID = (
    "SELECT trade_time_us FROM trades WHERE venue = ? AND symbol = ? AND trade_id < ? "
    "ORDER BY trade_id DESC LIMIT 1"
)
TIME_AFTER_ID = (
    "SELECT trade_time_us FROM trades WHERE venue = ? AND symbol = ? AND trade_id > ? "
    "ORDER BY trade_id LIMIT 1"
)
SPANS = (
    "SELECT start_s, end_s FROM kline_spans WHERE venue = ? AND symbol = ? AND interval_s = ? "
    "ORDER BY start_s"
)
_TOUCHING_SPANS = (
    "SELECT start_s, end_s FROM kline_spans WHERE venue = ? AND symbol = ? AND interval_s = ? "
    "AND origin = ? AND end_s >= ? AND start_s <= ?"
)
_DELETE_SPAN = (
    "DELETE FROM kline_spans WHERE venue = ? AND symbol = ? AND interval_s = ? AND start_s = ?"
)
_INSERT_SPAN = """
INSERT INTO kline_spans (venue, symbol, interval_s, start_s, end_s, origin, updated_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (venue, symbol, interval_s, start_s) DO UPDATE SET
    end_s = CASE WHEN excluded.end_s > kline_spans.end_s THEN excluded.end_s
                 ELSE kline_spans.end_s END,  -- max(a, b), in the SQL both stores speak
    updated_ms = excluded.updated_ms
"""


def store_bars(
    conn: sqlite3.Connection,
    venue: str,
    symbol: str,
    interval_s: int,
    bars: Iterable[KlineBar],
) -> int:
    """Insert the bars that have no row yet; return how many were inserted.

    :param interval_s: 1 for ``bars_1s``, the kline's length for ``kline_bars``.
    """
    if interval_s == 1:
        cursor = conn.executemany(INSERT_BAR_1S, ((venue, symbol, *bar) for bar in bars))
    else:
        cursor = conn.executemany(
            INSERT_KLINE_BAR, ((venue, symbol, interval_s, *bar) for bar in bars)
        )
    return max(cursor.rowcount, 0)


def add_span(
    conn: sqlite3.Connection,
    venue: str,
    symbol: str,
    interval_s: int,
    start_s: int,
    end_s: int,
    origin: str,
) -> None:
    """Record ``[start_s, end_s)`` as covered, merged with the spans of the same origin it
    touches or overlaps (so a series keeps one row per contiguous stretch)."""
    if end_s <= start_s:
        return
    key = (venue, symbol, interval_s)
    touching = conn.execute(_TOUCHING_SPANS, (*key, origin, start_s, end_s)).fetchall()
    for first, last in touching:
        start_s, end_s = min(start_s, first), max(end_s, last)
        conn.execute(_DELETE_SPAN, (*key, first))
    conn.execute(_INSERT_SPAN, (*key, start_s, end_s, origin, now_ms()))


def spans(
    conn: sqlite3.Connection, venue: str, symbol: str, interval_s: int
) -> list[tuple[int, int]]:
    """The spans of a series, ``[(start_s, end_s)]`` by start, whatever their origin."""
    return [(int(a), int(b)) for a, b in conn.execute(SPANS, (venue, symbol, interval_s))]


def missing(start_s: int, end_s: int, covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start_s, end_s)`` no span of ``covered`` holds, in order."""
    parts: list[tuple[int, int]] = []
    cursor = start_s
    for first, last in sorted(covered):
        if last <= cursor:
            continue
        if first >= end_s:
            break
        if first > cursor:
            parts.append((cursor, first))
        cursor = max(cursor, last)
    if cursor < end_s:
        parts.append((cursor, end_s))
    return parts
