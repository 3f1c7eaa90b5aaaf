"""One way for any module to open the store ``--db`` names, SQLite file or PostgreSQL URL.

The modules moving to PostgreSQL replace ``schema.connect_read_only(path)`` with
``connect_read_only(target)`` and ``schema.schema_version(conn)`` with
``schema_version(conn)``: what they get runs their ``?``-style statements on either store
(``sqlite3.Connection``, or ``postgres.PgConnection``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pairs_monitor.store import postgres, schema
from pairs_monitor.store.postgres import PgConnection
from pairs_monitor.store.target import StoreTarget, parse_target

Connection = sqlite3.Connection | PgConnection


def connect_read_only(db: str | Path | StoreTarget) -> Connection:
    """Open the store read-only: SQLite ``mode=ro``, or PostgreSQL read-only transactions.

    :raises FileNotFoundError: for a SQLite file that does not exist.
    :raises schema.SchemaError: for a PostgreSQL database without our schema.
    """
    target = parse_target(db)
    if target.url is not None:
        return postgres.connect_read_only(target.url)
    assert target.path is not None
    return schema.connect_read_only(target.path)


def schema_version(conn: Connection) -> int:
    """The schema version of either store (0: none yet)."""
    if isinstance(conn, PgConnection):
        return postgres.schema_version(conn.raw)
    return schema.schema_version(conn)


def is_postgres(conn: Connection) -> bool:
    """True for a PostgreSQL connection: where a statement has to differ (rare: see
    docs/postgres.md), this picks it."""
    return isinstance(conn, PgConnection)
