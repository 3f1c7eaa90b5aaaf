"""The page on a PostgreSQL store: Streamlit's AppTest over a real throwaway PostgreSQL 15
database filled by the real TradeWriter, against the same data in a SQLite file.

What the page shows must not depend on the store: every metric, the bars export and the
statistics match the SQLite run. Its writes (alert rules, acknowledgements) go through
the page's role ``pairs_page``, which the server refuses any other write; the password of
the URL never appears in what the page draws.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.clock import now_ms
from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.alert_rules import AlertStore, new_rule
from pairs_monitor.page.settings import Leg, resolve_db_path, store_name, store_target
from pairs_monitor.store.target import redact
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.either_store import add_rule, rows
from tests.helpers.page_db import START_S, pair_trades, sim_params
from tests.helpers.postgres import PASSWORD, PostgresCluster

pytestmark = [pytest.mark.postgres, pytest.mark.apptest]

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SECONDS = 1200
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def fill(db: str) -> str:
    """The fixture pair (tests/helpers/page_db.py) written through the real TradeWriter
    into ``db`` (a path or a URL), with the daemon's run and feed_status rows in plain SQL
    both stores take."""
    writer = TradeWriter(db)
    writer.start()
    try:
        trades = pair_trades(seconds=SECONDS)
        for i in range(0, len(trades), 20_000):
            writer.put_trades(trades[i : i + 20_000])
        now = now_ms()

        def meta(conn: Any) -> None:
            conn.execute(
                "INSERT INTO ingest_runs (venue, source, symbols, params_json, pid, started_ms)"
                " VALUES ('sim', 'sim', ?, ?, 1, ?)",
                (",".join(SYMBOLS), json.dumps(sim_params()), now),
            )
            for symbol in SYMBOLS:
                conn.execute(
                    "INSERT INTO feed_status (venue, symbol, source, source_since_ms,"
                    " connected, last_trade_time_us, trades_per_s, updated_ms)"
                    " VALUES ('sim', ?, 'sim', ?, 1, ?, 2.0, ?)",
                    (symbol, now, (START_S + SECONDS) * 1_000_000, now),
                )

        writer.submit(meta)
        writer.flush()
    finally:
        assert writer.close()
    return db


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill(str(tmp_path_factory.mktemp("pg_page") / "ticks.db"))


@pytest.fixture(scope="module")
def pg_filled(postgres_cluster: PostgresCluster) -> str:
    """The same data in a PostgreSQL database, read (not written) by the tests using it."""
    return fill(postgres_cluster.create_database("page"))


@pytest.fixture
def pg_db(postgres_url: str) -> str:
    """A database of its own for a test that writes (rules, acknowledgements)."""
    return fill(postgres_url)


def run_app(monkeypatch: pytest.MonkeyPatch, db: str) -> AppTest:
    monkeypatch.setenv("TICKS_DB", db)
    return run(AppTest.from_file(APP, default_timeout=90))


def run(target: Any) -> AppTest:
    """Rerun the page after setting a widget or clicking (or as is); no exception."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    """Everything the page drew, every element's message in full (labels, values, help,
    tables' cells), markdown's escapes undone."""
    found: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        try:
            value = getattr(node, "value", None)
        except KeyError:  # Streamlit 1.56's AppTest: a widget whose state the run did not keep
            value = None
        if isinstance(value, pd.DataFrame):
            found.append(value.to_csv())
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return re.sub(r"\\(.)", r"\1", "\n".join(found))


def texts(elements: Any) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table(at: AppTest, *columns: str) -> pd.DataFrame:
    return next(f.value for f in at.dataframe if set(columns) <= set(f.value.columns))


def test_the_page_on_postgresql_shows_what_it_shows_on_sqlite(
    monkeypatch: pytest.MonkeyPatch, sqlite_db: str, pg_filled: str
) -> None:
    on_sqlite = run_app(monkeypatch, sqlite_db)
    on_postgres = run_app(monkeypatch, pg_filled)
    shown = metrics(on_postgres)
    assert shown == metrics(on_sqlite)
    assert {"z-score", "BTCUSDT last", "ETHUSDT last"} <= set(shown)
    assert shown["z-score"] != "—" and shown["BTCUSDT last"] != "—"
    pd.testing.assert_frame_equal(
        table(on_postgres, "time", "spread"), table(on_sqlite, "time", "spread")
    )
    # The slow tests, asked for on both, give the same verdicts and numbers.
    for at in (on_sqlite, on_postgres):
        run(at.button(key="run_stats").click())
    pd.testing.assert_frame_equal(table(on_postgres, "verdict"), table(on_sqlite, "verdict"))
    assert metrics(on_postgres) == metrics(on_sqlite)
    # The strip and feed health read the daemon's rows there too.
    assert "Feed health" in texts(on_postgres.subheader)
    assert "SIMULATED" in texts(on_postgres.warning)
    # What is SQLite's alone is said, not run.
    assert "not run on PostgreSQL" in texts(on_postgres.sidebar.caption)
    assert not on_postgres.error


def test_the_password_never_appears_on_the_page(
    monkeypatch: pytest.MonkeyPatch, postgres_cluster: PostgresCluster, pg_filled: str
) -> None:
    at = run(run_app(monkeypatch, pg_filled).button(key="run_stats").click())
    shown = page_text(at)
    assert redact(pg_filled) in shown  # the database is named ...
    assert PASSWORD not in shown  # ... without its password
    # Nor where it cannot be used: no such database, a wrong password, no schema.
    empty = postgres_cluster.create_database("empty")
    missing = pg_filled.rsplit("/", 1)[0] + "/no_such_database"
    # A database of its own: the page's connections are cached by the name it shows, the
    # same for two URLs that differ only in their password.
    wrong = postgres_cluster.create_database("wrong").replace(PASSWORD, "wrong-" + PASSWORD)
    expected = {
        empty: "has no pairs-monitor schema",
        missing: 'database "no_such_database" does not exist',
        wrong: "password authentication failed",
    }
    for db, said in expected.items():
        at = run_app(monkeypatch, db)
        shown = page_text(at)
        assert said in texts(at.error), texts(at.error)
        assert redact(db) in texts(at.error)
        assert PASSWORD not in shown and "wrong-" not in shown


def test_a_rule_added_and_a_firing_acknowledged_on_postgresql(
    monkeypatch: pytest.MonkeyPatch, pg_db: str
) -> None:
    at = run_app(monkeypatch, pg_db)
    run(at.selectbox(key="rule_kind").set_value("price_above"))
    run(at.selectbox(key="rule_symbol").set_value(Leg("sim", "ETHUSDT")))
    at.number_input(key="rule_threshold").set_value(5000.0)
    at.number_input(key="rule_rearm").set_value(4900.0)
    run(at.button(key="rule_add").click())
    stored = rows(
        pg_db, "SELECT rule_id, kind, venue, symbol, threshold, rearm, enabled FROM alert_rules"
    )
    assert [row[1:] for row in stored] == [("price_above", "sim", "ETHUSDT", 5000.0, 4900.0, 1)]
    # The same again is refused, naming the stored one; nothing more is stored.
    run(at.button(key="rule_add").click())
    assert f"rule {stored[0][0]}" in texts(at.error).lower()
    assert len(rows(pg_db, "SELECT rule_id FROM alert_rules")) == 1
    rule_id = stored[0][0]
    # The daemon fires it (plain SQL, as its evaluator stores a firing); the page shows it.
    ((event_id,),) = rows(
        pg_db,
        "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message, threshold)"
        " VALUES (?, ?, ?, 5001.0, 'ETHUSDT above 5000, value 5001', 5000.0) RETURNING event_id",
        (rule_id, now_ms(), now_ms() // 1000),
    )
    run(at)
    assert "1 alert firing not yet acknowledged" in texts(at.markdown)
    run(at.button(key=f"ack_{event_id}").click())
    ((acked_ms,),) = rows(
        pg_db, "SELECT acked_ms FROM alert_events WHERE event_id = ?", (event_id,)
    )
    assert acked_ms is not None and abs(acked_ms - now_ms()) < 60_000
    assert "not yet acknowledged" not in texts(at.markdown)
    # Pause, then delete: the firing goes with its rule (the server's foreign keys).
    run(at.button(key="rule_toggle").click())
    assert rows(pg_db, "SELECT enabled FROM alert_rules") == [(0,)]
    run(at.button(key="rule_delete").click())
    assert rows(pg_db, "SELECT count(*) FROM alert_rules") == [(0,)]
    assert rows(pg_db, "SELECT count(*) FROM alert_events") == [(0,)]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO trades (venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker)"
        " VALUES ('sim', 'BTCUSDT', 999999, 1714521600000000, 1.0, 1.0, 0)",
        "DELETE FROM trades",
        "UPDATE bars_1s SET close = 0",
        "DELETE FROM feed_status",
        "INSERT INTO alert_events (rule_id, fired_ms, value, message) VALUES (1, 1, 1, 'x')",
        "UPDATE alert_events SET message = 'x'",
        "DROP TABLE bars_1s",
        "TRUNCATE alert_rules",
    ],
)
def test_the_pages_write_connection_is_refused_all_but_the_alert_tables(
    pg_db: str, statement: str
) -> None:
    before = rows(pg_db, "SELECT count(*), sum(trade_id) FROM trades")
    store = AlertStore(store_name(pg_db))
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.execute(statement)
        # What it may do, it still does.
        rule = add_rule(pg_db, "price_above", "ETHUSDT", 5000.0, 4900.0)
        assert store.set_enabled(rule, False)
    finally:
        store.close()
    assert rows(pg_db, "SELECT count(*), sum(trade_id) FROM trades") == before


def test_a_login_outside_the_page_role_is_told_what_to_grant(
    monkeypatch: pytest.MonkeyPatch, pg_db: str
) -> None:
    rows(pg_db, "DROP ROLE IF EXISTS trader_outside")
    rows(pg_db, "CREATE ROLE trader_outside LOGIN PASSWORD 'outside-secret'")
    rows(pg_db, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO trader_outside")
    trader = re.sub(r"//[^@]+@", "//trader_outside:outside-secret@", pg_db)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            AlertStore(store_name(trader))
        said = str(refused.value)
        assert 'GRANT pairs_page TO "trader_outside"' in said
        assert "outside-secret" not in said and redact(trader) in said
        # The page reads on, and its Alerts tab and banner say what to grant.
        at = run_app(monkeypatch, trader)
        assert metrics(at)["z-score"] != "—"
        assert 'GRANT pairs_page TO "trader_outside"' in texts(at.error) + texts(at.warning)
        assert "outside-secret" not in page_text(at)
        # Granted, the same login adds rules.
        rows(pg_db, "GRANT pairs_page TO trader_outside")
        store = AlertStore(store_name(trader))
        try:
            rule = new_rule("price_above", Leg("sim", "ETHUSDT"), 6000.0, 5900.0)
            assert store.add_rule(rule) > 0
        finally:
            store.close()
    finally:
        rows(pg_db, "REASSIGN OWNED BY trader_outside TO CURRENT_USER")
        rows(pg_db, "DROP OWNED BY trader_outside")
        rows(pg_db, "DROP ROLE trader_outside")


def page_backends(db: str) -> list[tuple[Any, ...]]:
    """The server processes of the page's connections: (pid, application_name)."""
    return rows(
        db,
        "SELECT pid, application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name LIKE 'pairs-monitor %'"
        " ORDER BY application_name",
    )


def test_connections_the_server_drops_are_opened_again(
    monkeypatch: pytest.MonkeyPatch, pg_db: str
) -> None:
    at = run_app(monkeypatch, pg_db)
    z = metrics(at)["z-score"]
    before = page_backends(pg_db)
    assert [name for _, name in before] == ["pairs-monitor page", "pairs-monitor reader"]
    for pid, _ in before:  # as a restart or a network cut does
        assert rows(pg_db, "SELECT pg_terminate_backend(?)", (pid,)) == [(True,)]
    at = run(at)
    assert metrics(at)["z-score"] == z and not at.error
    after = page_backends(pg_db)
    assert [name for _, name in after] == [name for _, name in before]
    assert not {pid for pid, _ in after} & {pid for pid, _ in before}


def test_a_server_gone_is_said_and_the_page_draws_what_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = PostgresCluster({"fsync": "off"}).start()
    try:
        db = fill(cluster.create_database("gone"))
        at = run_app(monkeypatch, db)
        z = metrics(at)["z-score"]
        cluster._pg_ctl("stop", "-m", "fast")
        at = run(at)
        said = texts(at.error)
        assert redact(db) in said and "cannot be read now" in said, said
        assert PASSWORD not in page_text(at)
        assert [t.label for t in at.tabs] and at.button(key="refresh")  # still drawn
        cluster._pg_ctl("start")
        at = run(at)
        assert metrics(at)["z-score"] == z and not at.error
    finally:
        cluster.stop()


def test_the_read_only_connection_reads_either_store_the_same(
    sqlite_db: str, pg_filled: str
) -> None:
    found = []
    for db in (sqlite_db, pg_filled):
        reader = pipeline.ReadOnlyDB(store_name(db))
        try:
            found.append(
                (
                    reader.run(queries.series),
                    reader.run(queries.feed_order),
                    reader.run(queries.latest_run, "sim").symbols,  # type: ignore[union-attr]
                    reader.run(queries.latest_run, "binance-spot"),
                    reader.run(queries.writer_status),
                    reader.run(queries.schema_doubts),
                    reader.run(queries.future_bars, "sim", "BTCUSDT", START_S),
                    reader.run(queries.has_table, "kline_bars"),
                    reader.run(queries.has_table, "no_such_table"),
                    reader.run(queries._has_column, "bars_1s", "from_klines"),
                    reader.run(queries._has_column, "bars_1s", "no_such_column"),
                )
            )
        finally:
            reader.close()
    assert found[0] == found[1]
    assert found[1][0] == [("sim", s) for s in SYMBOLS]
    assert found[1][6] == (SECONDS - 1, START_S + SECONDS - 1)
    assert found[1][7:] == (True, False, True, False)


def test_the_url_is_taken_from_db_or_ticks_db_and_named_without_its_password() -> None:
    url = "postgresql://alice:s3cret@db.example:5433/ticks?sslmode=require"
    given = resolve_db_path(["--db", url], {"TICKS_DB": "/y/b.db"})
    assert given == url and resolve_db_path([], {"TICKS_DB": url}) == url
    name = store_name(given)
    assert name == "postgresql://alice:***@db.example:5433/ticks?sslmode=require"
    assert store_target(name).url == url  # the connections get the password
    assert store_name("data/ticks.db") == "data/ticks.db"
    assert store_target("data/ticks.db").path == Path("data/ticks.db")
