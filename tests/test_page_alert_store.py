"""The page's alert store without Streamlit, on real SQLite files made by the writer: what
its guarded connection may write (never a firing), rules checked by the alerts package's
``validate`` and refused when they repeat one, the daemon's state and deliveries read
back, acknowledgement of exactly the firings seen."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from pairs_monitor.alerts import evaluator, rules
from pairs_monitor.clock import now_ms
from pairs_monitor.page.alert_rules import AlertError, AlertStore, describe, new_rule
from pairs_monitor.page.settings import RULES_JUDGED_STALE_MS, Leg
from pairs_monitor.page.tabs.alerts import CREATABLE, suggested
from tests.helpers.either_store import add_rule, rows
from tests.helpers.page_db import add_firing, build_empty_db

BTC = Leg("sim", "BTCUSDT")
ETH = Leg("sim", "ETHUSDT")
PERP = Leg("binance-usdm", "BTCUSDT")


@pytest.fixture
def store(tmp_path) -> Iterator[AlertStore]:
    s = AlertStore(build_empty_db(tmp_path / "alerts.db"))
    yield s
    s.close()


def zscore(threshold: float = 2.0, rearm: float = 1.0, **kw) -> rules.Rule:
    return new_rule(
        "zscore_above",
        ETH,
        threshold,
        rearm,
        leg_x=BTC,
        timeframe="1s",
        window=60,
        method="ols",
        log_prices=True,
        **kw,
    )


# -- the guarded connection ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO trades VALUES ('sim', 'BTCUSDT', 1, 1, 1.0, 1.0, 0)",
        "DELETE FROM bars_1s",
        "UPDATE feed_status SET connected = 0",
        "DROP TABLE trades",
        "CREATE TABLE evil (a)",
        "PRAGMA journal_mode=DELETE",
        "ATTACH DATABASE ':memory:' AS other",
        # Only the daemon fires rules and delivers them.
        "INSERT INTO alert_events (rule_id, fired_ms, value, message) VALUES (1, 1, 1.0, 'x')",
        "UPDATE alert_events SET message = 'x'",
        "UPDATE alert_events SET value = 0",
        "INSERT INTO alert_deliveries (event_id, channel, target, updated_ms)"
        " VALUES (1, 'c', 't', 1)",
        "UPDATE alert_deliveries SET status = 'sent'",
    ],
)
def test_the_alert_connection_refuses_anything_but_rules_and_acknowledgements(store, sql):
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        store.execute(sql)


def test_rules_are_added_paused_resumed_and_deleted_with_their_firings(store):
    assert store.execute("SELECT count(*) FROM trades").fetchone() == (0,)
    rule_id = store.add_rule(new_rule("price_above", BTC, 100.0, 90.0))
    event = add_firing(
        store.path, rule_id, "fired", 101.0, deliveries=(("c", "t", "sent", 1, None, None, 1),)
    )
    assert store.set_enabled(rule_id, False) and store.rules()[0].rule.enabled is False
    store.execute("UPDATE alert_rules SET armed = 0")
    assert store.set_enabled(rule_id, True)
    assert (store.rules()[0].rule.enabled, store.rules()[0].rule.armed) == (True, True)
    assert store.acknowledge([event]) == 1
    assert store.delete_rule(rule_id)
    assert store.rules() == []
    assert rows(store.path, "SELECT count(*) FROM alert_events") == [(0,)]
    assert rows(store.path, "SELECT count(*) FROM alert_deliveries") == [(0,)]
    # Another client deleted it meanwhile: the page says so instead of acting on nothing.
    assert not store.delete_rule(rule_id) and not store.set_enabled(rule_id, False)


# -- rules: the alerts package's check, duplicates ------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (zscore(2.0, 2.5), "must be below the threshold"),
        (
            new_rule(
                "zscore_below",
                ETH,
                -2.0,
                -2.5,
                leg_x=BTC,
                timeframe="1s",
                window=60,
                method="ols",
                log_prices=True,
            ),
            "must be above the threshold",
        ),
        (
            new_rule(
                "zscore_above", ETH, 2.0, 1.0, leg_x=ETH, timeframe="1s", window=60, method="ols"
            ),
            "two different legs",
        ),
        (new_rule("price_below", BTC, -1.0, 5.0), "must be positive"),
        (new_rule("nonsense", BTC, 1.0, 0.0), "unknown rule kind"),
        (new_rule("volume_spike", BTC, 0.0, -1.0, timeframe="1s", window=60), "ratio"),
        (new_rule("volume_spike", BTC, 3.0, 3.0, timeframe="1s", window=60), "below the threshold"),
        (new_rule("feed_silent", BTC, 0.0, -1.0), "seconds above 0"),
        (new_rule("writer_failing", None, 0.0, -1.0), "seconds above 0"),
        (
            new_rule(
                "coint_lost", ETH, 1.5, 0.01, leg_x=BTC, timeframe="1m", window=200, log_prices=True
            ),
            "p-value between 0 and 1",
        ),
        (
            new_rule(
                "coint_lost", ETH, 0.05, 0.01, leg_x=BTC, timeframe="1m", window=20, log_prices=True
            ),
            "window of at least 50",
        ),
        (
            new_rule(
                "corr_breakdown",
                ETH,
                -1.5,
                0.7,
                leg_x=BTC,
                timeframe="1s",
                window=60,
                log_prices=True,
            ),
            "between -1 and 1",
        ),
        (new_rule("price_above", BTC, 100.0, 90.0, cooldown_s=-5), "cooldown"),
    ],
)
def test_bad_rules_are_refused_with_the_alerts_packages_reason(store, rule, message):
    with pytest.raises(AlertError, match=message):
        store.add_rule(rule)
    assert store.rules() == []


def test_every_kind_of_the_alerts_package_can_be_made_on_the_page(store):
    assert list(rules.KINDS) == CREATABLE
    made = {
        "zscore_above": zscore(),
        "zscore_below": new_rule(
            "zscore_below",
            ETH,
            -2.0,
            -1.0,
            leg_x=BTC,
            timeframe="1s",
            window=60,
            method="kalman",
            log_prices=False,
        ),
        "price_above": new_rule("price_above", BTC, 100.0, 90.0),
        "price_below": new_rule("price_below", BTC, 90.0, 100.0),
        "volume_spike": new_rule("volume_spike", BTC, 3.0, 1.5, timeframe="5s", window=30),
        "feed_silent": new_rule("feed_silent", BTC, 30.0, 5.0, cooldown_s=300),
        "gap_abandoned": new_rule("gap_abandoned", Leg("sim", rules.ANY), 1.0, 0.0),
        "writer_failing": new_rule("writer_failing", BTC, 30.0, 0.0),
        "coint_lost": new_rule(
            "coint_lost",
            ETH,
            0.05,
            0.01,
            leg_x=BTC,
            timeframe="1m",
            window=200,
            method="ols",
            log_prices=True,
        ),
        "corr_breakdown": new_rule(
            "corr_breakdown", ETH, 0.5, 0.7, leg_x=BTC, timeframe="1s", window=60, log_prices=True
        ),
    }
    assert set(made) == set(rules.KINDS)
    ids = {kind: store.add_rule(rule) for kind, rule in made.items()}
    stored = {s.rule.kind: s.rule for s in store.rules()}
    for kind, rule in made.items():  # each as the daemon reads it back, id apart
        assert stored[kind] == rules.Rule(
            **{**rule.__dict__, "rule_id": ids[kind], "created_ms": stored[kind].created_ms}
        )
    # Each kind keeps only the fields it is judged on.
    assert (stored["writer_failing"].venue, stored["writer_failing"].symbol) == ("*", "*")
    assert stored["price_above"].timeframe is None and stored["price_above"].symbol_x is None
    assert stored["coint_lost"].method is None and stored["coint_lost"].window == 200
    assert stored["volume_spike"].log_prices is None and stored["feed_silent"].cooldown_s == 300


def test_the_same_rule_twice_is_refused_naming_the_first(store):
    first = store.add_rule(zscore())
    with pytest.raises(AlertError, match=f"rule {first} is the same rule"):
        store.add_rule(zscore(rearm=0.5, cooldown_s=60))  # re-arm and cooldown: still the same
    assert len(store.rules()) == 1
    other = [
        zscore(2.5),
        new_rule(
            "zscore_above",
            ETH,
            2.0,
            1.0,
            leg_x=BTC,
            timeframe="1m",
            window=60,
            method="ols",
            log_prices=True,
        ),
        new_rule(
            "zscore_above",
            ETH,
            2.0,
            1.0,
            leg_x=PERP,
            timeframe="1s",
            window=60,
            method="ols",
            log_prices=True,
        ),
    ]
    assert len({store.add_rule(rule) for rule in other}) == 3
    # A rule written by another client counts too (the command line compares the same way).
    add_rule(store.path, "price_above", "BTCUSDT", 100.0, 90.0)
    with pytest.raises(AlertError, match="is the same rule"):
        store.add_rule(new_rule("price_above", BTC, 100.0, 95.0))


def test_a_pair_across_venues_keeps_venue_x_and_one_venue_stores_none(store):
    across = store.add_rule(
        new_rule(
            "zscore_above",
            Leg("binance-spot", "BTCUSDT"),
            2.0,
            1.0,
            leg_x=PERP,
            timeframe="1m",
            window=30,
            method="ols",
            log_prices=True,
        )
    )
    same = store.add_rule(zscore())
    stored = {s.rule.rule_id: s.rule for s in store.rules()}
    assert (stored[across].venue_x, stored[across].symbol_x) == ("binance-usdm", "BTCUSDT")
    assert stored[same].venue_x is None
    assert describe(stored[across]) == "BTCUSDT · spot/BTCUSDT · perp: z-score above 2"
    assert describe(stored[same]) == "ETHUSDT/BTCUSDT on sim: z-score above 2"


# -- the daemon's state, firings, acknowledgement -------------------------------------------


def test_rules_carry_what_the_daemon_last_wrote_about_them(store):
    judged = store.add_rule(zscore())
    waiting = store.add_rule(new_rule("price_above", BTC, 100.0, 90.0))
    now = now_ms()
    store.execute(
        "UPDATE alert_rules SET last_value = 1.25, last_bar_time_s = 7, checked_ms = ?,"
        " last_fired_ms = ?, cooldown_s = 60 WHERE rule_id = ?",
        (now - 2_000, now - 60_000, judged),
    )
    store.execute(
        "UPDATE alert_rules SET note = 'waiting: 3 of 61 1s bars', checked_ms = ?,"
        " created_ms = ? WHERE rule_id = ?",
        (now - RULES_JUDGED_STALE_MS - 1_000, now - 60_000, waiting),
    )
    states = {s.rule.rule_id: s for s in store.rules()}
    first = states[judged]
    assert (first.last_value, first.last_bar_time_s, first.note) == (1.25, 7, None)
    assert first.rule.last_fired_ms == now - 60_000 and first.rule.cooldown_s == 60
    assert first.judged_age_s(now) == pytest.approx(2.0)
    assert not first.unjudged(now, RULES_JUDGED_STALE_MS)
    assert states[waiting].note == "waiting: 3 of 61 1s bars"
    assert states[waiting].unjudged(now, RULES_JUDGED_STALE_MS)


def test_how_long_no_daemon_judged_any_enabled_rule(store):
    now = now_ms()
    assert store.unjudged_for_ms(now) == (0, None)
    first = store.add_rule(zscore())
    second = store.add_rule(new_rule("price_above", BTC, 100.0, 90.0))
    store.execute("UPDATE alert_rules SET created_ms = ?", (now - 30_000,))
    assert store.unjudged_for_ms(now) == (2, 30_000)  # never judged: since it was made
    store.execute("UPDATE alert_rules SET checked_ms = ? WHERE rule_id = ?", (now - 500, second))
    assert store.unjudged_for_ms(now) == (2, 500)  # one judged lately: a daemon runs
    store.set_enabled(second, False)
    assert store.unjudged_for_ms(now) == (1, 30_000)
    store.set_enabled(first, False)
    assert store.unjudged_for_ms(now) == (0, None)  # nothing to judge: nothing to say


def test_a_new_rule_is_not_called_unjudged_before_a_daemon_could_have_judged_it(store):
    store.add_rule(zscore())
    (state,) = store.rules()
    assert state.checked_ms is None
    assert not state.unjudged(state.rule.created_ms + RULES_JUDGED_STALE_MS, RULES_JUDGED_STALE_MS)
    assert state.unjudged(state.rule.created_ms + RULES_JUDGED_STALE_MS + 1, RULES_JUDGED_STALE_MS)


def test_the_stale_bound_leaves_room_for_the_daemons_refresh():
    """The daemon rewrites a quiet rule's checked_ms every STATE_REFRESH_MS from passes a
    second apart: a bound at that refresh would call a judged rule unjudged."""
    assert RULES_JUDGED_STALE_MS >= evaluator.STATE_REFRESH_MS + 2_000


def test_firings_come_with_each_channels_delivery_state(store):
    rule_id = store.add_rule(zscore())
    now = now_ms()
    sent = add_firing(
        store.path,
        rule_id,
        "first",
        2.1,
        fired_ms=now - 9_000,
        deliveries=(("a", "json://host/hook", "sent", 2, None, "HTTP 500", now - 7_000),),
    )
    pending = add_firing(
        store.path,
        rule_id,
        "second",
        2.2,
        fired_ms=now - 5_000,
        deliveries=(
            ("a", "json://host/hook", "pending", 3, now + 4_000, "HTTP 500", None),
            ("b", "mailto://***@host", "failed", 40, None, "connection refused", None),
            ("c", "tgram://b...t/chat", "pending", 0, now, None, None),
        ),
    )
    silent = add_firing(store.path, rule_id, "third", 2.3, fired_ms=now)
    firings = store.firings()
    assert [f.event_id for f in firings] == [silent, pending, sent]
    assert (firings[2].value, firings[2].threshold, firings[2].message) == (2.1, 2.0, "first")
    assert firings[2].delivery_text(now) == "json://host/hook: sent (2 attempts)"
    assert firings[1].delivery_text(now) == (
        "json://host/hook: pending, 3 attempts failed (HTTP 500), next in 4 s; "
        "mailto://***@host: failed after 40 attempts (connection refused); "
        "tgram://b...t/chat: pending, not tried yet"
    )
    assert firings[0].delivery_text(now) == "not sent anywhere: the daemon had no --notify URL"


def test_acknowledging_takes_exactly_the_firings_seen(store):
    rule_id = store.add_rule(zscore())
    first, second, third = (add_firing(store.path, rule_id, m, 2.5) for m in "abc")
    assert store.count_unacked() == (3, third)
    assert store.acknowledge([second]) == 1
    assert store.acknowledge([second]) == 0  # already: its time is kept
    assert [f.event_id for f in store.firings(unacked=True)] == [third, first]
    # "All" means all the page showed: a firing stored after it drew its list stays new.
    assert store.acknowledge_through(first) == 1
    later = add_firing(store.path, rule_id, "d", 2.6)
    assert store.acknowledge_through(third) == 1
    assert store.count_unacked() == (1, later)
    acked = rows(store.path, "SELECT event_id FROM alert_events WHERE acked_ms IS NOT NULL")
    assert sorted(acked) == [(first,), (second,), (third,)]


def test_a_file_before_schema_version_6_is_said_to_predate_daemon_alerts(tmp_path):
    from pairs_monitor.store import schema

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in schema.MIGRATIONS[:5]:
        for statement in schema._statements(script):
            conn.execute(statement)
    conn.close()
    old = AlertStore(path)
    assert not old.judged_by_daemon()
    old.close()
    assert AlertStore(build_empty_db(tmp_path / "new.db")).judged_by_daemon()


# -- the form's starting values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("zscore_above", 1.234, (1.23, 0.23)),
        ("zscore_below", -2.567, (-2.57, -1.57)),
        ("price_above", 64_123.456, (64_123.5, 63_995.3)),
        ("price_below", 64_123.456, (64_123.5, 64_251.7)),
        ("volume_spike", 4.2, (4.2, 2.1)),
        ("corr_breakdown", 0.8, (0.8, 0.9)),
        ("coint_lost", 0.3, (0.05, 0.01)),  # a conventional level, whatever the value now
        ("feed_silent", 0.4, (30.0, 5.0)),
        ("gap_abandoned", 0.0, (1.0, 0.0)),
        ("writer_failing", 0.0, (30.0, 0.0)),
        ("zscore_above", float("nan"), (2.0, 1.0)),  # no value yet: the usual level
        ("volume_spike", 0.0, (3.0, 1.5)),  # a threshold of 0 would be refused
    ],
)
def test_a_new_rule_starts_from_the_value_now_with_a_valid_re_arm_level(kind, value, expected):
    threshold, rearm = suggested(kind, value)
    assert (threshold, rearm) == pytest.approx(expected)
    leg_x = BTC if kind in rules.PAIR_KINDS else None
    window = 200 if kind == "coint_lost" else 60
    rule = new_rule(
        kind,
        ETH,
        threshold,
        rearm,
        leg_x=leg_x,
        timeframe="1s",
        window=window,
        method="ols",
        log_prices=True,
    )
    rules.validate(rule)  # what the form starts from is a rule the daemon accepts
