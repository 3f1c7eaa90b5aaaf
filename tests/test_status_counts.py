"""The status reporter publishes what was refused: per feed and by the writer (schema v4)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from pairs_monitor.ingest.status import FeedStats, StatusReporter
from pairs_monitor.store.writer import TradeWriter

GOOD = ("sim", "AAAUSDT", 1, 1_700_000_000_000_000, 10.0, 1.0, 0)
UNSTORABLE = ("sim", "AAAUSDT", 2, 1_700_000_000_001_000, math.inf, 1.0, 0)


def test_refusal_counts_reach_feed_status_and_writer_status(tmp_path: Path) -> None:
    db = tmp_path / "ticks.db"
    writer = TradeWriter(db)
    writer.start()
    feed = FeedStats("sim", "AAAUSDT", "sim")
    feed.rejected = 3  # as ingest/validate.py counts refusals at entry
    writer.put_trades([GOOD, UNSTORABLE])
    writer.submit(lambda conn: None).result(timeout=10)  # the trades are committed
    reporter = StatusReporter(writer, [feed])
    reporter.report()
    assert writer.close(timeout=10)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT rejected FROM feed_status").fetchall() == [(3,)]
        assert conn.execute("SELECT rows_rejected FROM writer_status").fetchall() == [(1,)]
        assert conn.execute("SELECT trade_id FROM trades").fetchall() == [(1,)]
    finally:
        conn.close()
