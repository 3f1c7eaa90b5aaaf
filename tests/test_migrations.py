"""A migration that fails part way is rolled back whole: version, tables and data as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pairs_monitor.store import schema


def at_version(path: Path, version: int) -> Path:
    """A database file brought to ``version`` by the real migrations, with a row to keep."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in schema.MIGRATIONS[:version]:
            for statement in schema._statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version:d}")
        if version:  # a version-0 file with a table of its own is another program's: refused
            conn.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES ('keep me')")
    finally:
        conn.close()
    return path


def snapshot(path: Path) -> tuple[int, list[tuple], list[tuple]]:
    """The version, every schema object with its SQL, and the kept row."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        tables = {row[2] for row in objects}
        notes = conn.execute("SELECT * FROM notes").fetchall() if "notes" in tables else []
        return schema.schema_version(conn), objects, notes
    finally:
        conn.close()


def test_a_column_already_there_fails_version_2_at_its_second_statement_and_nothing_changes(
    tmp_path,
):
    # A version-1 file where someone added window_bars by hand: version 2 adds timeframe
    # (its first statement succeeds), then fails on window_bars.
    path = at_version(tmp_path / "v1.db", 1)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE alert_rules ADD COLUMN window_bars INTEGER")
    before = snapshot(path)
    with pytest.raises(sqlite3.OperationalError, match="duplicate column name: window_bars"):
        schema.setup(path)
    assert snapshot(path) == before
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(alert_rules)")]
    assert "timeframe" not in columns  # the first statement went with the rollback


def test_db_setup_reports_the_failed_migration_and_exits_1(tmp_path, caplog):
    path = at_version(tmp_path / "v1.db", 1)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE alert_rules ADD COLUMN window_bars INTEGER")
    before = snapshot(path)
    assert schema.main(["--db", str(path)]) == 1
    assert "duplicate column name: window_bars" in caplog.text
    assert snapshot(path) == before


@pytest.mark.parametrize("version", range(schema.LATEST_VERSION))
def test_every_migration_failing_after_its_first_statement_leaves_the_file_as_it_was(
    tmp_path, monkeypatch, version
):
    path = at_version(tmp_path / "ticks.db", version)
    before = snapshot(path)
    first, *rest = schema._statements(schema.MIGRATIONS[version])
    broken = "\n".join([first, "INSERT INTO no_such_table VALUES (1);", *rest])
    migrations = list(schema.MIGRATIONS)
    migrations[version] = broken
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    with pytest.raises(sqlite3.OperationalError, match="no such table: no_such_table"):
        schema.setup(path)
    assert snapshot(path) == before


def test_a_failure_in_a_later_migration_keeps_the_earlier_ones_committed(tmp_path, monkeypatch):
    path = at_version(tmp_path / "v1.db", 1)
    migrations = list(schema.MIGRATIONS)
    migrations[-1] = migrations[-1] + "\nINSERT INTO no_such_table VALUES (1);\n"
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    with pytest.raises(sqlite3.OperationalError):
        schema.setup(path)
    version, _, notes = snapshot(path)
    assert version == schema.LATEST_VERSION - 1  # each step is its own transaction
    assert notes == [("keep me",)]
    monkeypatch.undo()
    assert schema.setup(path) == schema.LATEST_VERSION - 1  # and the next run finishes
    assert snapshot(path)[0] == schema.LATEST_VERSION
