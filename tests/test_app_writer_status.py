"""The writer's health on the Live tab: the page run headless (AppTest) over a real SQLite
file whose ``writer_status`` row the test writes, as the daemon's status reporter would."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import STALE_STATUS_MS
from tests.helpers.page_db import build_pair_db

pytestmark = pytest.mark.apptest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
CANNOT_WRITE = "The daemon cannot write to the database since"
STALE = "The daemon's status is stale"
# What a commit error could hold that markdown would otherwise interpret.
NASTY_ERROR = "disk I/O error near `x`: *bold* $y$ :red[z] <b>w</b> [link](http://a)"


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("writer") / "ticks.db", seconds=300)


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    """A private copy whose writer_status the test sets."""
    target = tmp_path / "ticks.db"
    with sqlite3.connect(base_db) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def set_writer_status(path: Path, **row: object) -> None:
    """Write the single writer_status row."""
    values = {
        "state": "ok",
        "last_error": None,
        "failing_since_ms": None,
        "queue_depth": 0,
        "trades_stored": 600,
        "updated_ms": now_ms(),
    } | row
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO writer_status (id, state, last_error, failing_since_ms,"
            " queue_depth, trades_stored, updated_ms) VALUES (1, ?, ?, ?, ?, ?, ?)",
            tuple(values.values()),
        )
    conn.close()


def run_page(monkeypatch, path: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def bodies(elements) -> list[str]:
    return [str(e.value) for e in elements]


def test_a_writer_that_cannot_commit_is_an_error_with_its_last_error(monkeypatch, db):
    since_ms = now_ms() - 42_000
    set_writer_status(
        db,
        state="retrying",
        last_error=NASTY_ERROR,
        failing_since_ms=since_ms,
        queue_depth=12_345,
    )
    at = run_page(monkeypatch, db)
    errors = [b for b in bodies(at.error) if b.startswith(CANNOT_WRITE)]
    assert len(errors) == 1, bodies(at.error)
    since = pd.Timestamp(since_ms, unit="ms", tz="UTC")
    assert f"{CANNOT_WRITE} {since:%Y-%m-%d %H:%M:%S} UTC" in errors[0]
    # The error verbatim, in a code span fenced past its own backtick: shown as written.
    assert f"``{' ' + NASTY_ERROR + ' '}``" in errors[0]
    assert "12,345 items wait in its queue" in errors[0]
    assert not any(b.startswith(STALE) for b in bodies(at.warning))


def test_a_stale_writer_row_while_the_run_is_open_is_a_warning(monkeypatch, db):
    set_writer_status(db, updated_ms=now_ms() - STALE_STATUS_MS - 55_000)
    at = run_page(monkeypatch, db)
    stale = [b for b in bodies(at.warning) if b.startswith(STALE)]
    assert len(stale) == 1, bodies(at.warning)
    reported = re.search(r"last reported (\d+) s ago", stale[0])
    # 60 s when the row was written, plus however long the page took to draw.
    assert reported is not None and 60 <= int(reported.group(1)) <= 90, stale[0]
    assert not any(b.startswith(CANNOT_WRITE) for b in bodies(at.error))


def test_a_stale_writer_row_after_the_run_stopped_is_no_warning(monkeypatch, db):
    set_writer_status(db, state="stopped", updated_ms=now_ms() - 3_600_000)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ingest_runs SET stopped_ms = ?", (now_ms() - 3_600_000,))
    conn.close()
    at = run_page(monkeypatch, db)
    assert not any(b.startswith(STALE) for b in bodies(at.warning))
    assert not any(b.startswith(CANNOT_WRITE) for b in bodies(at.error))


def test_a_healthy_writer_is_one_caption(monkeypatch, db):
    set_writer_status(db, queue_depth=7, trades_stored=1_800)
    at = run_page(monkeypatch, db)
    assert "Writer: ok, 7 items queued, 1,800 trades stored this run." in bodies(at.caption)
    assert not any(b.startswith(STALE) for b in bodies(at.warning))


@pytest.mark.parametrize("older", ["no table (schema before v3)", "table without a row"])
def test_an_older_database_shows_no_writer_health(monkeypatch, db, older):
    with sqlite3.connect(db) as conn:
        if older == "table without a row":
            conn.execute("DELETE FROM writer_status")
        else:
            conn.execute("DROP TABLE writer_status")
    conn.close()
    at = run_page(monkeypatch, db)
    assert "Feed health" in bodies(at.subheader)
    assert not any(b.startswith("Writer:") for b in bodies(at.caption))
    assert not any(b.startswith(CANNOT_WRITE) for b in bodies(at.error))


def test_refusals_and_abandoned_gaps_are_shown_with_their_counts(monkeypatch, db):
    """What the daemon refused or could not recover (schema version 4) is on the page."""
    set_writer_status(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE writer_status SET rows_rejected = 4")
        conn.execute("UPDATE feed_status SET rejected = 3, gaps_abandoned = 2")
    conn.close()
    at = run_page(monkeypatch, db)
    warnings = bodies(at.warning)
    assert any("set aside 4 row(s)" in w for w in warnings), warnings
    assert any(w.startswith("Abandoned gaps:") for w in warnings), warnings
    assert any(w.startswith("Refused values:") for w in warnings), warnings
    table = feed_health_table(at)
    assert set(table["refused values"]) == {3} and set(table["abandoned gaps"]) == {2}


def test_a_version_3_database_shows_no_refusal_counts(monkeypatch, db):
    """Before version 4 the counts do not exist: zero, no warning, no error."""
    set_writer_status(db)
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE feed_status DROP COLUMN rejected")
        conn.execute("ALTER TABLE writer_status DROP COLUMN rows_rejected")
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    at = run_page(monkeypatch, db)
    warnings = bodies(at.warning)
    assert not any("set aside" in w or w.startswith("Refused values:") for w in warnings)
    assert set(feed_health_table(at)["refused values"]) == {0}


def feed_health_table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "refused values" in d.value.columns)
