"""Tests run the same on either store: a SQLite file or a PostgreSQL database.

- :func:`store_db`: a fixture parametrized over both, ``sqlite`` (a file in ``tmp_path``)
  and ``postgres`` (a fresh database of the session's throwaway cluster, marked
  ``postgres``); its value is what ``--db`` takes: a path or a URL, as a string, without a
  schema yet.
- :func:`rows` and :func:`add_rule`: plain SQL with ``?`` parameters, as any client
  writes it, on either (the SQLite-only alert tests use them too).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pairs_monitor.store import postgres
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import is_postgres_url

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_db(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A SQLite path or a PostgreSQL URL (a database of its own), not set up yet."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "ticks.db")


def connect(db: str | Path) -> Connection:
    """A writing connection in autocommit mode, running ``?`` statements on either store."""
    if is_postgres_url(db):
        return postgres.PgConnection(
            postgres.connect(str(db), application_name="pairs-monitor test")
        )
    return sqlite3.connect(db, isolation_level=None)


def rows(db: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection; its rows (none for a statement without)."""
    conn = connect(db)
    try:
        cursor = conn.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        conn.close()


def add_rule(
    db: str | Path, kind: str, symbol: str, threshold: float, rearm: float, **columns: Any
) -> int:
    """Insert a rule with plain SQL, as any client may; return its id."""
    values = {
        "kind": kind,
        "venue": "sim",
        "symbol": symbol,
        "threshold": threshold,
        "rearm": rearm,
        "created_ms": 0,
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    ((rule_id,),) = rows(
        db,
        f"INSERT INTO alert_rules ({names}) VALUES ({marks}) RETURNING rule_id",
        tuple(values.values()),
    )
    return int(rule_id)
