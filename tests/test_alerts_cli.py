"""``ingest.py alerts``: rules and firings without the page, on a real database file and on
a real PostgreSQL database (``store_db``), and a test notification to a local webhook."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from pairs_monitor.alerts import cli
from pairs_monitor.store import schema
from tests.helpers.alerts_env import Webhook
from tests.helpers.either_store import rows, store_db

__all__ = ["store_db"]  # the fixture: registered by being imported here


@pytest.fixture
def db(store_db: str) -> str:
    schema.setup(store_db)
    return store_db


def run(db: str | Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = cli.main(["--db", str(db), *argv], out=out)
    return status, out.getvalue()


def test_rules_are_added_listed_paused_resumed_and_deleted(db: str, capsys):
    status, said = run(
        db,
        "add",
        "zscore_above",
        "ethusdt",
        "btcusdt",
        "--venue",
        "binance-spot",
        "--threshold",
        "2.5",
        "--rearm",
        "1",
        "--cooldown",
        "300",
        "--timeframe",
        "1m",
        "--window",
        "30",
    )
    assert status == 0 and "added rule 1, ETHUSDT/BTCUSDT on binance-spot" in said
    assert run(db, "add", "writer_failing", "-", "--threshold", "30")[0] == 0
    assert rows(
        db,
        "SELECT kind, venue, symbol, symbol_x, threshold, rearm, cooldown_s, timeframe,"
        " window_bars, hedge_method, log_prices, enabled, armed FROM alert_rules",
    ) == [
        (
            "zscore_above",
            "binance-spot",
            "ETHUSDT",
            "BTCUSDT",
            2.5,
            1.0,
            300,
            "1m",
            30,
            "ols",
            1,
            1,
            1,
        ),
        ("writer_failing", "*", "*", None, 30.0, 0.0, 0, None, None, None, None, 1, 1),
    ]

    status, said = run(db, "list")
    assert status == 0
    assert "z-score above 2.5" in said and "cooldown 300 s" in said and "never" in said

    assert run(db, "pause", "1") == (0, "rule 1 paused\n")
    assert rows(db, "SELECT enabled FROM alert_rules WHERE rule_id = 1") == [(0,)]
    assert "paused" in run(db, "list")[1]
    assert run(db, "resume", "1") == (0, "rule 1 resumed\n")
    assert run(db, "delete", "2", "7")[0] == 1  # there is no rule 7
    assert "there is no rule 7" in capsys.readouterr().err
    assert rows(db, "SELECT rule_id FROM alert_rules") == [(1,)]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["price_above", "ETHUSDT", "--venue", "sim", "--threshold", "5"], "needs --rearm"),
        (
            ["price_above", "ETHUSDT", "--venue", "sim", "--threshold", "5", "--rearm", "6"],
            "must be below the threshold",
        ),
        (
            ["zscore_above", "ETHUSDT", "--venue", "sim", "--threshold", "2", "--rearm", "1"],
            "needs two different legs",
        ),
        (["feed_silent", "ETHUSDT", "--threshold", "30"], "needs a venue"),
        (["writer_failing", "-", "--threshold", "0"], "seconds above 0"),
    ],
)
def test_a_bad_rule_is_refused_with_what_to_change(db: str, capsys, argv, complaint):
    assert run(db, "add", *argv)[0] == 2
    assert complaint in capsys.readouterr().err
    assert rows(db, "SELECT count(*) FROM alert_rules") == [(0,)]


def test_the_same_rule_twice_is_refused(db: str, capsys):
    argv = ["add", "price_below", "BTCUSDT", "--venue", "sim", "--threshold", "9", "--rearm", "10"]
    assert run(db, *argv)[0] == 0
    assert run(db, *argv)[0] == 2
    assert "rule 1 is the same rule" in capsys.readouterr().err


def test_firings_are_listed_with_their_delivery_and_acknowledged(db: str):
    run(db, "add", "price_below", "BTCUSDT", "--venue", "sim", "--threshold", "9", "--rearm", "10")
    rows(
        db,
        "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message, threshold)"
        " VALUES (1, 1800000000000, 1800000000, 8.5, 'BTCUSDT below 9', 9)",
    )
    rows(
        db,
        "INSERT INTO alert_deliveries (event_id, channel, target, status, attempts, last_error,"
        " updated_ms) VALUES (1, 'c1', 'json://host/hook', 'pending', 2, 'HTTP 500', 0),"
        " (1, 'c2', 'mailto://host', 'sent', 1, NULL, 0)",
    )
    status, said = run(db, "events", "--new")
    assert status == 0 and "#1 2027-01-15 08:00:00 UTC [new] BTCUSDT below 9" in said
    assert "delivery: json://host/hook pending (HTTP 500); mailto://host sent\n" in said
    assert run(db, "ack", "--all") == (0, "1 firing(s) acknowledged\n")
    assert run(db, "events", "--new") == (0, "no firings to acknowledge\n")
    assert "[acknowledged]" in run(db, "events")[1]


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_a_test_notification_reaches_every_url_and_a_failure_is_said(
    db: str, monkeypatch: pytest.MonkeyPatch
):
    with Webhook() as hook, Webhook(refuse=1) as refusing:
        monkeypatch.setenv("PAIRS_NOTIFY", refusing.url)
        status, said = run(db, "test", "--notify", hook.url)
    assert status == 1
    assert len(hook.accepted()) == 1 and "this channel works" in hook.accepted()[0]["message"]
    assert [s for s, _ in refusing.received] == [500]
    lines = said.splitlines()
    assert lines[0].endswith("/hook: delivered") and "FAILED" in lines[1]


def test_a_url_apprise_does_not_know_is_refused(db: str, capsys):
    assert run(db, "test", "--notify", "carrier-pigeon://coop/7")[0] == 2
    assert "Apprise does not understand a URL of scheme 'carrier-pigeon'" in (
        capsys.readouterr().err
    )


def test_a_database_before_version_6_is_named_with_what_to_do(tmp_path: Path, capsys):
    assert run(tmp_path / "absent.db", "list")[0] == 1
    assert "no database at" in capsys.readouterr().err
    old = tmp_path / "v5.db"
    conn = sqlite3.connect(old, isolation_level=None)
    for script in schema.MIGRATIONS[:5]:
        for statement in schema._statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    assert run(old, "list")[0] == 1
    assert "schema version 5; alerts need version 6: run `python db_setup.py" in (
        capsys.readouterr().err
    )


def test_a_feed_silent_rule_re_arms_by_default_once_the_feed_trades_again(db: str):
    """Seconds since the last trade never come back to 0: a re-arm level of 0 would leave
    the rule fired for ever, so the default is the page's 5 s; counts re-arm at 0."""
    assert run(db, "add", "feed_silent", "ethusdt", "--venue", "sim", "--threshold", "30")[0] == 0
    assert run(db, "add", "gap_abandoned", "ethusdt", "--venue", "sim", "--threshold", "1")[0] == 0
    assert rows(db, "SELECT kind, rearm FROM alert_rules ORDER BY rule_id") == [
        ("feed_silent", 5.0),
        ("gap_abandoned", 0.0),
    ]
