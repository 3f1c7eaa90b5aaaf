"""What the evaluator reads, over its own read-only connection: bars and the health rows.

Bars are aggregated to a rule's bar size by the database (``GROUP BY`` the bar start; on
SQLite a bare ``close`` beside ``max(bar_time_s)`` is the close of the bin's last second,
SQLite's documented rule for a single ``max``; PostgreSQL has no bare columns and takes
the first of the bin's closes ordered newest first) and kept in memory per (venue,
symbol, bar size):
each second only the newest bin is read again. Seconds before it change only when REST
recovers trades into the past (a gap fill, a catch-up); a check every ``verify_s`` of
the rows and trade count the cache holds finds those, and the cache is read again.
"""

from __future__ import annotations

import time

import numpy as np

from pairs_monitor.alerts.rules import FeedRow, GapRow, LegBars, WriterRow
from pairs_monitor.store.connection import Connection, is_postgres

_BINS_SQL = """
SELECT bar_time_s / ? * ? AS bin, max(bar_time_s), close, sum(volume), count(*),
       sum(trade_count)
FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?
GROUP BY bin
ORDER BY bin
"""
_BINS_SQL_POSTGRES = """
SELECT bar_time_s / ? * ? AS bin, max(bar_time_s), (array_agg(close ORDER BY bar_time_s DESC))[1],
       sum(volume), count(*), sum(trade_count)
FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?
GROUP BY bin
ORDER BY bin
"""
_SUMS_SQL = """
SELECT count(*), coalesce(sum(trade_count), 0.0) FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?
"""
_NEWEST_BAR_SQL = """
SELECT bar_time_s, trade_count, last_trade_id FROM bars_1s
WHERE venue = ? AND symbol = ? AND bar_time_s <= ?
ORDER BY bar_time_s DESC
LIMIT 1
"""
# The page's last price: the newest trade by trade time (pipeline.DbSource.last_price).
_LAST_TRADE_SQL = """
SELECT trade_time_us, price FROM trades
WHERE venue = ? AND symbol = ? AND trade_time_us <= ?
ORDER BY trade_time_us DESC
LIMIT 1
"""
_FEED_SQL = """
SELECT symbol, last_trade_time_us, source_since_ms, updated_ms, problem
FROM feed_status WHERE venue = ?
"""
_GAPS_SQL = """
SELECT gap_id, symbol, first_missing_id, last_missing_id, resolved_ms, note
FROM gaps
WHERE venue = ? AND status = 'abandoned' AND gap_id > ?
ORDER BY gap_id
"""
_WRITER_SQL = """
SELECT state, failing_since_ms, last_error, updated_ms FROM writer_status WHERE id = 1
"""

Signature = tuple[int, int, int] | None  # newest bar: start second, trade count, last id


def newest_bar(conn: Connection, venue: str, symbol: str, max_s: int) -> Signature:
    """The newest one-second bar of a series not after ``max_s``: it changes with every
    trade stored, so an unchanged one means nothing new to judge."""
    row = conn.execute(_NEWEST_BAR_SQL, (venue, symbol, max_s)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def last_trade(conn: Connection, venue: str, symbol: str, max_us: int) -> tuple[int, float] | None:
    """Time (µs) and price of the newest stored trade not after ``max_us``."""
    row = conn.execute(_LAST_TRADE_SQL, (venue, symbol, max_us)).fetchone()
    return None if row is None else (int(row[0]), float(row[1]))


def feed_rows(conn: Connection, venue: str) -> list[FeedRow]:
    """The venue's ``feed_status`` rows."""
    return [FeedRow(*row) for row in conn.execute(_FEED_SQL, (venue,))]


def abandoned_gaps(conn: Connection, venue: str, after_id: int) -> list[GapRow]:
    """The venue's abandoned gaps with ``gap_id > after_id``, oldest first."""
    return [GapRow(*row) for row in conn.execute(_GAPS_SQL, (venue, after_id))]


def writer_row(conn: Connection) -> WriterRow | None:
    """The ``writer_status`` row, or None when the reporter has written none yet."""
    row = conn.execute(_WRITER_SQL).fetchone()
    return None if row is None else WriterRow(*row)


class BarCache:
    """One series' bars at one bar size, from ``start_s`` on, kept in memory.

    :param bar_seconds: the bar size the rules judge it at.
    :param verify_s: how often the seconds before the newest bin are checked for trades
        recovered into the past.
    """

    def __init__(self, venue: str, symbol: str, bar_seconds: int, verify_s: float = 10.0) -> None:
        self.venue = venue
        self.symbol = symbol
        self.bar_seconds = bar_seconds
        self.verify_s = verify_s
        self.start_s: int | None = None
        self.bars = LegBars()
        self._rows = np.empty(0, np.int64)  # one-second rows in each bin
        self._trades = np.empty(0, np.int64)  # trades in each bin
        self._next_verify = 0.0
        self.reloads = 0  # whole reads (the first one included), for tests and the benchmark

    def refresh(self, conn: Connection, start_s: int, end_s: int) -> LegBars:
        """Bring the cache up to date for ``[start_s, end_s)`` and return those bars."""
        start_s = start_s // self.bar_seconds * self.bar_seconds
        now = time.monotonic()
        stale = now >= self._next_verify and not self._intact(conn)
        if self.start_s is None or start_s < self.start_s or len(self.bars) == 0 or stale:
            self._load(conn, start_s, end_s)
        else:
            self._extend(conn, end_s)
        if now >= self._next_verify:
            self._next_verify = now + self.verify_s
        self._trim(start_s)
        return self.bars

    def _read(self, conn: Connection, start_s: int, end_s: int) -> list[tuple]:
        bs = self.bar_seconds
        query = _BINS_SQL_POSTGRES if is_postgres(conn) else _BINS_SQL
        return conn.execute(query, (bs, bs, self.venue, self.symbol, start_s, end_s)).fetchall()

    def _load(self, conn: Connection, start_s: int, end_s: int) -> None:
        self.reloads += 1
        self.start_s = start_s
        self._set(self._read(conn, start_s, end_s))

    def _set(self, rows: list[tuple]) -> None:
        if rows:
            array = np.array([(r[0], r[4], r[5]) for r in rows], dtype=np.int64)
            prices = np.array([(r[2], r[3]) for r in rows], dtype=np.float64)
            self.bars = LegBars(array[:, 0], prices[:, 0], prices[:, 1])
            self._rows, self._trades = array[:, 1], array[:, 2]
        else:
            self.bars = LegBars()
            self._rows = self._trades = np.empty(0, np.int64)

    def _extend(self, conn: Connection, end_s: int) -> None:
        """Read the newest cached bin again (it may have grown) and every later one."""
        fresh = self._read(conn, int(self.bars.time_s[-1]), end_s)
        if fresh:  # stored bars are never deleted, so the newest bin comes back with them
            self._append(len(self.bars) - 1, fresh)

    def _append(self, keep: int, fresh: list[tuple]) -> None:
        array = np.array([(r[0], r[4], r[5]) for r in fresh], dtype=np.int64)
        prices = np.array([(r[2], r[3]) for r in fresh], dtype=np.float64)
        self.bars = LegBars(
            np.concatenate([self.bars.time_s[:keep], array[:, 0]]),
            np.concatenate([self.bars.close[:keep], prices[:, 0]]),
            np.concatenate([self.bars.volume[:keep], prices[:, 1]]),
        )
        self._rows = np.concatenate([self._rows[:keep], array[:, 1]])
        self._trades = np.concatenate([self._trades[:keep], array[:, 2]])

    def _intact(self, conn: Connection) -> bool:
        """True when the seconds before the newest bin hold what the cache counted."""
        if self.start_s is None or len(self.bars) < 2:
            return True
        last = int(self.bars.time_s[-1])
        ((rows, trades),) = conn.execute(
            _SUMS_SQL, (self.venue, self.symbol, self.start_s, last)
        ).fetchall()
        return int(rows) == int(self._rows[:-1].sum()) and int(trades) == int(
            self._trades[:-1].sum()
        )

    def _trim(self, start_s: int) -> None:
        """Drop the bins before ``start_s``: the cache follows the views forward."""
        if self.start_s is not None and start_s > self.start_s:
            first = int(np.searchsorted(self.bars.time_s, start_s, side="left"))
            if first:
                self.bars = LegBars(
                    self.bars.time_s[first:], self.bars.close[first:], self.bars.volume[first:]
                )
                self._rows, self._trades = self._rows[first:], self._trades[first:]
            self.start_s = start_s
