"""The schema on a real PostgreSQL 15 (tests/helpers/postgres.py): the same tables and
columns as SQLite's, migrations that two processes starting at once run once, a foreign
database refused, the page's role refused every write but the alert tables, day partitions
of trades made on demand and dropped by retention while the bars stay."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pairs_monitor.store import postgres, schema
from pairs_monitor.store.schema import LATEST_VERSION, SchemaError
from pairs_monitor.store.target import redact
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.postgres import PASSWORD, PostgresCluster

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
DAY_US = 86_400_000_000
DAY0 = 1_700_006_400 // 86_400  # 2023-11-15, a day start


def db_setup(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "db_setup.py", "--db", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sqlite_columns(tmp_path: Path) -> dict[str, list[tuple[str, bool, bool]]]:
    path = tmp_path / "ticks.db"
    schema.setup(path)
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: [
                # A key column holds no NULL in either (SQLite's INTEGER PRIMARY KEY: the rowid).
                (name, bool(notnull or pk), bool(pk))
                for _cid, name, _decl, notnull, _default, pk in conn.execute(
                    f"PRAGMA table_info({table})"
                )
            ]
            for table in tables
        }


def postgres_columns(url: str) -> dict[str, list[tuple[str, bool, bool]]]:
    with postgres.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT c.table_name, c.column_name, c.is_nullable = 'NO',
                   EXISTS (SELECT 1 FROM information_schema.key_column_usage AS k
                           JOIN information_schema.table_constraints AS t
                             ON t.constraint_name = k.constraint_name
                            AND t.table_name = k.table_name
                           WHERE t.constraint_type = 'PRIMARY KEY'
                             AND k.table_name = c.table_name
                             AND k.column_name = c.column_name)
            FROM information_schema.columns AS c
            JOIN pg_class AS p ON p.relname = c.table_name
            WHERE c.table_schema = 'public' AND NOT p.relispartition
            ORDER BY c.table_name, c.ordinal_position
            """
        ).fetchall()
    columns: dict[str, list[tuple[str, bool, bool]]] = {}
    for table, name, notnull, pk in rows:
        columns.setdefault(table, []).append((name, notnull, pk))
    return columns


def test_the_tables_and_columns_are_sqlites(postgres_url, tmp_path):
    assert postgres.setup(postgres_url) == 0
    lite = sqlite_columns(tmp_path)
    pg = postgres_columns(postgres_url)
    assert pg.pop(postgres.VERSION_TABLE)
    # The partition key joins the primary key of trades: a trade's time never changes.
    trades_pk = [name for name, _notnull, pk in pg["trades"] if pk]
    assert trades_pk == ["venue", "symbol", "trade_id", "trade_time_us"]
    pg["trades"] = [(n, nn, pk and n != "trade_time_us") for n, nn, pk in pg["trades"]]
    assert pg == lite
    with postgres.connect(postgres_url) as conn:
        assert postgres.schema_version(conn) == LATEST_VERSION
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'trades'").fetchone()
    assert kind == ("p",)  # partitioned


def test_db_setup_twice_changes_nothing_and_never_shows_the_password(postgres_url):
    first, second = db_setup(postgres_url), db_setup(postgres_url)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"is at schema version {LATEST_VERSION}" in first.stderr
    assert "already at schema version" in second.stderr
    for done in (first, second):
        assert PASSWORD not in done.stdout + done.stderr
        assert redact(postgres_url) in done.stderr


def test_two_processes_migrating_at_once_migrate_once(postgres_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "db_setup.py", "--db", postgres_url],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sum("created schema version" in out for out in outputs) == 1, outputs
    assert sum("already at schema version" in out for out in outputs) == 1, outputs


def test_two_connections_migrating_at_the_same_instant_migrate_once(postgres_url):
    barrier = threading.Barrier(2)
    starts: list[int] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with postgres.connect(postgres_url) as conn:
                barrier.wait()
                starts.append(postgres.migrate(conn, "test"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(starts) == [0, LATEST_VERSION]


def test_a_foreign_database_is_refused_and_left_alone(postgres_url):
    with postgres.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(SchemaError, match="invoices but no pairs_monitor_schema"):
        postgres.setup(postgres_url)
    done = db_setup(postgres_url)
    assert done.returncode == 1
    assert "not made by db_setup.py" in done.stderr
    assert PASSWORD not in done.stderr
    with postgres.connect(postgres_url) as conn:
        assert postgres.schema_version(conn) == 0
        assert conn.execute("SELECT to_regclass('trades')").fetchone() == (None,)


def test_a_newer_database_is_refused(postgres_url):
    postgres.setup(postgres_url)
    with postgres.connect(postgres_url) as conn:
        conn.execute("UPDATE pairs_monitor_schema SET version = %s", (LATEST_VERSION + 1,))
    with pytest.raises(SchemaError, match="newer than this code knows"):
        postgres.setup(postgres_url)


def test_a_wrong_password_is_an_error_that_does_not_show_it(postgres_cluster: PostgresCluster):
    wrong = postgres_cluster.url().replace(PASSWORD, "not-the-Pa55word")
    done = db_setup(wrong)
    assert done.returncode == 1
    assert "password authentication failed" in done.stderr
    assert "not-the-Pa55word" not in done.stderr


@pytest.fixture
def page_conn(postgres_url, postgres_cluster):
    """A login of the page's role, as a desk would make one, switched to the role itself."""
    postgres.setup(postgres_url)
    with postgres.connect(postgres_url) as admin:
        admin.execute(
            "DO $$ BEGIN CREATE ROLE page_login LOGIN PASSWORD 'page-pw' IN ROLE pairs_page; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        admin.execute(
            "INSERT INTO alert_rules (kind, venue, symbol, threshold, rearm, created_ms) "
            "VALUES ('price_above', 'binance-spot', 'BTCUSDT', 1, 0, 0)"
        )
        admin.execute(
            "INSERT INTO alert_events (rule_id, fired_ms, value, message) VALUES (1, 5, 2, 'x')"
        )
    url = postgres_url.replace(f"pm_test:{PASSWORD}", "page_login:page-pw")
    with postgres.connect(url) as conn:
        conn.execute("SET ROLE pairs_page")
        yield conn


def test_the_page_role_reads_everything(page_conn):
    for table in postgres.expected_tables():
        page_conn.execute(f"SELECT count(*) FROM {table}").fetchone()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO trades VALUES ('binance-spot', 'BTCUSDT', 1, 1, 1, 1, 0)",
        "DELETE FROM trades",
        "UPDATE bars_1s SET close = 0",
        "INSERT INTO alert_events (rule_id, fired_ms, value, message) VALUES (1, 1, 1, 'forged')",
        "UPDATE alert_events SET value = 0",
        "INSERT INTO alert_deliveries (event_id, channel, target, updated_ms) "
        "VALUES (1, 'c', 't', 0)",
        "DELETE FROM feed_status",
        "DROP TABLE trades",
        "CREATE TABLE mine (x int)",
    ],
)
def test_the_page_role_is_refused_every_other_write(page_conn, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        page_conn.execute(statement)


def test_the_page_role_writes_what_the_page_writes(page_conn):
    rule_id = page_conn.execute(
        "INSERT INTO alert_rules (kind, venue, symbol, threshold, rearm, created_ms) "
        "VALUES ('price_below', 'binance-spot', 'ETHUSDT', 1, 2, 0) RETURNING rule_id"
    ).fetchone()[0]
    page_conn.execute("UPDATE alert_rules SET enabled = 0 WHERE rule_id = %s", (rule_id,))
    acked = page_conn.execute("UPDATE alert_events SET acked_ms = 9 WHERE event_id = 1")
    assert acked.rowcount == 1
    assert page_conn.execute("DELETE FROM alert_rules WHERE rule_id = 1").rowcount == 1
    assert page_conn.execute("SELECT count(*) FROM alert_events").fetchone() == (0,)


def trade(day: int, trade_id: int, second: int = 0) -> tuple:
    return ("binance-spot", "BTCUSDT", trade_id, day * DAY_US + second * 1_000_000, 100.0, 1.0, 0)


def test_partitions_are_made_for_the_days_written_and_retention_keeps_the_bars(postgres_url):
    writer = TradeWriter(postgres_url)
    writer.start()
    rows = [trade(DAY0 + day, 10 * day + i, second=i) for day in range(4) for i in range(3)]
    writer.put_trades(rows)
    assert writer.close()
    with postgres.connect(postgres_url) as conn:
        assert postgres.partition_days(conn) == {DAY0, DAY0 + 1, DAY0 + 2, DAY0 + 3}
        now = (DAY0 + 3) * 86_400_000 + 1_000  # early on the fourth day
        dropped = postgres.drop_trade_partitions_before(conn, 2, now_ms_=now)
        assert dropped == [postgres.partition_name(DAY0), postgres.partition_name(DAY0 + 1)]
        assert postgres.partition_days(conn) == {DAY0 + 2, DAY0 + 3}
        kept = conn.execute("SELECT trade_id FROM trades ORDER BY trade_id").fetchall()
        assert kept == [(20,), (21,), (22,), (30,), (31,), (32,)]
        assert conn.execute("SELECT count(*), sum(trade_count) FROM bars_1s").fetchone() == (
            12,
            12,
        )
        assert postgres.drop_trade_partitions_before(conn, 2, now_ms_=now) == []
        with pytest.raises(ValueError, match="at least 1"):
            postgres.drop_trade_partitions_before(conn, 0)


def test_a_writer_after_retention_makes_a_dropped_day_again(postgres_url):
    writer = TradeWriter(postgres_url)
    writer.start()
    writer.put_trades([trade(DAY0, 1)])
    writer.flush()
    with postgres.connect(postgres_url) as conn:
        postgres.drop_trade_partitions_before(conn, 1, now_ms_=(DAY0 + 5) * 86_400_000)
    writer.put_trades([trade(DAY0, 2, second=1)])  # a late backfill of that day
    writer.flush(timeout=30)
    assert writer.close()
    with postgres.connect(postgres_url) as conn:
        assert conn.execute("SELECT trade_id FROM trades").fetchall() == [(2,)]


def test_symbol_between_two_times_reads_one_partition_by_index(postgres_url):
    postgres.setup(postgres_url)
    with postgres.connect(postgres_url) as conn:
        with conn.transaction():
            postgres.ensure_trade_partitions(conn, range(DAY0, DAY0 + 3))
            conn.execute(
                "INSERT INTO trades SELECT v, s, g, %s + g * 10000, 1, 1, 0 "
                "FROM generate_series(1, 20000) AS g, (VALUES ('binance-spot')) AS v(v), "
                "(VALUES ('BTCUSDT'), ('ETHUSDT'), ('SOLUSDT')) AS s(s)",
                ((DAY0 + 1) * DAY_US,),
            )
        conn.execute("ANALYZE trades")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT * FROM trades WHERE venue = 'binance-spot' "
                "AND symbol = 'ETHUSDT' AND trade_time_us BETWEEN %s AND %s",
                ((DAY0 + 1) * DAY_US + 10**7, (DAY0 + 1) * DAY_US + 2 * 10**7),
            )
        )
    assert postgres.partition_name(DAY0 + 1) in plan
    assert postgres.partition_name(DAY0) not in plan
    assert postgres.partition_name(DAY0 + 2) not in plan
    assert "Index" in plan and "Seq Scan" not in plan, plan


def test_a_database_owner_without_special_rights_sets_it_up(postgres_cluster, postgres_url):
    """As docs/postgres.md says: the daemon's login owns the database; the administrator
    made the page's role beforehand, so the login needs neither superuser nor CREATEROLE."""
    name = "owned_by_ingest"
    with postgres.connect(postgres_url) as admin:
        admin.execute(
            "DO $$ BEGIN CREATE ROLE ingest LOGIN PASSWORD 'ingest-pw'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        admin.execute(
            "DO $$ BEGIN CREATE ROLE pairs_page NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        admin.execute(f"CREATE DATABASE {name} OWNER ingest LOCALE 'C' TEMPLATE template0")
    url = postgres_cluster.url(name).replace(f"pm_test:{PASSWORD}", "ingest:ingest-pw")
    done = db_setup(url)
    assert done.returncode == 0, done.stderr
    assert "ingest-pw" not in done.stderr
    writer = TradeWriter(url)
    writer.start()
    writer.put_trades([trade(DAY0, 1)])
    assert writer.close()
    with postgres.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (1,)
        rights = conn.execute(
            "SELECT has_table_privilege('pairs_page', 'trades', 'SELECT'), "
            "has_table_privilege('pairs_page', 'trades', 'INSERT'), "
            "has_table_privilege('pairs_page', 'alert_rules', 'INSERT')"
        ).fetchone()
    assert rights == (True, False, True)


def test_a_second_daemon_is_refused_the_feeds_another_records(postgres_url):
    postgres.setup(postgres_url)
    first, second = postgres.FeedClaims(postgres_url), postgres.FeedClaims(postgres_url)
    try:
        first.claim([("binance-spot", "BTCUSDT"), ("binance-spot", "ETHUSDT")])
        second.claim([("binance-usdm", "BTCUSDT")])  # another market: no conflict
        with pytest.raises(postgres.FeedTakenError) as refused:
            second.claim([("binance-spot", "SOLUSDT"), ("binance-spot", "ETHUSDT")], wait_s=0.3)
        message = str(refused.value)
        assert "already records binance-spot ETHUSDT (pairs-monitor feeds" in message
        assert "SOLUSDT" not in message
        assert PASSWORD not in message
        assert second.held == [("binance-usdm", "BTCUSDT")]  # all or none: SOLUSDT not taken
        first.release()  # the first daemon stops: its feeds are free a moment later
        second.claim([("binance-spot", "ETHUSDT")])  # asked again for up to 5 s meanwhile
        assert ("binance-spot", "ETHUSDT") in second.held
    finally:
        first.release()
        second.release()


def test_a_killed_daemon_frees_its_feeds(postgres_url):
    postgres.setup(postgres_url)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pairs_monitor.store.postgres import FeedClaims\n"
            "claims = FeedClaims(sys.argv[1])\n"
            "claims.claim([('binance-spot', 'BTCUSDT')])\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
            postgres_url,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    claims = postgres.FeedClaims(postgres_url)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(postgres.FeedTakenError):
            claims.claim([("binance-spot", "BTCUSDT")], wait_s=0.3)
        holder.kill()  # kill -9
        holder.wait()
        started = time.monotonic()
        claims.claim([("binance-spot", "BTCUSDT")])  # the restart is not refused
        assert claims.held == [("binance-spot", "BTCUSDT")]
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        claims.release()


def test_a_read_only_connection_reads_and_cannot_write(postgres_url):
    with pytest.raises(SchemaError, match="no pairs-monitor schema: run"):
        postgres.connect_read_only(postgres_url)
    postgres.setup(postgres_url)
    reader = postgres.connect_read_only(postgres_url)
    try:
        assert reader.execute("SELECT count(*) FROM trades WHERE venue = ?", ("x",)).fetchone() == (
            0,
        )
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("DELETE FROM alert_rules")
    finally:
        reader.close()
