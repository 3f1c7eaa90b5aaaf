"""Health of the feeds and of the writer, written once a second.

Each producer owns the :class:`FeedStats` of its (venue, symbol) and updates it as trades
arrive. :class:`StatusReporter` turns those counters into rows of ``feed_status`` (through
the writer, like every other write), has :class:`WriterStatusPublisher` write the writer's
own health to ``writer_status`` (not through the writer: it must land while the writer's
commits fail), and logs a one-line summary every few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.reading import one_row
from pairs_monitor.store import postgres, sql
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("status")

# The status line names each feed up to this many; past it, totals and the worst few.
SUMMARY_DETAIL = 10
SUMMARY_WORST = 5


@dataclass
class FeedStats:
    """Health of one (venue, symbol) feed, as its producer sees it."""

    venue: str
    symbol: str
    source: str  # live | sim | replay
    source_since_ms: int = field(default_factory=now_ms)
    connected: bool = False
    last_trade_id: int | None = None
    last_trade_time_us: int | None = None
    last_message_ms: int | None = None
    reconnects: int = 0
    trades_total: int = 0
    gaps_open: int = 0
    gaps_filled: int = 0
    gaps_abandoned: int = 0
    rejected: int = 0  # trades refused where they entered (ingest/validate.py)
    nonmarket: int = 0  # non-market trades (USD-M insurance fund, ADL): ids, not prices
    problem: str | None = None  # what is wrong now, in words (e.g. a wrong stream route)

    def saw_trade(self, trade_id: int, trade_time_us: int) -> None:
        """Count one trade received from the feed."""
        self.trades_total += 1
        self.last_message_ms = now_ms()
        if self.last_trade_id is None or trade_id > self.last_trade_id:
            self.last_trade_id = trade_id
            self.last_trade_time_us = trade_time_us

    def saw_trades(self, n: int, last_id: int, last_time_us: int) -> None:
        """:meth:`saw_trade` for ``n`` trades at once, of which the largest id is given."""
        if n <= 0:
            return
        self.trades_total += n
        self.last_message_ms = now_ms()
        if self.last_trade_id is None or last_id > self.last_trade_id:
            self.last_trade_id = last_id
            self.last_trade_time_us = last_time_us

    def switch_source(self, source: str) -> None:
        """Record that another source now feeds this symbol."""
        if source != self.source:
            self.source = source
            self.source_since_ms = now_ms()


class WriterStatusPublisher:
    """Writes the ``writer_status`` row through a small connection of its own, when the
    writer is failing or closed (otherwise :meth:`StatusReporter.report` hands it to the
    writer).

    The writer's own transaction cannot carry news of its failures, so this connection
    does, with a short busy timeout: a database locked by another program makes the write
    fail fast (the row then goes stale, which the page reports) instead of blocking the
    reporter. Failures are logged at most once a minute.

    :param writer: the writer whose ``stats`` and queue are published.
    """

    BUSY_TIMEOUT_S = 0.25
    LOG_FAILURES_EVERY_S = 60.0

    def __init__(self, writer: TradeWriter) -> None:
        self.writer = writer
        self._conn: Connection | None = None
        self._failures = 0
        self._last_failure_log: float | None = None

    def row(self) -> dict:
        """The row as of now, for ``sql.UPSERT_WRITER_STATUS``."""
        stats = self.writer.stats
        return {
            "state": stats.state,
            "last_error": stats.last_error,
            "failing_since_ms": stats.failing_since_ms,
            "queue_depth": self.writer.queue_depth(),
            "trades_stored": stats.trades_stored,
            "rows_rejected": stats.rows_rejected,
            "updated_ms": now_ms(),
        }

    def publish(self) -> bool:
        """Write the row now; False when the database refused it (logged, rate-limited)."""
        row = self.row()
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.execute(sql.UPSERT_WRITER_STATUS, row)
        except (sqlite3.Error, psycopg.Error) as exc:
            if isinstance(self._conn, postgres.PgConnection):
                self.close()  # a connection the server cut stays broken: open another
            self._failures += 1
            now = time.monotonic()
            last = self._last_failure_log
            if last is None or now - last >= self.LOG_FAILURES_EVERY_S:
                self._last_failure_log = now
                log.warning(
                    "cannot write writer_status (%s: %s); %d failed write(s) so far, "
                    "next report of this in %.0f s",
                    type(exc).__name__,
                    exc,
                    self._failures,
                    self.LOG_FAILURES_EVERY_S,
                )
            return False
        return True

    def _connect(self) -> Connection:
        url = self.writer.target.url
        if url is not None:
            raw = postgres.connect(url, application_name=f"pairs-monitor status {os.getpid()}")
            # Fail fast behind a lock, as SQLite's busy timeout does: the row goes stale.
            timeout_ms = int(self.BUSY_TIMEOUT_S * 1000)
            raw.execute(f"SET lock_timeout = {timeout_ms}")
            raw.execute(f"SET statement_timeout = {4 * timeout_ms}")
            return postgres.PgConnection(raw)
        conn = sqlite3.connect(
            # mode=rw: never create a file where the database was deleted
            f"{Path(self.writer.db_path).resolve().as_uri()}?mode=rw",
            uri=True,
            timeout=self.BUSY_TIMEOUT_S,
            isolation_level=None,  # each write commits on its own
            check_same_thread=False,  # the reporter's thread, then the daemon's
        )
        # One small row a second: durability of the last one hardly matters, and an fsync
        # per write would hold the write lock longer (WAL is on already).
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def close(self) -> None:
        """Close the connection (a later :meth:`publish` opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StatusReporter(threading.Thread):
    """Writes every feed's status about once a second and logs a summary line.

    :param writer: the writer that owns the database.
    :param feeds: the counters to report; the list may grow while running.
    :param interval: seconds between ``feed_status`` and ``writer_status`` writes.
    :param log_every: seconds between status lines in the log.

    Once the writer is closed, :meth:`finish` publishes its final state (``stopped``, or
    ``retrying`` when it could not finish).
    """

    def __init__(
        self,
        writer: TradeWriter,
        feeds: list[FeedStats],
        *,
        interval: float = 1.0,
        log_every: float = 5.0,
    ) -> None:
        super().__init__(name="status", daemon=True)
        self.writer = writer
        self.feeds = feeds
        self.interval = interval
        self.log_every = log_every
        self.writer_status = WriterStatusPublisher(writer)
        self._stop_requested = threading.Event()
        self._last_totals: dict[tuple[str, str], tuple[int, float]] = {}
        self._rates: dict[tuple[str, str], float] = {}

    def stop(self) -> None:
        """Write a last status (feeds marked disconnected) and end the thread."""
        self._stop_requested.set()
        self.join(5)

    def finish(self) -> None:
        """Publish the writer's state once more (call after closing it) and let go of the
        database."""
        self.writer_status.publish()
        self.writer_status.close()

    def run(self) -> None:
        last_log = time.monotonic()
        while not self._stop_requested.wait(self.interval):
            self.report()
            if time.monotonic() - last_log >= self.log_every:
                last_log = time.monotonic()
                log.info("%s", self.summary())
        for feed in self.feeds:
            feed.connected = False
        self.report()

    def report(self) -> None:
        """Queue one ``feed_status`` row per feed and the ``writer_status`` row.

        While the writer commits, its status goes in the writer's own transaction: a second
        connection would have to win the write lock from a writer committing back to back
        (a replay), lose, and leave the row stale. Only a writer that is failing, whose
        transaction cannot carry the news, is reported through the publisher's connection.
        """
        rows = [self._row(feed) for feed in list(self.feeds)]
        if self.writer.stats.state == "ok":
            writer_row = self.writer_status.row()

            def upsert(conn: Connection) -> None:
                upsert_feed_status(conn, rows)
                conn.execute(sql.UPSERT_WRITER_STATUS, writer_row)

            self.writer.submit(upsert)
            return
        if rows:
            self.writer.submit(lambda conn: upsert_feed_status(conn, rows))
        self.writer_status.publish()

    def _row(self, feed: FeedStats) -> dict:
        key = (feed.venue, feed.symbol)
        now = time.monotonic()
        previous_total, previous_time = self._last_totals.get(key, (feed.trades_total, now))
        elapsed = now - previous_time
        rate = (feed.trades_total - previous_total) / elapsed if elapsed > 0 else 0.0
        self._last_totals[key] = (feed.trades_total, now)
        self._rates[key] = rate
        return {
            "venue": feed.venue,
            "symbol": feed.symbol,
            "source": feed.source,
            "source_since_ms": feed.source_since_ms,
            "connected": int(feed.connected),
            "last_trade_id": feed.last_trade_id,
            "last_trade_time_us": feed.last_trade_time_us,
            "last_message_ms": feed.last_message_ms,
            "reconnects": feed.reconnects,
            "trades_per_s": round(rate, 3),
            "queue_depth": self.writer.queue_depth(),
            "gaps_open": feed.gaps_open,
            "gaps_filled": feed.gaps_filled,
            "gaps_abandoned": feed.gaps_abandoned,
            "rejected": feed.rejected,
            "nonmarket": feed.nonmarket,
            "problem": feed.problem,
            "updated_ms": now_ms(),
        }

    def summary(self) -> str:
        """One line: per symbol source, state, trades/s, age of the last message, reconnects,
        gaps; then the writer's queue depth, and its error while it is retrying.

        Past :data:`SUMMARY_DETAIL` feeds the line gives totals and the
        :data:`SUMMARY_WORST` worst feeds only (down first, then the longest silent), so
        its length does not grow with the number of symbols (5,000 made it 560 kB).
        """
        parts = []
        now = now_ms()
        feeds = list(self.feeds)
        if len(feeds) > SUMMARY_DETAIL:
            up = sum(1 for feed in feeds if feed.connected)
            rate = sum(self._rates.get((f.venue, f.symbol), 0.0) for f in feeds)
            parts.append(
                f"{len(feeds)} feeds: {up} up, {len(feeds) - up} down, {rate:.1f} trades/s, "
                f"reconnects {sum(f.reconnects for f in feeds)}, "
                f"gaps {sum(f.gaps_open for f in feeds)} open"
                f"/{sum(f.gaps_filled for f in feeds)} filled"
                f"/{sum(f.gaps_abandoned for f in feeds)} abandoned; worst"
            )
            feeds = sorted(
                feeds,
                key=lambda f: (f.connected, -1 if f.last_message_ms is None else f.last_message_ms),
            )[:SUMMARY_WORST]
        for feed in feeds:
            rate = self._rates.get((feed.venue, feed.symbol), 0.0)
            age = (
                f"{(now - feed.last_message_ms) / 1000:.1f}s"
                if feed.last_message_ms is not None
                else "never"
            )
            state = "up" if feed.connected else "down"
            parts.append(
                f"{feed.venue}:{feed.symbol} {feed.source} {state} {rate:.1f} trades/s, "
                f"last {age} ago, reconnects {feed.reconnects}, "
                f"gaps {feed.gaps_open} open/{feed.gaps_filled} filled"
                f"/{feed.gaps_abandoned} abandoned"
                + (f", PROBLEM: {feed.problem}" if feed.problem else "")
            )
        parts.append(f"queue {self.writer.queue_depth()}")
        writer = self.writer.stats
        if writer.state == "retrying" and writer.failing_since_ms is not None:
            failing_s = (now - writer.failing_since_ms) / 1000
            parts.append(f"writer retrying for {failing_s:.0f}s: {writer.last_error}")
        return " | ".join(parts)


def upsert_feed_status(conn: Connection, rows: list[dict]) -> None:
    """Write the ``feed_status`` rows, one statement each: PgConnection.executemany takes
    positional rows only, and these are named (a few rows a second)."""
    for row in rows:
        conn.execute(sql.UPSERT_FEED_STATUS, row)


def start_run(
    writer: TradeWriter,
    venue: str,
    source: str,
    symbols: Iterable[str],
    params: Mapping[str, object],
    timeout: float = 60.0,
) -> int:
    """Record a start of the daemon in ``ingest_runs``; return its run id.

    :raises TimeoutError: when the database accepts no write within ``timeout`` seconds
        (another program holding a write lock, say); the writer keeps retrying.
    """
    started = now_ms()
    symbol_list = ",".join(sorted(s.upper() for s in symbols))
    params_json = json.dumps(params, sort_keys=True, default=str)

    def insert(conn: Connection) -> int:
        (run_id,) = one_row(
            conn.execute(
                sql.INSERT_RUN + " RETURNING run_id",
                (venue, source, symbol_list, params_json, os.getpid(), started),
            )
        )
        return int(run_id)

    run_id: int = writer.submit(insert).result(timeout)
    return run_id


def finish_run(writer: TradeWriter, run_id: int) -> None:
    """Record the orderly end of a run."""
    stopped = now_ms()
    writer.submit(lambda conn: conn.execute(sql.FINISH_RUN, (stopped, run_id)))
