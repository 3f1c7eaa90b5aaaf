"""The schema: created, idempotent, migrated from version 0, refusing what it cannot adopt."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pairs_monitor.store import schema
from pairs_monitor.store.writer import TradeWriter

ROOT = Path(__file__).resolve().parent.parent


def schema_dump(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


def test_creates_every_table_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "ticks.db"
    assert schema.setup(path) == 0
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert schema.schema_version(conn) == schema.LATEST_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        trade_columns = [r[1] for r in conn.execute("PRAGMA table_info(trades)")]
    assert {"trades", "bars_1s", "feed_status", "gaps", "alert_rules", "alert_events"} <= tables
    assert tuple(trade_columns) == schema.TRADES_COLUMNS


@pytest.mark.daemon
def test_running_twice_changes_nothing(tmp_path):
    path = tmp_path / "ticks.db"
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "db_setup.py", "--db", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    before = schema_dump(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO trades VALUES ('sim', 'AAA', 1, 1000, 1.5, 2.0, 0)")
    assert schema.setup(path) == schema.LATEST_VERSION
    assert schema_dump(path) == before
    assert "nothing to do" in result.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 1


def test_migrates_a_version_0_database_keeping_its_data(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        assert schema.schema_version(conn) == 0
    assert schema.setup(path) == 0
    with sqlite3.connect(path) as conn:
        assert schema.schema_version(conn) == schema.LATEST_VERSION
        assert conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]
        conn.execute("INSERT INTO trades VALUES ('sim', 'AAA', 1, 1000, 1.5, 2.0, 0)")


def test_migrates_version_1_to_the_latest_keeping_alert_rules(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        for statement in schema._statements(schema.SCHEMA_V1):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO alert_rules (kind, venue, symbol, symbol_x, threshold, rearm, "
            "created_ms) VALUES ('zscore_above', 'sim', 'BTCUSDT', 'ETHUSDT', 2.0, 1.0, 5)"
        )
    assert schema.setup(path) == 1
    with sqlite3.connect(path) as conn:
        assert schema.schema_version(conn) == schema.LATEST_VERSION
        rule = conn.execute(
            "SELECT kind, symbol, threshold, timeframe, window_bars, hedge_method, log_prices "
            "FROM alert_rules"
        ).fetchall()
    assert rule == [("zscore_above", "BTCUSDT", 2.0, None, None, None, None)]


def test_refuses_an_unversioned_database_with_a_trades_table_of_its_own(tmp_path):
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE trades (ts INTEGER, symbol TEXT, price REAL, PRIMARY KEY (ts, symbol))"
        )
        conn.execute("INSERT INTO trades VALUES (1, 'BTCUSDT', 100.0)")
    before = schema_dump(path)
    file_before = path.read_bytes()
    with pytest.raises(schema.SchemaError, match="move the file aside"):
        schema.setup(path)
    assert path.read_bytes() == file_before  # not even the journal mode changed
    assert schema_dump(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM trades").fetchall() == [(1, "BTCUSDT", 100.0)]
        assert schema.schema_version(conn) == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.daemon
def test_refuses_a_database_from_a_newer_version(tmp_path):
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    result = subprocess.run(
        [sys.executable, "db_setup.py", "--db", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "newer than this code knows" in result.stderr


def test_trades_sharing_a_millisecond_are_all_kept(tmp_path):
    path = tmp_path / "ticks.db"
    same_ms_us = 1_610_064_000_123_000
    rows = [
        ("binance-spot", "BTCUSDT", 553287559 + i, same_ms_us, 40000.0 + i, 0.01, i % 2)
        for i in range(7)
    ]
    writer = TradeWriter(path)
    writer.start()
    writer.put_trades(rows)
    assert writer.close()
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT * FROM trades ORDER BY trade_id").fetchall()
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?)", rows[0])
    assert stored == rows


def test_symbol_time_range_query_uses_the_time_index(tmp_path):
    path = tmp_path / "ticks.db"
    schema.setup(path)
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT price FROM trades "
            "WHERE venue = ? AND symbol = ? AND trade_time_us BETWEEN ? AND ?",
            ("binance-spot", "BTCUSDT", 0, 1),
        ).fetchall()
    assert "trades_by_time" in " ".join(str(step) for step in plan)


def test_read_only_connection_cannot_write(tmp_path):
    path = tmp_path / "ticks.db"
    schema.setup(path)
    conn = schema.connect_read_only(path)
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
        conn.execute("INSERT INTO trades VALUES ('sim', 'AAA', 1, 1000, 1.5, 2.0, 0)")
    with pytest.raises(FileNotFoundError, match=r"db_setup\.py"):
        schema.connect_read_only(tmp_path / "missing.db")
