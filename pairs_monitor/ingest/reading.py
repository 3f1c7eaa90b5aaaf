"""Reads of the store the daemon's threads make on connections of their own.

``--db`` names a SQLite file or a PostgreSQL database (store/target.py); every thread that
reads what an earlier run stored opens it through :func:`open_reader`, so the same
``?``-style statements run on either.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from pairs_monitor.store import connection, schema
from pairs_monitor.store.target import StoreTarget, parse_target

Database = str | Path | StoreTarget


def open_reader(db: Database) -> connection.Connection | None:
    """A read-only connection to ``db``; None for a SQLite file not created yet (nothing
    stored, nothing to read).

    :raises sqlite3.Error, psycopg.Error: the store cannot be opened.
    """
    target = parse_target(db)
    if target.path is not None and not target.path.exists():
        return None
    return connection.connect_read_only(target)


# What a failed read raises, on either store.
READ_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error, schema.SchemaError)


def one_row(cursor: Any) -> Any:
    """The row a statement that always answers one gives (an aggregate, ``RETURNING``).

    :raises LookupError: it gave none.
    """
    row = cursor.fetchone()
    if row is None:
        raise LookupError("a statement that answers one row answered none")
    return row
