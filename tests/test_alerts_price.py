"""Price rules judged by the real page: the Live panel of app.py over a database the test
writes, each refresh reading the newest trade. An alert_events row appears on the refresh
after a trade crosses the threshold, not before, and not again while the price stays past.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.page_db import START_S, add_trades, build_pair_db

pytestmark = pytest.mark.apptest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SYMBOL = "ETHUSDT"
LAST_ID = 2400  # the fixture's 1200 s at 2 trades a second


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("price") / "ticks.db")


@pytest.fixture
def db(pair_db, tmp_path) -> Path:
    target = tmp_path / "ticks.db"
    shutil.copy(pair_db, target)
    return target


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def add_rule(db: Path, kind: str, threshold: float, rearm: float) -> int:
    """A rule as the Alerts tab stores it (price rules carry no view)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        cursor = conn.execute(
            "INSERT INTO alert_rules (kind, venue, symbol, threshold, rearm, created_ms) "
            "VALUES (?, 'sim', ?, ?, ?, 0)",
            (kind, SYMBOL, threshold, rearm),
        )
        return int(cursor.lastrowid or 0)
    finally:
        conn.close()


def trade(db: Path, trade_id: int, second: int, price: float) -> None:
    """One more ETHUSDT trade through the real writer, ``second`` s after the fixture's start."""
    add_trades(db, [("sim", SYMBOL, trade_id, (START_S + second) * 1_000_000, price, 0.1, 0)])


def refresh(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(
    ("kind", "offset", "words"),
    [("price_above", +1.0, "price above"), ("price_below", -1.0, "price below")],
)
def test_a_price_rule_fires_on_the_refresh_after_the_crossing_trade(
    monkeypatch, db, kind, offset, words
):
    ((last,),) = rows(
        db, "SELECT price FROM trades WHERE symbol = ? AND trade_id = ?", (SYMBOL, LAST_ID)
    )
    threshold = last + 10 * offset  # 10 dollars away: the fixture's last price does not fire
    rule_id = add_rule(db, kind, threshold, last + 5 * offset)
    monkeypatch.setenv("TICKS_DB", str(db))
    at = refresh(AppTest.from_file(APP, default_timeout=60))
    assert rows(db, "SELECT count(*) FROM alert_events") == [(0,)]

    trade(db, LAST_ID + 1, 1200, last + 9.5 * offset)  # closer, not yet past
    refresh(at)
    assert rows(db, "SELECT count(*) FROM alert_events") == [(0,)]
    assert rows(db, "SELECT armed FROM alert_rules") == [(1,)]

    crossing = last + 12 * offset
    trade(db, LAST_ID + 2, 1201, crossing)
    refresh(at)
    events = rows(db, "SELECT rule_id, bar_time_s, value, message FROM alert_events")
    assert len(events) == 1
    assert events[0][:3] == (rule_id, START_S + 1201, crossing)
    assert f"{SYMBOL} on sim: {words} {threshold:g}" in events[0][3]
    assert len(at.toast) == 1 and words in at.toast[0].value
    assert rows(db, "SELECT armed FROM alert_rules") == [(0,)]

    trade(db, LAST_ID + 3, 1202, last + 11 * offset)  # still past: no second alert
    refresh(at)
    assert rows(db, "SELECT count(*) FROM alert_events") == [(1,)]
    assert len(at.toast) == 0

    trade(db, LAST_ID + 4, 1203, last + 4 * offset)  # back past the re-arm level
    refresh(at)
    assert rows(db, "SELECT armed FROM alert_rules") == [(1,)]
    trade(db, LAST_ID + 5, 1204, crossing)
    refresh(at)
    assert rows(db, "SELECT count(*) FROM alert_events") == [(2,)]
