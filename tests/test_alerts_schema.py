"""Schema version 6 rebuilds alert_rules (its kind CHECK): every rule and every firing is
kept, whatever the migrating connection's foreign-key setting, and the firings still go
with their rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pairs_monitor.store import schema
from tests.helpers.either_store import rows


def at_version_5(path: Path) -> Path:
    """A version-5 file with two rules and firings, one firing's rule already gone (a
    client deleted it with foreign keys off, as SQLite connections have by default)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in schema.MIGRATIONS[:5]:
            for statement in schema._statements(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        conn.executemany(
            "INSERT INTO alert_rules (rule_id, kind, venue, symbol, symbol_x, threshold, rearm,"
            " enabled, armed, created_ms, timeframe, window_bars, hedge_method, log_prices,"
            " venue_x) VALUES (?, ?, 'binance-spot', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    1,
                    "zscore_above",
                    "ETHUSDT",
                    "BTCUSDT",
                    2.0,
                    1.0,
                    1,
                    0,
                    11,
                    "1m",
                    60,
                    "ols",
                    1,
                    "binance-usdm",
                ),
                (
                    2,
                    "price_below",
                    "BTCUSDT",
                    None,
                    90_000.0,
                    91_000.0,
                    0,
                    1,
                    12,
                    None,
                    None,
                    None,
                    None,
                    None,
                ),
                (
                    3,
                    "volume_spike",
                    "SOLUSDT",
                    None,
                    3.0,
                    1.5,
                    1,
                    1,
                    13,
                    "1s",
                    60,
                    None,
                    None,
                    None,
                ),
            ],
        )
        conn.executemany(
            "INSERT INTO alert_events (event_id, rule_id, fired_ms, bar_time_s, value, message)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(1, 1, 100, 10, 2.5, "z"), (2, 2, 200, 20, 89_000.0, "p"), (3, 3, 300, 30, 4.0, "v")],
        )
        conn.execute("DELETE FROM alert_rules WHERE rule_id = 3")  # foreign keys off: kept
    finally:
        conn.close()
    return path


@pytest.mark.parametrize("foreign_keys", ["ON", "OFF"])
def test_version_6_keeps_every_rule_and_firing(tmp_path: Path, foreign_keys: str):
    path = at_version_5(tmp_path / "ticks.db")
    rules_before = rows(path, "SELECT * FROM alert_rules ORDER BY rule_id")
    events_before = rows(path, "SELECT * FROM alert_events ORDER BY event_id")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA foreign_keys={foreign_keys}")
    try:
        assert schema.migrate(conn, path) == 5
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == (foreign_keys == "ON")
    finally:
        conn.close()
    assert rows(path, "PRAGMA user_version") == [(schema.LATEST_VERSION,)]
    width = len(rules_before[0])
    assert [r[:width] for r in rows(path, "SELECT * FROM alert_rules ORDER BY rule_id")] == (
        rules_before
    )
    assert (
        rows(path, "SELECT cooldown_s, note, cursor_id FROM alert_rules") == [(0, None, None)] * 2
    )
    events = rows(path, "SELECT * FROM alert_events ORDER BY event_id")
    assert [e[: len(events_before[0])] for e in events] == events_before
    assert [e[-2:] for e in events] == [(None, None)] * 3  # threshold, acked_ms


def test_after_version_6_new_kinds_are_accepted_and_firings_go_with_their_rule(tmp_path: Path):
    path = at_version_5(tmp_path / "ticks.db")
    schema.setup(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        conn.execute(
            "INSERT INTO alert_rules (kind, venue, symbol, threshold, rearm, created_ms)"
            " VALUES ('writer_failing', '*', '*', 30, 0, 1)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute(
                "INSERT INTO alert_rules (kind, venue, symbol, threshold, rearm, created_ms)"
                " VALUES ('moon_phase', 'sim', 'X', 1, 0, 1)"
            )
        conn.execute(
            "INSERT INTO alert_deliveries (event_id, channel, target, updated_ms)"
            " VALUES (1, 'abc', 'json://host/hook', 5)"
        )
        conn.execute("DELETE FROM alert_rules WHERE rule_id = 1")
        assert conn.execute("SELECT event_id FROM alert_events ORDER BY 1").fetchall() == [
            (2,),
            (3,),
        ]
        assert conn.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (0,)
        references = conn.execute("PRAGMA foreign_key_list(alert_events)").fetchall()
        assert [(r[2], r[3], r[4], r[6]) for r in references] == [
            ("alert_rules", "rule_id", "rule_id", "CASCADE")
        ]
    finally:
        conn.close()
