"""Alerts on PostgreSQL beyond what tests/test_alerts_service.py and test_alerts_cli.py
run on both stores: ``ingest.py alerts`` as a user runs it against a real server (and
never showing the password), the evaluator's bars aggregated alike on both stores
(PostgreSQL has no bare column beside ``max()``: its statement is its own), and rules
added at once by several clients stored once, and the service going on after the server
restarts.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pairs_monitor.alerts import cli, rules
from pairs_monitor.alerts.bars import BarCache
from pairs_monitor.alerts.evaluator import AlertService
from pairs_monitor.store import connection, schema
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.alerts_env import Tape, Webhook, wait_for
from tests.helpers.either_store import add_rule, connect, rows
from tests.helpers.postgres import PASSWORD, PostgresCluster

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
V, S = "sim", "ETHUSDT"
START_S = 1_749_999_960  # a multiple of 5 and of 60


def alerts(db: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python ingest.py alerts --db DB ...``, as a user types it."""
    return subprocess.run(
        [sys.executable, "ingest.py", "alerts", "--db", db, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ingest_py_alerts_adds_lists_and_acknowledges_on_a_server(postgres_url):
    schema.setup(postgres_url)
    added = alerts(
        postgres_url, "add", "price_below", "btcusdt", "--venue", "sim", "--threshold", "9",
        "--rearm", "10",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "added rule 1, BTCUSDT on sim: price below 9" in added.stdout
    rows(
        postgres_url,
        "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message, threshold)"
        " VALUES (1, 1800000000000, 1800000000, 8.5, 'BTCUSDT below 9', 9)",
    )
    acked = alerts(postgres_url, "ack", "1")
    assert (acked.returncode, acked.stdout) == (0, "1 firing(s) acknowledged\n")
    assert rows(postgres_url, "SELECT acked_ms IS NOT NULL FROM alert_events") == [(True,)]
    for done in (added, acked):
        assert PASSWORD not in done.stdout + done.stderr
    # The rest in this process (each command costs the daemon's imports as a process):
    # the server's foreign keys take a deleted rule's firings with it.
    said = io.StringIO()
    assert cli.main(["--db", postgres_url, "delete", "1"], out=said) == 0
    assert said.getvalue() == "rule 1 deleted, with its firings\n"
    assert rows(postgres_url, "SELECT count(*) FROM alert_events") == [(0,)]


def test_a_database_without_the_schema_or_a_wrong_password_is_said_without_it(postgres_url):
    empty = alerts(postgres_url, "list")
    assert empty.returncode == 1
    assert "has no pairs-monitor schema" in empty.stderr or "schema version 0" in empty.stderr
    assert "run `python db_setup.py" in empty.stderr
    wrong = postgres_url.replace(PASSWORD, "not-the-password")
    refused = alerts(wrong, "list")
    assert refused.returncode == 1 and "password authentication failed" in refused.stderr
    for done in (empty, refused):
        assert PASSWORD not in done.stderr and "not-the-password" not in done.stderr


def bars_on(db: str, bar_seconds: int) -> tuple[BarCache, list[tuple[int, float, float]]]:
    """The bars the evaluator reads of ``S`` at ``bar_seconds``, whole and then extended."""
    conn = connection.connect_read_only(db)
    try:
        cache = BarCache(V, S, bar_seconds, verify_s=0.0)
        cache.refresh(conn, START_S, START_S + 30)
        bars = cache.bars
        first = list(zip(bars.time_s.tolist(), bars.close, bars.volume, strict=True))
        cache.refresh(conn, START_S, START_S + 120)  # extends, after checking what it holds
        return cache, first
    finally:
        conn.close()


@pytest.mark.parametrize("bar_seconds", [1, 5, 60])
def test_the_evaluators_bars_are_the_same_on_both_stores(tmp_path, postgres_url, bar_seconds):
    # Trades in seconds 0..99, not every second, arriving out of time order within a bin.
    rng = np.random.default_rng(7)
    seconds = sorted(rng.choice(100, size=60, replace=False).tolist(), key=lambda s: (s // 5, -s))
    trades = [
        (V, S, i + 1, (START_S + s) * 1_000_000, 100.0 + s, 0.25 + s / 100, 0)
        for i, s in enumerate(seconds)
    ]
    sqlite_db = str(tmp_path / "ticks.db")
    for db in (sqlite_db, postgres_url):
        writer = TradeWriter(db)
        writer.start()
        writer.put_trades(trades)
        assert writer.close()
    (on_sqlite, first_sqlite), (on_postgres, first_postgres) = (
        bars_on(sqlite_db, bar_seconds),
        bars_on(postgres_url, bar_seconds),
    )
    assert first_postgres == first_sqlite
    for name in ("time_s", "close", "volume"):
        got, expected = getattr(on_postgres.bars, name), getattr(on_sqlite.bars, name)
        np.testing.assert_array_equal(got, expected)
    assert on_postgres.reloads == on_sqlite.reloads == 1  # extended, the cache found intact
    # and the right bars: each bin's close is its last second's, its volume their sum
    bins = sorted({s // bar_seconds * bar_seconds for s in seconds})
    assert on_sqlite.bars.time_s.tolist() == [START_S + b for b in bins]
    last = [max(s for s in seconds if s // bar_seconds * bar_seconds == b) for b in bins]
    assert on_sqlite.bars.close.tolist() == [100.0 + s for s in last]
    volume = [
        sum(0.25 + s / 100 for s in seconds if s // bar_seconds * bar_seconds == b) for b in bins
    ]
    np.testing.assert_allclose(on_sqlite.bars.volume, volume, rtol=1e-12)


def test_the_same_rule_added_by_several_clients_at_once_is_stored_once(postgres_url):
    schema.setup(postgres_url)
    rule = rules.Rule(
        rule_id=0, kind="price_above", venue=V, symbol=S, threshold=110.0, rearm=105.0
    )
    clients = 6
    start = threading.Barrier(clients)
    outcomes: list[object] = []

    def add() -> None:
        conn = connect(postgres_url)
        try:
            start.wait(10)
            outcomes.append(rules.store_rule(conn, rule, 0))
        except rules.DuplicateRule as exc:
            outcomes.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=add) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stored = [o for o in outcomes if isinstance(o, int)]
    assert len(outcomes) == clients and len(stored) == 1
    assert all(isinstance(o, rules.DuplicateRule) and o.rule_id == stored[0] for o in outcomes
               if o not in stored)  # fmt: skip
    assert rows(postgres_url, "SELECT rule_id FROM alert_rules") == [(stored[0],)]


@pytest.mark.daemon
def test_the_service_judges_and_delivers_on_after_the_server_restarts(
    postgres_cluster: PostgresCluster, postgres_url: str
):
    writer = TradeWriter(postgres_url)
    writer.start()
    tape = Tape(writer)
    service = None
    try:
        with Webhook() as hook:
            tape.trade(S, 100.0)
            add_rule(postgres_url, "price_above", S, 110.0, 105.0)
            service = AlertService(postgres_url, writer, [hook.url], threading.Event())
            service.start()
            tape.trade(S, 111.0)
            wait_for(lambda: len(hook.accepted()) == 1, 10, "the first delivery")

            postgres_cluster.restart()  # every connection cut: the service's and the writer's
            tape.trade(S, 104.0)  # re-armed
            wait_for(lambda: rows(postgres_url, "SELECT armed FROM alert_rules") == [(1,)], 10)
            tape.trade(S, 115.0)
            wait_for(lambda: len(hook.accepted()) == 2, 15, "the delivery after the restart")
            assert "value 115" in hook.accepted()[1]["message"]
        assert rows(postgres_url, "SELECT status FROM alert_deliveries ORDER BY event_id") == [
            ("sent",),
            ("sent",),
        ]
    finally:
        if service is not None:
            assert service.close()
        writer.close()
