"""A database the page should not trust blindly: a newer schema, no schema version, or a
damaged file. The page says so, keeps drawing what it can, and writes nothing."""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.tabs import TAB_NAMES
from pairs_monitor.store import schema
from tests.helpers.page_db import build_pair_db

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    path = build_pair_db(tmp_path_factory.mktemp("doubts") / "ticks.db")
    conn = sqlite3.connect(path)  # one self-contained file: no -wal to carry along
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return path


def copy_with(pair_db: Path, tmp_path: Path, *statements: str) -> Path:
    path = tmp_path / "ticks.db"
    shutil.copy(pair_db, path)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def corrupt_a_trades_page(path: Path) -> int:
    """Scribble over the header of a leaf page in the middle of the trades table."""
    conn = sqlite3.connect(path)
    pages = [
        r[0]
        for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'trades' AND pagetype = 'leaf' ORDER BY pageno"
        )
    ]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    page = pages[len(pages) // 2]
    with open(path, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * 8)
    return page


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plain(elements) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def page(monkeypatch, db: Path, until=None) -> AppTest:
    """The page over ``db``, rerun (up to 20 s) until ``until(at)`` holds."""
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    deadline = time.monotonic() + 20
    while until is not None and not until(at) and time.monotonic() < deadline:
        time.sleep(0.2)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.tabs] == list(TAB_NAMES)
    return at


@pytest.mark.apptest
def test_a_newer_schema_version_is_said_and_nothing_written(monkeypatch, pair_db, tmp_path):
    newer = schema.LATEST_VERSION + 1
    db = copy_with(pair_db, tmp_path, f"PRAGMA user_version = {newer}")
    before = digest(db)
    at = page(monkeypatch, db, until=lambda at: "file: ok" in plain(at.sidebar.caption))
    assert (
        f"its schema version {newer} is newer than this code knows ({schema.LATEST_VERSION})"
        in plain(at.warning)
    )
    assert any(m.label == "z-score" for m in at.metric)  # the page still draws
    assert digest(db) == before


@pytest.mark.apptest
def test_our_tables_without_a_schema_version_are_said(monkeypatch, pair_db, tmp_path):
    db = copy_with(pair_db, tmp_path, "PRAGMA user_version = 0")
    at = page(monkeypatch, db)
    assert "no schema version, so it was not made by db_setup.py" in plain(at.warning)


@pytest.mark.apptest
def test_a_damaged_file_is_said_and_the_page_draws_on(monkeypatch, pair_db, tmp_path):
    db = copy_with(pair_db, tmp_path)
    corrupt_a_trades_page(db)
    before = digest(db)
    at = page(monkeypatch, db, until=lambda at: "quick_check" in plain(at.error))
    errors = plain(at.error)
    assert "fails SQLite's integrity check (`PRAGMA quick_check`)" in errors
    assert "The page changes nothing" in errors
    assert any(m.label == "z-score" for m in at.metric)  # bars are intact: Live still draws
    assert digest(db) == before


@pytest.mark.apptest
def test_a_sound_file_gets_no_warning(monkeypatch, pair_db):
    at = page(monkeypatch, pair_db, until=lambda at: "file: ok" in plain(at.sidebar.caption))
    assert "Integrity check of the file: ok" in plain(at.sidebar.caption)
    assert "quick_check" not in plain(at.error) and "schema version" not in plain(at.warning)


def test_quick_check_reports_the_damage_without_writing(pair_db, tmp_path):
    db = copy_with(pair_db, tmp_path)
    assert pipeline.IntegrityCheck(db).wait(20)
    sound = pipeline.IntegrityCheck(db)
    assert sound.wait(20) and sound.problems == []
    corrupt_a_trades_page(db)
    before = digest(db)
    damaged = pipeline.IntegrityCheck(db)
    assert damaged.wait(20)
    assert damaged.problems and any("page" in p or "malformed" in p for p in damaged.problems)
    assert digest(db) == before
    conn = schema.connect_read_only(db)
    try:
        assert queries.schema_doubts(conn) == []
    finally:
        conn.close()
