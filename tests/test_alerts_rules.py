"""Rule values, hysteresis, cooldown and validation.

The daemon must judge a rule on the value the page shows for it: each pair and volume
value the evaluator stores is compared with the page's own pipeline on the same file
(``pipeline.compute_pair`` over ``rule_view``), and the health values are worked out by
hand from the rows they read.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pairs_monitor.alerts import rules
from pairs_monitor.alerts.bars import BarCache
from pairs_monitor.alerts.delivery import Deliverer
from pairs_monitor.alerts.evaluator import Evaluator
from pairs_monitor.alerts.rules import Decision, FeedRow, GapRow, Rule, WriterRow
from pairs_monitor.page import pipeline
from pairs_monitor.page.settings import Leg
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.either_store import add_rule, rows
from tests.helpers.page_db import START_S, add_trades, build_pair_db, pair_trades

# -- the same value as the page ------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("alerts") / "ticks.db")


def judged(db: Path) -> dict[int, tuple[float | None, int | None, str | None]]:
    """One evaluator pass over the file, as the daemon makes it: each rule's stored
    ``(last_value, last_bar_time_s, note)``."""
    writer = TradeWriter(db)
    writer.start()
    stop = threading.Event()
    try:
        evaluator = Evaluator(db, writer, [], Deliverer(db, writer, [], stop), stop)
        evaluator.run_pass()
        writer.flush(10)
    finally:
        writer.close()
    found = rows(db, "SELECT rule_id, last_value, last_bar_time_s, note FROM alert_rules")
    return {rule_id: (value, bar, note) for rule_id, value, bar, note in found}


def page_value(db: Path, rule: Rule) -> tuple[float, int | None]:
    """What the page's Live panel computes for the rule, through its own pipeline."""
    source = pipeline.DbSource(pipeline.ReadOnlyDB(db))
    view = rules.rule_view(rule)
    if rule.kind == "volume_spike":
        leg = Leg(rule.venue, rule.symbol)
        end_s = pipeline.end_of_view(source, [leg])
        assert end_s is not None
        return pipeline.volume_ratio_now(source, view, leg, end_s)
    column = "corr" if rule.kind == "corr_breakdown" else "zscore"
    return pipeline.compute_pair(source, view).now(column)


PAGE_CASES: list[tuple[Any, ...]] = [
    ("zscore_above", "1s", 60, "ols", 1),
    ("zscore_below", "1s", 30, "ols", 0),
    ("zscore_above", "5s", 20, "ols", 1),
    ("zscore_above", "1m", 5, "ols", 1),
    ("zscore_above", "1s", 60, "rolling", 1),
    ("zscore_above", "5s", 20, "kalman", 1),
    ("zscore_above", "1s", 40, "huber", 0),
    ("corr_breakdown", "1s", 60, None, None),
    ("corr_breakdown", "15s", 10, None, None),
    ("volume_spike", "1s", 60, None, None),
    ("volume_spike", "5s", 12, None, None),
    ("zscore_above", "1s", 60, "ols", 1, "spot"),  # X on another venue
]


@pytest.fixture(scope="module")
def page_cases(pair_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = tmp_path_factory.mktemp("cases") / "ticks.db"
    db.write_bytes(pair_db.read_bytes())
    # BTCUSDT on a second venue, on a path of its own, for the pair across venues.
    add_trades(db, [row for row in pair_trades(venue="spot", seed=8) if row[1] == "BTCUSDT"])
    for kind, timeframe, window, method, log_prices, *venue_x in PAGE_CASES:
        # Levels no value reaches: the rule is judged, never fires.
        threshold, rearm = {"zscore_below": (-50.0, 50.0), "corr_breakdown": (-1.0, 1.0)}.get(
            kind, (50.0, -50.0)
        )
        add_rule(
            db,
            kind,
            "ETHUSDT",
            threshold,
            rearm,
            symbol_x=None if kind == "volume_spike" else "BTCUSDT",
            timeframe=timeframe,
            window_bars=window,
            hedge_method=method,
            log_prices=log_prices,
            venue_x=venue_x[0] if venue_x else None,
        )
    yield db


@pytest.mark.parametrize("case", range(len(PAGE_CASES)), ids=[str(c) for c in PAGE_CASES])
def test_the_daemon_stores_the_value_the_page_computes(page_cases: Path, case: int):
    stored = judged(page_cases)
    conn = sqlite3.connect(page_cases)
    row = conn.execute(
        f"SELECT {rules.RULE_COLUMNS} FROM alert_rules WHERE rule_id = ?", (case + 1,)
    ).fetchone()
    conn.close()
    rule = rules.rule_from_row(row)
    value, bar, note = stored[rule.rule_id]
    expected, expected_bar = page_value(page_cases, rule)
    assert note is None and value is not None, note
    assert math.isfinite(expected)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert bar == expected_bar


def test_a_stale_leg_gives_no_value_and_says_why(tmp_path: Path):
    db = build_pair_db(tmp_path / "ticks.db", seconds=400)
    # ETHUSDT trades 30 s more on its own: BTCUSDT's last bar is 30 bars behind.
    add_trades(
        db,
        [
            ("sim", "ETHUSDT", 10_000 + i, (START_S + 400 + i) * 1_000_000, 3000.0, 0.1, 0)
            for i in range(30)
        ],
    )
    rule_id = add_rule(
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
    )
    value, bar, note = judged(db)[rule_id]
    assert (value, bar) == (None, None)
    assert note is not None and "stale leg: BTCUSDT" in note


def test_a_pair_without_enough_bars_waits_and_says_how_many(tmp_path: Path):
    db = build_pair_db(tmp_path / "ticks.db", seconds=40)
    rule_id = add_rule(
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
    )
    assert judged(db)[rule_id] == (None, None, "waiting: 40 of 61 1s bars with both legs")


# -- bars kept in memory -----------------------------------------------------------------


def test_the_bar_cache_sees_trades_recovered_into_the_past(pair_db: Path, tmp_path: Path):
    db = tmp_path / "ticks.db"
    db.write_bytes(pair_db.read_bytes())
    end_s = START_S + 1200
    cache = BarCache("sim", "ETHUSDT", 60, verify_s=0.0)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        before = cache.refresh(conn, START_S, end_s)
        assert len(before) == 20 and cache.reloads == 1
        # A gap fill lands a large trade in minute 3, long behind the newest bar.
        add_trades(db, [("sim", "ETHUSDT", 99_999, (START_S + 185) * 1_000_000, 1.0, 500.0, 0)])
        after = cache.refresh(conn, START_S, end_s)
    finally:
        conn.close()
    assert cache.reloads == 2
    assert after.volume[3] == pytest.approx(before.volume[3] + 500.0)
    assert np.array_equal(np.delete(after.volume, 3), np.delete(before.volume, 3))


# -- hysteresis and cooldown -------------------------------------------------------------

RISING = Rule(1, "zscore_above", "sim", "ETHUSDT", threshold=2.0, rearm=1.0, symbol_x="BTCUSDT")
FALLING = Rule(2, "price_below", "sim", "ETHUSDT", threshold=90.0, rearm=95.0)


@pytest.mark.parametrize(
    ("rule", "armed", "value", "expected"),
    [
        (RISING, True, 1.9, Decision(False, True)),
        (RISING, True, 2.0, Decision(True, False)),
        (RISING, False, 2.5, Decision(False, False)),  # still past: fired once only
        (RISING, False, 1.5, Decision(False, False)),  # between re-arm and threshold
        (RISING, False, 1.0, Decision(False, True)),  # back to re-arm
        (RISING, True, math.nan, Decision(False, True)),  # no value: nothing changes
        (FALLING, True, 89.0, Decision(True, False)),
        (FALLING, False, 94.0, Decision(False, False)),
        (FALLING, False, 96.0, Decision(False, True)),
    ],
)
def test_hysteresis(rule: Rule, armed: bool, value: float, expected: Decision):
    assert rules.decide(rule, armed, value, 10_000, None) == expected


def test_a_crossing_inside_the_cooldown_is_held_and_fires_when_it_ends():
    rule = Rule(1, "price_above", "sim", "ETHUSDT", threshold=100.0, rearm=95.0, cooldown_s=60)
    fired_ms = 1_000_000
    assert rules.decide(rule, True, 101.0, fired_ms + 59_999, fired_ms) == Decision(
        False, True, held=True
    )
    assert rules.decide(rule, True, 101.0, fired_ms + 60_000, fired_ms) == Decision(True, False)
    assert rules.decide(rule, True, 99.0, fired_ms + 61_000, fired_ms) == Decision(False, True)


def test_an_event_rule_fires_on_each_new_count_and_never_disarms():
    rule = Rule(1, "gap_abandoned", "sim", "*", threshold=1.0, rearm=0.0)
    assert rules.decide(rule, True, 2.0, 0, None) == Decision(True, True)
    assert rules.decide(rule, True, 0.0, 0, None) == Decision(False, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "zscore_sideways"}, "unknown rule kind"),
        ({"rearm": 3.0}, "must be below the threshold"),
        ({"symbol_x": None}, "needs two different legs"),
        ({"symbol_x": "ETHUSDT"}, "needs two different legs"),
        ({"timeframe": "7s"}, "needs a timeframe"),
        ({"window": 1}, "window of at least 2"),
        ({"method": "median"}, "needs a hedge method"),
        ({"threshold": math.inf}, "finite"),
        ({"cooldown_s": -1}, "cooldown"),
        ({"symbol": "*"}, "only gap_abandoned"),
    ],
)
def test_a_rule_that_cannot_be_judged_says_why(changes: dict[str, Any], message: str):
    good: dict[str, Any] = {
        "rule_id": 1,
        "kind": "zscore_above",
        "venue": "sim",
        "symbol": "ETHUSDT",
        "symbol_x": "BTCUSDT",
        "threshold": 2.0,
        "rearm": 1.0,
        "timeframe": "1s",
        "window": 60,
        "method": "ols",
    }
    rules.validate(Rule(**good))
    with pytest.raises(rules.RuleError, match=message):
        rules.validate(Rule(**(good | changes)))


# -- health values -------------------------------------------------------------------------

NOW_MS = 1_800_000_000_000


def feed(symbol: str, age_s: float | None, problem: str | None = None) -> FeedRow:
    last = None if age_s is None else int((NOW_MS - age_s * 1000) * 1000)
    return FeedRow(symbol, last, NOW_MS - 600_000, NOW_MS, problem)


def test_feed_silence_counts_only_while_the_market_trades():
    rule = Rule(1, "feed_silent", "sim", "BTCUSDT", threshold=20.0, rearm=0.0)
    trading = rules.feed_silence(rule, [feed("BTCUSDT", 45), feed("ETHUSDT", 1)], NOW_MS)
    assert trading.value == pytest.approx(45) and "while ETHUSDT traded" in trading.detail
    quiet = rules.feed_silence(rule, [feed("BTCUSDT", 45), feed("ETHUSDT", 40)], NOW_MS)
    assert math.isnan(quiet.value) and "so is every other symbol" in (quiet.note or "")
    alone = rules.feed_silence(rule, [feed("BTCUSDT", 45, "wrong route")], NOW_MS)
    assert alone.value == pytest.approx(45) and "wrong route" in alone.detail
    missing = rules.feed_silence(rule, [feed("ETHUSDT", 1)], NOW_MS)
    assert math.isnan(missing.value) and "no feed_status row" in (missing.note or "")


def test_gaps_abandoned_counts_those_after_the_rule_and_the_cursor():
    rule = Rule(1, "gap_abandoned", "sim", "*", threshold=1.0, rearm=0.0, created_ms=5_000)
    gaps = [
        GapRow(3, "ETHUSDT", 10, 19, 4_000),  # before the rule was made
        GapRow(4, "ETHUSDT", 30, 31, 6_000, "REST has no such trades"),
        GapRow(7, "BTCUSDT", 50, 50, 7_000),
    ]
    reading = rules.gaps_abandoned(rule, gaps, None)
    assert (reading.value, reading.cursor_id, reading.bar_time_s) == (2.0, 7, 7)
    assert reading.detail == "3 trade ids lost: ETHUSDT 30-31, BTCUSDT 50-50"
    assert rules.gaps_abandoned(rule, gaps, 7).value == 0.0
    one_symbol = Rule(2, "gap_abandoned", "sim", "BTCUSDT", 1.0, 0.0, created_ms=5_000)
    assert rules.gaps_abandoned(one_symbol, gaps, None).value == 1.0


def test_writer_failing_is_the_seconds_of_the_current_streak():
    retrying = WriterRow("retrying", NOW_MS - 42_000, "database is locked", NOW_MS)
    reading = rules.writer_failing(retrying, NOW_MS)
    assert reading.value == pytest.approx(42) and "database is locked" in reading.detail
    assert rules.writer_failing(WriterRow("ok", None, None, NOW_MS), NOW_MS).value == 0.0
    assert math.isnan(rules.writer_failing(None, NOW_MS).value)
