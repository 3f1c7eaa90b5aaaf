"""The schema: created, idempotent, migrated from version 0, refusing what it cannot adopt."""

import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
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


def test_refuses_another_programs_file_untouched_naming_it_and_its_tables(tmp_path):
    # Tables of other names and no schema version: another program's database, adopted by
    # the old code (our tables added beside its own, WAL switched on).
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    file_before = path.read_bytes()
    with pytest.raises(schema.SchemaError) as refused:
        schema.setup(path)
    message = str(refused.value)
    assert str(path) in message and "notes" in message
    assert "no schema version" in message and "pass another --db" in message
    assert path.read_bytes() == file_before  # not even the journal mode changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]


def test_refuses_a_file_whose_version_is_not_backed_by_our_tables(tmp_path):
    # Many programs set user_version for themselves: a version without our tables is theirs.
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("PRAGMA user_version = 2")
    file_before = path.read_bytes()
    with pytest.raises(schema.SchemaError, match="says schema version 2 but lacks the table"):
        schema.setup(path)
    assert path.read_bytes() == file_before


def test_an_empty_file_is_adopted(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    assert schema.setup(path) == 0
    with sqlite3.connect(path) as conn:
        assert schema.schema_version(conn) == schema.LATEST_VERSION


def test_refuses_a_newer_version_untouched_saying_both_versions(tmp_path):
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE trades (x)")
        conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 4}")
    file_before = path.read_bytes()
    with pytest.raises(schema.SchemaError) as refused:
        schema.setup(path)
    message = str(refused.value)
    assert f"schema version {schema.LATEST_VERSION + 4}, newer than this code knows " in message
    assert f"({schema.LATEST_VERSION})" in message and str(path) in message
    assert path.read_bytes() == file_before
    with pytest.raises(schema.SchemaError, match="newer than this code knows"):
        TradeWriter(path).start()  # the daemon's way in refuses it the same
    assert path.read_bytes() == file_before


def _setup_in_process(path: str, start: float, results: "multiprocessing.Queue[str]") -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        schema.setup(path)
        results.put("ok")
    except Exception as exc:  # reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.daemon
def test_two_processes_migrating_a_new_file_at_once_both_succeed(tmp_path):
    # The second of two daemons started together failed with "table trades already exists".
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = str(tmp_path / f"new{round_}.db")
        results: multiprocessing.Queue[str] = context.Queue()
        start = time.time() + 0.15
        workers = [
            context.Process(target=_setup_in_process, args=(path, start, results)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [results.get(timeout=5) for _ in workers] == ["ok", "ok"], f"round {round_}"
        assert schema_dump(Path(path)) == schema_dump(_reference(tmp_path))


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_threads_migrating_one_file_at_once_all_succeed(tmp_path):
    for round_ in range(30):
        path = tmp_path / f"new{round_}.db"
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def migrate(
            path: Path = path, barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes
        ) -> None:
            barrier.wait()
            try:
                schema.setup(path)
                outcomes.append("ok")
            except Exception as exc:  # reported to the test
                outcomes.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=migrate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert outcomes == ["ok"] * 4, f"round {round_}"
        with sqlite3.connect(path) as conn:
            assert schema.schema_version(conn) == schema.LATEST_VERSION


def _reference(tmp_path: Path) -> Path:
    reference = tmp_path / "reference.db"
    if not reference.exists():
        schema.setup(reference)
    return reference


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


@pytest.mark.daemon
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the daemon as nobody (root writes any file)",
)
@pytest.mark.parametrize("folder_mode", [0o777, 0o755], ids=["folder writable", "folder not"])
def test_a_read_only_database_is_refused_at_start_with_what_to_do(folder_mode):
    # Run as nobody against root's file: the old code ended in a traceback (folder writable)
    # or a bare "attempt to write a readonly database".
    folder = Path(tempfile.mkdtemp(prefix="ro-db-", dir="/tmp"))
    try:
        path = folder / "ticks.db"
        writer = TradeWriter(path)
        writer.start()
        writer.put_trades([("sim", "AAAUSDT", 1, 1_700_000_000_000_000, 1.0, 1.0, 0)])
        assert writer.close()
        for leftover in folder.glob("ticks.db-*"):
            leftover.unlink()
        path.chmod(0o644)
        folder.chmod(folder_mode)
        file_before = path.read_bytes()
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        result = subprocess.run(
            [
                *as_nobody,
                sys.executable,
                "ingest.py",
                "--source",
                "sim",
                "--symbols",
                "AAAUSDT",
                "BBBUSDT",
                "--db",
                str(path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert f"cannot open {path}" in result.stderr
        assert "cannot be written by this user" in result.stderr
        assert "chmod u+w" in result.stderr and "pass another --db" in result.stderr
        assert path.read_bytes() == file_before
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
