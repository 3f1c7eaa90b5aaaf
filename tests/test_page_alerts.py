"""The Alerts tab and the banner of new firings, run by Streamlit's AppTest over real SQLite
files made by the writer; the last test runs the daemon's own evaluator (``AlertService``
with a real ``TradeWriter`` and a local webhook) beside the page.

What a user does: make a rule in the form (it lands once, with the fields the daemon
reads; the same rule again is refused), pause or delete the rule the picker shows by its
id, read what the daemon saw and sent, acknowledge firings. The page itself fires
nothing: that is the daemon's (tests/test_alerts_price.py).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.alerts.evaluator import AlertService
from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import RULES_JUDGED_STALE_MS, Leg
from pairs_monitor.store import schema
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.alerts_env import Webhook, wait_for
from tests.helpers.either_store import add_rule, rows
from tests.helpers.page_db import START_S, add_firing, add_trades, build_pair_db

pytestmark = pytest.mark.apptest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
LAST_ID = 2400  # the fixture's 1200 s at 2 trades a second, per symbol
ETH = Leg("sim", "ETHUSDT")


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("alerts") / "ticks.db")


@pytest.fixture
def db(pair_db, tmp_path) -> Path:
    return Path(shutil.copy(pair_db, tmp_path / "ticks.db"))


def run_app(monkeypatch, path: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=60)
    return run(at)


def run(target: Any) -> AppTest:
    """Rerun the page after setting a widget or clicking (or as is); no exception."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    """Shown text with markdown's escapes undone."""
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def table(at: AppTest, column: str) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if column in df.value.columns)


def banner(at: AppTest) -> str:
    """The new firings above the tabs: each an error with the firing and its delivery."""
    return "\n".join(texts([e]) for e in at.error if "Delivery:" in str(e.value))


def last_price(path: Path, symbol: str = "ETHUSDT") -> float:
    ((price,),) = rows(
        path, "SELECT price FROM trades WHERE symbol = ? ORDER BY trade_id DESC LIMIT 1", (symbol,)
    )
    return float(price)


def test_a_rule_made_in_the_form_lands_once_and_the_same_rule_again_is_refused(monkeypatch, db):
    # One big trade in the newest second of ETHUSDT: its 1 s bar volume jumps far above the
    # mean of the 60 bars before it (the fixture trades 0.001-0.5 a piece, 2 a second).
    add_trades(
        db, [("sim", "ETHUSDT", LAST_ID + 1, (START_S + 1199) * 10**6 + 900_000, 3000.0, 40.0, 0)]
    )
    volumes = [
        v
        for (v,) in rows(
            db, "SELECT volume FROM bars_1s WHERE symbol = 'ETHUSDT' ORDER BY bar_time_s"
        )
    ]
    ratio_now = volumes[-1] / (sum(volumes[-61:-1]) / 60)  # by hand: last over the 60 before
    assert ratio_now > 50
    at = run_app(monkeypatch, db)
    # As a user does it: the kind, then the leg; each pre-fills the threshold.
    run(at.selectbox(key="rule_kind").set_value("volume_spike"))
    run(at.selectbox(key="rule_symbol").set_value(ETH))
    assert at.number_input(key="rule_threshold").value == round(ratio_now, 2)
    assert at.number_input(key="rule_rearm").value == round(round(ratio_now, 2) / 2, 2)
    assert at.number_input(key="rule_window").value == 60  # the sidebar's window
    assert "Volume ratio" in [n.label for n in at.number_input]
    at.number_input(key="rule_threshold").set_value(10.0)
    at.number_input(key="rule_rearm").set_value(2.0)
    at.number_input(key="rule_cooldown").set_value(120)
    run(at.button(key="rule_add").click())
    assert "Rule 1 added: ETHUSDT on sim: volume spike" in texts(at.success)
    stored = rows(
        db,
        "SELECT kind, venue, symbol, symbol_x, venue_x, threshold, rearm, timeframe,"
        " window_bars, hedge_method, log_prices, cooldown_s, enabled, armed FROM alert_rules",
    )
    assert stored == [
        ("volume_spike", "sim", "ETHUSDT", None, None, 10.0, 2.0, "1s", 60, None, None, 120, 1, 1)
    ]
    # Pressed again (a double click, or Enter in a form that submitted on Enter): refused.
    run(at.button(key="rule_add").click())
    assert "Rule not added: rule 1 is the same rule" in texts(at.error)
    assert rows(db, "SELECT count(*) FROM alert_rules") == [(1,)]
    # The form kept its values; another threshold is another rule.
    run(at.number_input(key="rule_threshold").set_value(12.0))
    run(at.button(key="rule_add").click())
    assert "Rule 2 added" in texts(at.success)
    assert rows(db, "SELECT threshold FROM alert_rules ORDER BY rule_id") == [(10.0,), (12.0,)]
    assert list(table(at, "judged in")["id"]) == [1, 2]
    assert rows(db, "SELECT count(*) FROM alert_events") == [(0,)]


def test_the_kinds_fields_follow_the_kind_and_a_value_typed_is_kept(monkeypatch, db):
    at = run_app(monkeypatch, db)
    price = last_price(db)
    run(at.selectbox(key="rule_kind").set_value("price_above"))
    run(at.selectbox(key="rule_symbol").set_value(ETH))
    # The price now at the decimals it traded at (95088.7601, not 95088.8), shown so.
    assert at.number_input(key="rule_threshold").value == price
    assert at.number_input(key="rule_threshold").proto.format == "%.4f"
    assert at.number_input(key="rule_threshold").label == "Price"
    # A threshold typed in the same run as a change of kind is the user's: kept.
    at.selectbox(key="rule_kind").set_value("price_below")
    run(at.number_input(key="rule_threshold").set_value(1234.5))
    assert at.number_input(key="rule_threshold").value == 1234.5
    assert at.number_input(key="rule_rearm").value == pytest.approx(1234.5 * 1.002, rel=1e-5)
    kinds = {
        "feed_silent": ("Seconds silent", 30.0),
        "gap_abandoned": ("Gaps abandoned", 1.0),
        "writer_failing": ("Seconds failing", 30.0),
        "coint_lost": ("p-value level", 0.05),
    }
    for kind, (label, level) in kinds.items():
        run(at.selectbox(key="rule_kind").set_value(kind))
        assert at.number_input(key="rule_threshold").label == label
        assert at.number_input(key="rule_threshold").value == level, kind
    # Cointegration is tested on at least 50 bars, and says its p-value now.
    assert at.number_input(key="rule_window").value == 60
    assert "Engle-Granger p-value over the last 60 bars" in texts(at.caption)
    run(at.selectbox(key="rule_kind").set_value("corr_breakdown"))
    z_and_corr = run(at.button(key="rule_fill").click())
    assert z_and_corr.number_input(key="rule_threshold").label == "Correlation level"
    run(at.button(key="rule_add").click())
    ((kind, symbol, symbol_x, window),) = rows(
        db, "SELECT kind, symbol, symbol_x, window_bars FROM alert_rules"
    )
    assert (kind, symbol, symbol_x, window) == ("corr_breakdown", "BTCUSDT", "ETHUSDT", 60)


def test_pause_and_delete_act_on_the_rule_picked_by_its_id(monkeypatch, db):
    # Two alike rules, as the form made them before duplicates were refused, and a third.
    first = add_rule(db, "price_above", "ETHUSDT", 5000.0, 4900.0)
    second = add_rule(db, "price_above", "ETHUSDT", 5000.0, 4900.0)
    third = add_rule(db, "price_below", "ETHUSDT", 10.0, 20.0)
    at = run_app(monkeypatch, db)
    picker = at.selectbox(key="rule_pick")
    labels = list(picker.options)  # as shown: the id first
    assert labels[:2] == [
        f"#{first} · ETHUSDT on sim: price above 5000",
        f"#{second} · ETHUSDT on sim: price above 5000",
    ]
    run(picker.set_value(second))
    assert at.button(key="rule_toggle").label == f"Pause rule {second}"
    run(at.button(key="rule_toggle").click())
    assert f"Rule {second} paused." in texts(at.success)
    enabled = dict(rows(db, "SELECT rule_id, enabled FROM alert_rules"))
    assert enabled == {first: 1, second: 0, third: 1}
    assert at.selectbox(key="rule_pick").value == second  # still the one shown
    assert at.button(key="rule_toggle").label == f"Resume rule {second}"
    run(at.selectbox(key="rule_pick").set_value(first))
    run(at.button(key="rule_delete").click())
    assert f"Rule {first} deleted" in texts(at.success)
    assert rows(db, "SELECT rule_id FROM alert_rules ORDER BY rule_id") == [(second,), (third,)]
    # Deleted by another client meanwhile: the picker moves to a rule that exists.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM alert_rules WHERE rule_id = ?", (second,))
    conn.close()
    run(at.selectbox(key="rule_pick").set_value(second))
    assert at.selectbox(key="rule_pick").value == third


def test_a_firing_stays_above_the_tabs_until_acknowledged(monkeypatch, db):
    rule_id = add_rule(db, "price_above", "ETHUSDT", 5000.0, 4900.0)
    now = now_ms()
    older = add_firing(
        db,
        rule_id,
        "Rule 1, ETHUSDT on sim: price above 5000 fired, value 5001",
        5001.0,
        deliveries=(("a", "json://127.0.0.1/hook", "sent", 1, None, None, now),),
    )
    newer = add_firing(
        db,
        rule_id,
        "Rule 1, ETHUSDT on sim: price above 5000 fired, value 5002",
        5002.0,
        deliveries=(
            ("a", "json://127.0.0.1/hook", "pending", 2, now + 8_000, "HTTP 500", None),
            ("b", "mailto://***@example.com", "failed", 40, None, "connection refused", None),
        ),
    )
    at = run_app(monkeypatch, db)
    shown = banner(at)
    assert f"#{older}" in shown and "value 5001" in shown
    assert "json://127.0.0.1/hook: sent (1 attempt)" in shown
    assert "json://127.0.0.1/hook: pending, 2 attempts failed (HTTP 500), next in" in shown
    assert "mailto://***@example.com: failed after 40 attempts (connection refused)" in shown
    assert "2 alert firings not yet acknowledged" in texts(at.markdown)
    history = table(at, "delivery")
    assert list(history["id"]) == [newer, older]
    assert list(history["acknowledged"]) == ["new", "new"]
    assert history["delivery"].iloc[1] == "json://127.0.0.1/hook: sent (1 attempt)"

    run(at.button(key=f"ack_{older}").click())
    assert rows(db, "SELECT event_id FROM alert_events WHERE acked_ms IS NOT NULL") == [(older,)]
    assert f"#{older}" not in banner(at) and f"#{newer}" in banner(at)
    # A new firing shows within a refresh, with a toast the first time this session sees it.
    message = "Rule 1, ETHUSDT on sim: price above 5000 fired, value {}"
    latest = add_firing(db, rule_id, message.format(5003), 5003.0)
    run(at)
    assert f"#{latest}" in banner(at) and "value 5003" in texts(at.toast)
    # A firing stored after the page drew its list is not acknowledged by "all" unseen.
    unseen = add_firing(db, rule_id, message.format(5004), 5004.0)
    run(at.button(key="ack_all").click())
    assert rows(db, "SELECT event_id FROM alert_events WHERE acked_ms IS NULL") == [(unseen,)]
    assert f"#{unseen}" in banner(at) and f"#{latest}" not in banner(at)
    run(at.button(key=f"ack_{unseen}").click())
    assert "not yet acknowledged" not in texts(at.markdown) and banner(at) == ""
    assert rows(db, "SELECT count(*) FROM alert_events WHERE acked_ms IS NULL") == [(0,)]


def test_rules_show_what_the_daemon_saw_and_warn_when_no_daemon_judges_them(monkeypatch, db):
    now = now_ms()
    judged = add_rule(
        db,
        "zscore_above",
        "ETHUSDT",
        2.0,
        1.0,
        symbol_x="BTCUSDT",
        timeframe="1s",
        window_bars=60,
        hedge_method="ols",
        log_prices=1,
        cooldown_s=300,
        last_value=1.5,
        checked_ms=now - 1_000,
        last_fired_ms=now - 3_600_000,
        created_ms=now,
    )
    waiting = add_rule(
        db,
        "price_above",
        "SOLUSDT",
        500.0,
        490.0,
        note="no trade of SOLUSDT stored",
        created_ms=now - 600_000,
    )
    at = run_app(monkeypatch, db)
    rules_shown = table(at, "judged in").set_index("id")
    assert rules_shown.loc[judged, "value now"] == "1.5"
    assert rules_shown.loc[judged, "cooldown (s)"] == 300
    judged_ago = re.fullmatch(r"(\d+) s ago", str(rules_shown.loc[judged, "judged"]))
    assert judged_ago and 1 <= int(judged_ago[1]) < 10  # 1 s, and the run's own seconds
    assert str(rules_shown.loc[judged, "last fired"]).endswith("UTC")
    assert rules_shown.loc[judged, "judged in"] == "1s bars, window 60, ols, log prices"
    assert rules_shown.loc[waiting, "value now"] == "no trade of SOLUSDT stored"
    assert rules_shown.loc[waiting, "judged"] == "never"
    warned = texts(at.warning)
    assert f"No daemon is judging rule(s) {waiting}**" in warned
    assert "enabled alert rule(s)" not in warned  # the daemon runs: it judged rule 1
    assert "python ingest.py --db" in warned
    assert "The daemon (`ingest.py`) judges" in texts(at.caption)
    # The daemon judges both now: no warning.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE alert_rules SET checked_ms = ?", (now_ms(),))
    conn.close()
    assert "No daemon is judging" not in texts(run(at).warning)
    # A daemon gone for longer than the bound: both rules are named.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "UPDATE alert_rules SET checked_ms = ?", (now_ms() - RULES_JUDGED_STALE_MS - 5_000,)
    )
    conn.close()
    warned = texts(run(at).warning)
    assert f"No daemon is judging rule(s) {judged}, {waiting}**" in warned
    # Whichever tab is open: above the tabs too.
    above = re.search(
        r"No daemon is judging the 2 enabled alert rule\(s\)\*\* \(none judged for (\d+) s", warned
    )
    assert above and 20 <= int(above[1]) < 30


def test_a_database_before_version_6_says_to_migrate(monkeypatch, tmp_path):
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in schema.MIGRATIONS[:5]:
        for statement in schema._statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    at = run_app(monkeypatch, path)
    assert "predates alerts judged by the daemon (schema version 6)" in texts(at.warning)
    assert "not yet acknowledged" not in texts(at.markdown)


def test_the_daemons_evaluator_fires_a_rule_made_on_the_page_which_shows_it_until_acked(
    monkeypatch, db
):
    """The page makes the rule, the daemon's own evaluator and delivery (threads on a real
    writer, as ingest.py runs them) judge it, fire it and post it to a local webhook; the
    page shows the firing and its delivery until acknowledged."""
    price = last_price(db)
    at = run_app(monkeypatch, db)
    run(at.selectbox(key="rule_kind").set_value("price_above"))
    run(at.selectbox(key="rule_symbol").set_value(ETH))
    assert at.number_input(key="rule_threshold").value == price
    at.number_input(key="rule_threshold").set_value(round(price + 10, 2))
    run(at.number_input(key="rule_rearm").set_value(round(price + 5, 2)))
    run(at.button(key="rule_add").click())
    ((rule_id,),) = rows(db, "SELECT rule_id FROM alert_rules")
    writer = TradeWriter(db)
    writer.start()
    stop = threading.Event()
    with Webhook() as hook:
        service = AlertService(db, writer, [hook.url], stop, tick_s=0.2)
        service.start()
        try:
            wait_for(
                lambda: rows(db, "SELECT checked_ms FROM alert_rules")[0][0], 10, "a judgement"
            )
            rules_shown = table(run(at), "judged in")
            assert rules_shown["value now"].iloc[0] == f"{price:,}"  # as it traded
            assert "No daemon is judging" not in texts(at.warning)
            writer.put_trades(
                [("sim", "ETHUSDT", LAST_ID + 1, (START_S + 1200) * 10**6, price + 12, 0.1, 0)]
            )
            wait_for(lambda: hook.accepted(), 10, "the webhook's post")
            wait_for(
                lambda: rows(db, "SELECT status FROM alert_deliveries") == [("sent",)], 10, "sent"
            )
        finally:
            service.close()
            writer.close()
    ((event_id, message),) = rows(db, "SELECT event_id, message FROM alert_events")
    assert message.startswith(f"Rule {rule_id}, ETHUSDT on sim: price above")
    assert hook.accepted()[0]["message"] == message
    run(at)
    shown = banner(at)
    assert f"#{event_id}" in shown and message in shown and ": sent (1 attempt)" in shown
    assert table(at, "delivery")["delivery"].iloc[0].endswith(": sent (1 attempt)")
    run(at.button(key=f"ack_{event_id}").click())
    assert banner(at) == ""
    assert rows(db, "SELECT acked_ms IS NOT NULL FROM alert_events") == [(1,)]
