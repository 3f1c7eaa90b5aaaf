"""The daemon's alert service with real parts: a database written by the real
TradeWriter, the evaluator and delivery threads, a local webhook that refuses its first
post, a local SMTP server. Firing, delivery, retry, a restart in the middle of a retry,
hysteresis and cooldown are asserted from what the servers received and what the
database holds, on a SQLite file and on a PostgreSQL database alike (``store_db``; the
locked-file test is SQLite's alone).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pairs_monitor.alerts.delivery import Firing
from pairs_monitor.alerts.evaluator import AlertService
from pairs_monitor.clock import now_ms
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.alerts_env import Mailbox, Tape, Webhook, wait_for
from tests.helpers.either_store import add_rule, rows, store_db

__all__ = ["store_db"]  # the fixture: registered by being imported here

pytestmark = pytest.mark.daemon


class Env:
    """A database, its writer, and alert services made on it (closed at the end)."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.writer = TradeWriter(db)
        self.writer.start()
        self.tape = Tape(self.writer)
        self.services: list[AlertService] = []

    def service(self, urls: list[str], **options: Any) -> AlertService:
        options.setdefault("backoff_base", 0.3)
        service = AlertService(self.db, self.writer, urls, threading.Event(), **options)
        service.start()
        self.services.append(service)
        return service

    def restart_writer(self) -> None:
        assert self.writer.close()
        self.writer = TradeWriter(self.db)
        self.writer.start()
        self.tape.writer = self.writer

    def submit(self, fn: Callable[[Connection], object]) -> None:
        self.writer.submit(fn).result(10)

    def close(self) -> None:
        for service in self.services:
            service.close()
        self.writer.close()


@pytest.fixture
def env(store_db: str) -> Iterator[Env]:
    made = Env(store_db)
    yield made
    made.close()


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[Env]:
    made = Env(str(tmp_path / "ticks.db"))
    yield made
    made.close()


def test_a_rule_added_while_running_fires_once_per_crossing_retried_and_mailed(env: Env):
    with Webhook(refuse=1) as hook, Mailbox() as mail:
        env.tape.trade("ETHUSDT", 100.0)
        env.service([hook.url, mail.url])
        time.sleep(1.2)  # the service runs, with no rule yet
        rule_id = add_rule(env.db, "price_above", "ETHUSDT", 110.0, 105.0, cooldown_s=8)
        env.tape.trade("ETHUSDT", 111.0)
        added = time.monotonic()
        wait_for(lambda: rows(env.db, "SELECT count(*) FROM alert_events")[0][0], 5, "a firing")
        assert time.monotonic() - added < 2.5  # a rule plain SQL wrote is judged within 2 s
        wait_for(lambda: hook.accepted() and mail.messages, 10, "both deliveries")

        assert [status for status, _ in hook.received] == [500, 200]  # refused, then retried
        payload = hook.accepted()[0]
        assert (
            f"Rule {rule_id}, ETHUSDT on sim: price above 110 fired, value 111"
            in (payload["message"])
        )
        assert "bar " in payload["message"] and "re-arms at 105" in payload["message"]
        (mailed,) = mail.messages
        assert "pairs-monitor alert" in mailed["Subject"]
        body = mailed.get_body()
        assert body is not None and "price above 110 fired, value 111" in body.get_content()
        ((event_id, value, threshold, fired_ms),) = rows(
            env.db, "SELECT event_id, value, threshold, fired_ms FROM alert_events"
        )
        assert (value, threshold) == (111.0, 110.0)
        deliveries = rows(
            env.db,
            "SELECT target, status, attempts, last_error IS NOT NULL FROM alert_deliveries"
            " WHERE event_id = ? ORDER BY target",
            (event_id,),
        )
        assert [(d[1], d[2]) for d in deliveries] == [("sent", 2), ("sent", 1)]
        assert deliveries[0][0].startswith("json://") and deliveries[1][0].startswith("mailto://")

        # Hysteresis: still above the threshold, no second firing.
        env.tape.trade("ETHUSDT", 112.0)
        time.sleep(2.0)
        assert rows(env.db, "SELECT count(*) FROM alert_events") == [(1,)]
        assert rows(env.db, "SELECT armed FROM alert_rules") == [(0,)]
        # Back under the re-arm level, then past again inside the 8 s cooldown: held, and
        # fired once the cooldown is over.
        env.tape.trade("ETHUSDT", 104.0)
        wait_for(lambda: rows(env.db, "SELECT armed FROM alert_rules") == [(1,)], 5, "re-arm")
        env.tape.trade("ETHUSDT", 115.0)
        time.sleep(1.5)
        assert rows(env.db, "SELECT count(*) FROM alert_events") == [(1,)]
        wait_for(lambda: rows(env.db, "SELECT count(*) FROM alert_events")[0][0] == 2, 10)
        second_ms = rows(env.db, "SELECT max(fired_ms) FROM alert_events")[0][0]
        assert second_ms - fired_ms >= 8000
        wait_for(lambda: len(hook.accepted()) == 2 and len(mail.messages) == 2, 10)
        assert "value 115" in hook.accepted()[1]["message"]


def test_a_restart_in_the_middle_of_a_retry_delivers_once(env: Env):
    # The webhook refuses everything while the first run lives, so the delivery is still
    # pending when it stops however the run's threads were scheduled on a busy machine.
    with Webhook(refuse=1_000_000) as hook:
        env.tape.trade("ETHUSDT", 100.0)
        add_rule(env.db, "price_below", "ETHUSDT", 90.0, 95.0)
        first = env.service([hook.url], backoff_base=60)  # the retry would be a minute away
        env.tape.trade("ETHUSDT", 89.0)
        wait_for(lambda: hook.received, 10, "the refused delivery")
        wait_for(lambda: rows(env.db, "SELECT attempts FROM alert_deliveries") == [(1,)], 5)
        assert first.close()
        env.restart_writer()  # the daemon stops and starts again on the same file
        ((status, attempts, error),) = rows(
            env.db, "SELECT status, attempts, last_error FROM alert_deliveries"
        )
        assert (status, attempts) == ("pending", 1)
        assert "500" in error  # Apprise's words for the refusal, kept for the retry
        assert [status for status, _ in hook.received] == [500]

        hook.refuse = 0
        env.service([hook.url])
        wait_for(lambda: hook.accepted(), 10, "the delivery after the restart")
        wait_for(
            lambda: rows(env.db, "SELECT status, attempts FROM alert_deliveries") == [("sent", 2)],
            5,
        )
        time.sleep(2.0)  # the new run judges the rule again: still fired, nothing more sent
        assert [status for status, _ in hook.received] == [500, 200]
        assert rows(env.db, "SELECT count(*) FROM alert_events") == [(1,)]


def test_feed_health_rules_fire_from_the_daemons_status_rows(env: Env):
    now = now_ms()

    def health(conn: Connection) -> None:
        for symbol, age_s in (("BTCUSDT", 30), ("ETHUSDT", 0)):
            conn.execute(
                "INSERT INTO feed_status (venue, symbol, source, source_since_ms,"
                " last_trade_time_us, updated_ms) VALUES ('sim', ?, 'sim', ?, ?, ?)",
                (symbol, now - 60_000, (now - age_s * 1000) * 1000, now),
            )
        conn.execute(
            "INSERT INTO writer_status (id, state, last_error, failing_since_ms, queue_depth,"
            " trades_stored, updated_ms) VALUES (1, 'retrying', 'database is locked', ?, 5, 0, ?)",
            (now - 20_000, now),
        )

    env.submit(health)
    with Webhook() as hook:
        silent = add_rule(env.db, "feed_silent", "BTCUSDT", 10.0, 0.0)
        quiet_market = add_rule(env.db, "feed_silent", "ETHUSDT", 10.0, 0.0)
        failing = add_rule(env.db, "writer_failing", "*", 10.0, 0.0, venue="*")
        gaps = add_rule(env.db, "gap_abandoned", "*", 1.0, 0.0)
        env.service([hook.url])
        wait_for(lambda: len(hook.accepted()) == 2, 10, "silence and writer alerts")

        def abandon(first: int) -> Callable[[Connection], None]:
            def write(conn: Connection) -> None:
                conn.execute(
                    "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason,"
                    " status, detected_ms, resolved_ms, note) VALUES ('sim', 'ETHUSDT', ?, ?,"
                    " 'live-jump', 'abandoned', ?, ?, 'REST has no such trades')",
                    (first, first + 9, now_ms(), now_ms()),
                )

            return write

        env.submit(abandon(1000))
        wait_for(lambda: len(hook.accepted()) == 3, 10, "the abandoned gap")
        env.submit(abandon(2000))
        wait_for(lambda: len(hook.accepted()) == 4, 10, "the second abandoned gap")
        time.sleep(1.5)
        messages = [p["message"] for p in hook.accepted()]

    by_rule = dict(rows(env.db, "SELECT rule_id, count(*) FROM alert_events GROUP BY rule_id"))
    assert by_rule == {silent: 1, failing: 1, gaps: 2}
    assert any("BTCUSDT on sim: feed silent" in m and "while ETHUSDT traded" in m for m in messages)
    assert any("writer failing" in m and "database is locked" in m for m in messages)
    gap_messages = [m for m in messages if "gaps abandoned" in m]
    assert "ETHUSDT 1000-1009" in gap_messages[0] and "ETHUSDT 2000-2009" in gap_messages[1]
    assert "1000-1009" not in gap_messages[1]  # each gap is counted by one firing
    ((note,),) = rows(env.db, "SELECT note FROM alert_rules WHERE rule_id = ?", (quiet_market,))
    assert note is None  # ETHUSDT trades: judged, not silent


def test_writer_failing_is_sent_while_the_database_is_locked_and_recorded_after(
    sqlite_env: Env,
):
    env = sqlite_env
    now = now_ms()

    def failing(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO writer_status (id, state, last_error, failing_since_ms, queue_depth,"
            " trades_stored, updated_ms) VALUES (1, 'retrying', 'disk I/O error', ?, 9, 0, ?)",
            (now - 60_000, now),
        )

    env.submit(failing)
    add_rule(env.db, "writer_failing", "*", 30.0, 0.0, venue="*")
    blocker = sqlite3.connect(env.db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer can commit nothing now
    try:
        with Webhook() as hook:
            env.service([hook.url], urgent_after_s=1.0)
            wait_for(lambda: hook.accepted(), 10, "the alert sent before it could be stored")
            assert rows(env.db, "SELECT count(*) FROM alert_events") == [(0,)]
            blocker.execute("ROLLBACK")
            wait_for(lambda: rows(env.db, "SELECT status FROM alert_deliveries") == [("sent",)], 40)
            time.sleep(1.5)
            assert len(hook.received) == 1  # recorded as sent, not sent again
    finally:
        blocker.close()
    assert rows(env.db, "SELECT count(*) FROM alert_events") == [(1,)]


def test_a_firing_stored_while_delivery_starts_is_sent_by_one_job(env: Env):
    """A firing stored just before the delivery thread reads the pending rows reaches it
    twice (in its inbox and among the rows it resumes): one attempt, not two."""
    with Webhook(refuse=1) as hook:
        rule = add_rule(env.db, "price_below", "ETHUSDT", 90.0, 95.0)
        service = AlertService(env.db, env.writer, [hook.url], threading.Event(), backoff_base=60)
        env.services.append(service)
        (channel,) = service.channels
        fired = now_ms()

        def store(conn: Connection) -> int:
            ((event_id,),) = conn.execute(
                "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message,"
                " threshold) VALUES (?, ?, ?, 89.0, 'ETHUSDT below 90', 90.0)"
                " RETURNING event_id",
                (rule, fired, fired // 1000),
            ).fetchall()
            conn.execute(
                "INSERT INTO alert_deliveries (event_id, channel, target, status,"
                " next_attempt_ms, updated_ms) VALUES (?, ?, ?, 'pending', ?, ?)",
                (event_id, channel.channel, channel.target, fired, fired),
            )
            assert event_id is not None
            return event_id

        event_id = env.writer.submit(store).result(10)
        firing = Firing(rule, "ETHUSDT below 90", fired, event_id=event_id)
        service.deliverer.stored(firing)  # in the inbox before the thread resumes the rows
        service.start()
        wait_for(lambda: hook.received, 10, "the first attempt")
        wait_for(
            lambda: (
                rows(env.db, "SELECT status, attempts FROM alert_deliveries") == [("pending", 1)]
            ),
            5,
        )
        time.sleep(1.5)  # a second job would post at once: the retry is a minute away
        assert [status for status, _ in hook.received] == [500]
        assert service.deliverer.attempts == 1
