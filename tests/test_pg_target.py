"""What ``--db`` names (a SQLite path or a PostgreSQL URL), the password kept out of every
form meant for people, and the adapter that runs ``?``-style statements on psycopg.
No server needed: tests/test_pg_schema.py and tests/test_pg_writer.py use one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairs_monitor.store import postgres
from pairs_monitor.store.schema import LATEST_VERSION
from pairs_monitor.store.target import is_postgres_url, parse_target, redact

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("value", "postgres_url"),
    [
        (f"postgresql://trader:{SECRET}@db.example:5432/ticks", True),
        ("postgres://db.example/ticks", True),
        ("POSTGRESQL://db.example/ticks", True),
        ("  postgresql://db.example/ticks", True),
        ("data/ticks.db", False),
        ("/var/lib/ticks.db", False),
        ("postgresql:/ticks.db", False),  # one slash: a folder named postgresql:
        ("postgresql", False),
        ("sqlite:///ticks.db", False),
        (Path("postgresql://x"), False),  # a Path is a path, whatever its text
    ],
)
def test_a_url_is_told_from_a_path(value, postgres_url):
    assert is_postgres_url(value) is postgres_url
    target = parse_target(value)
    assert target.is_postgres is postgres_url
    assert (target.url is not None) is postgres_url
    assert (target.path is not None) is (not postgres_url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://trader:{SECRET}@db.example:5432/ticks",
            "postgresql://trader:***@db.example:5432/ticks",
        ),
        (
            f"postgresql://trader@db.example/ticks?password={SECRET}&sslmode=require",
            "postgresql://trader@db.example/ticks?password=***&sslmode=require",
        ),
        ("postgresql://db.example/ticks", "postgresql://db.example/ticks"),
        (
            f"postgres://trader:{SECRET}@[::1]:5433/ticks",
            "postgres://trader:***@[::1]:5433/ticks",
        ),
        (f"postgresql://trader:p%40ss{SECRET}@h/d", "postgresql://trader:***@h/d"),
    ],
)
def test_the_redacted_form_never_shows_the_password(url, shown):
    target = parse_target(url)
    assert redact(url) == shown
    for form in (target.redacted, str(target), repr(target), f"{target}"):
        assert SECRET not in form
        assert shown in form
    assert target.url == url  # the real URL is kept for connecting


def test_a_path_is_shown_as_it_is():
    assert redact("data/ticks.db") == "data/ticks.db"
    assert str(parse_target("data/ticks.db")) == "data/ticks.db"


@pytest.mark.parametrize(
    ("query", "expected", "named"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s", False),
        ("SELECT ?1, ?2, ?1", "SELECT %(p1)s, %(p2)s, %(p1)s", True),
        ("VALUES (:venue, :symbol)", "VALUES (%(venue)s, %(symbol)s)", True),
        ("SELECT x::bigint, :v::text", "SELECT x::bigint, %(v)s::text", True),
        ("SELECT '?', 'it''s ?' , ?", "SELECT '?', 'it''s ?' , %s", False),
        ("SELECT 5 % 2 -- 100% sure?\n, ?", "SELECT 5 %% 2 -- 100%% sure?\n, %s", False),
        ('SELECT "odd?name" FROM t', 'SELECT "odd?name" FROM t', False),
    ],
)
def test_sqlite_parameters_become_psycopg_ones(query, expected, named):
    assert postgres.translate(query) == (expected, named)


def test_every_version_has_a_postgresql_step():
    # A migration added to schema.MIGRATIONS needs its PostgreSQL twin in
    # postgres.MIGRATIONS: the two stores stay at one version.
    assert postgres.BASE_VERSION + len(postgres.MIGRATIONS) == LATEST_VERSION


def test_partition_names_are_utc_days():
    day = 1_700_000_000 // 86_400  # 2023-11-14
    assert postgres.partition_name(day) == "trades_p20231114"
    assert postgres.partition_name(0) == "trades_p19700101"
