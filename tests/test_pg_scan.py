"""The scanner's reads on PostgreSQL (pairs_monitor/scan/worker.py): the close of each
minute is its last second's on both stores (PostgreSQL has no bare column beside
``max()``: its statement is its own), and the child's messages never show the URL's
password. The whole scan on PostgreSQL is in tests/test_scan_service.py (``store_db``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pairs_monitor.scan.worker import MinuteCloses, Scanner
from pairs_monitor.store import connection, schema
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.either_store import rows
from tests.helpers.postgres import PASSWORD

pytestmark = pytest.mark.postgres

V, S, K = "binance-spot", "AUSDT", "KUSDT"
START_M = 29_000_000  # a minute in 2025
# (second within the minute, price): minute 0 has three seconds out of order of arrival,
# minute 1 one second, minute 2 none (a kline stands in), minute 3 two seconds.
SECONDS = {0: [(40, 101.0), (5, 100.0), (59, 102.0)], 1: [(0, 103.0)], 3: [(1, 104.0), (30, 99.5)]}
EXPECTED = {START_M: 102.0, START_M + 1: 103.0, START_M + 3: 99.5}


def fill(db: str) -> None:
    """Trades per second of ``SECONDS`` (one a second, so each bar's close is its price),
    and 1-minute klines of ``K``."""
    writer = TradeWriter(db)
    writer.start()
    trade_id = 0
    trades = []
    for minute, seconds in SECONDS.items():
        for second, price in seconds:
            trade_id += 1
            at_us = ((START_M + minute) * 60 + second) * 1_000_000
            trades.append((V, S, trade_id, at_us, price, 1.0, 0))
    writer.put_trades(trades)
    klines = [
        (V, K, 60, (START_M + m) * 60, p, p, p, p, 1.0, p, 0.5, 3)
        for m, p in ((0, 50.0), (2, 51.0))
    ]

    def write(conn: Connection) -> None:
        conn.executemany("INSERT INTO kline_bars VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", klines)

    writer.submit(write).result(10)
    assert writer.close()


def closes(db: str) -> dict[tuple[str, str], dict[int, float]]:
    conn = connection.connect_read_only(db)
    try:
        held = MinuteCloses()
        now_ms = (START_M + 10) * 60_000
        held.refresh(conn, [(V, S), (V, K)], START_M, START_M + 10, now_ms)
        return held.by_leg
    finally:
        conn.close()


def test_each_minutes_close_is_its_last_seconds_on_both_stores(tmp_path, postgres_url):
    sqlite_db = str(tmp_path / "ticks.db")
    for db in (sqlite_db, postgres_url):
        fill(db)
    on_sqlite, on_postgres = closes(sqlite_db), closes(postgres_url)
    assert on_postgres == on_sqlite
    assert on_sqlite[(V, S)] == EXPECTED  # the last second's close, not the last stored
    assert on_sqlite[(V, K)] == {START_M: 50.0, START_M + 2: 51.0}


def test_the_scanners_message_on_an_old_database_does_not_show_the_password(postgres_url):
    schema.setup(postgres_url)
    rows(postgres_url, "UPDATE pairs_monitor_schema SET version = 7")
    request: dict[str, Any] = {
        "db": postgres_url,
        "now_ms": int(time.time() * 1000),
        "window_s": 7_200,
        "keep": 10,
        "legs": None,
    }
    with pytest.raises(RuntimeError) as refused:
        Scanner().scan(request)
    said = str(refused.value)
    assert "schema version 7, scans need 8" in said
    assert PASSWORD not in said and ":***@" in said
