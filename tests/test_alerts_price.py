"""The page never fires a rule: it shows rules, the daemon judges them (docs/alerts.md).

The real page (app.py under AppTest) refreshes over a database the test writes while
trades cross price rules, both ways and repeatedly, and while a z-score rule on the pair
on screen is past its threshold: no row ever appears in alert_events, no rule is
disarmed or stamped by the page, and no toast is shown. The daemon's own tests
(tests/test_alerts_service.py) show the same crossings fire there.
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


@pytest.mark.parametrize(("kind", "offset"), [("price_above", +1.0), ("price_below", -1.0)])
def test_the_page_stores_no_firing_while_trades_cross_a_rule(monkeypatch, db, kind, offset):
    ((last,),) = rows(
        db, "SELECT price FROM trades WHERE symbol = ? AND trade_id = ?", (SYMBOL, LAST_ID)
    )
    threshold = last + 10 * offset
    add_rule(db, kind, threshold, last + 5 * offset)
    # A z-score rule on the pair on screen, already past its threshold (z > -100).
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO alert_rules (kind, venue, symbol, symbol_x, threshold, rearm, created_ms,"
        " timeframe, window_bars, hedge_method, log_prices)"
        " VALUES ('zscore_above', 'sim', 'BTCUSDT', 'ETHUSDT', -100, -101, 0, '1s', 60, 'ols', 1)"
    )
    conn.close()
    rules_before = rows(db, "SELECT * FROM alert_rules ORDER BY rule_id")
    monkeypatch.setenv("TICKS_DB", str(db))
    at = refresh(AppTest.from_file(APP, default_timeout=60))
    prices = [12, 4, 12, 11, 4, 12]  # past, back past the re-arm level, past again, ...
    for step, distance in enumerate(prices, start=1):
        trade(db, LAST_ID + step, 1199 + step, last + distance * offset)
        refresh(at)
        assert rows(db, "SELECT count(*) FROM alert_events") == [(0,)]
        assert len(at.toast) == 0
    # The page shows the newest trade's price, to the decimals it keeps for the leg.
    (shown,) = [str(m.value) for m in at.metric if m.label == f"{SYMBOL} last"]
    decimals = len(shown.partition(".")[2])
    newest = last + prices[-1] * offset
    assert abs(float(shown.replace(",", "")) - newest) <= 0.5 * 10**-decimals + 1e-9, shown
    # Not armed, fired, judged or noted by the page: the rows are as they were written.
    assert rows(db, "SELECT * FROM alert_rules ORDER BY rule_id") == rules_before
