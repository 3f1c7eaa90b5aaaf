"""Times the page cannot use: bars stamped far in the future, or beyond what a calendar
holds. The page ignores them when choosing where a view ends, says so, and never crashes.

Real fixture databases; the implausible rows are written with plain SQL, as an older
daemon, another writer or a corrupt file could have left them (today's daemon refuses
such trades where they enter).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.clock import now_ms
from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.settings import MAX_FUTURE_SKEW_S, Leg
from pairs_monitor.page.text import utc
from tests.helpers.page_db import build_pair_db

APP = str(Path(__file__).resolve().parent.parent / "app.py")
YEAR_2255_US = 9_000_000_000 * 1_000_000  # 2255-03-14
NEAR_INT64_US = 2**63 - 1_000  # its second is far beyond pandas' year 2262


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("times") / "ticks.db")


def with_trade_at(pair_db: Path, tmp_path: Path, time_us: int, symbol: str = "ETHUSDT") -> Path:
    """A copy of the fixture with one more trade (and its one-second bar) at ``time_us``."""
    path = tmp_path / "ticks.db"
    shutil.copy(pair_db, path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO trades VALUES ('sim', ?, 999999, ?, 100.0, 1.0, 0)", (symbol, time_us)
        )
        conn.execute(
            "INSERT INTO bars_1s (venue, symbol, bar_time_s, open, high, low, close, volume,"
            " quote_volume, taker_buy_volume, trade_count, first_trade_id, last_trade_id)"
            " VALUES ('sim', ?, ?, 100, 100, 100, 100, 1, 100, 0, 1, 999999, 999999)",
            (symbol, time_us // 1_000_000),
        )
    conn.close()
    return path


def page(monkeypatch, db: Path) -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def warnings(at: AppTest) -> str:
    """The warnings as read: markdown escapes and bold markers removed."""
    return "\n".join(re.sub(r"\\(.)", r"\1", str(w.value).replace("**", "")) for w in at.warning)


@pytest.mark.apptest
@pytest.mark.parametrize(
    ("time_us", "said"),
    [(YEAR_2255_US, "2255-03-14"), (NEAR_INT64_US, "an out-of-range time")],
    ids=["year-2255", "near-int64"],
)
def test_a_trade_far_in_the_future_neither_blanks_nor_crashes_the_page(
    monkeypatch, pair_db, tmp_path, time_us, said
):
    clean = metrics(page(monkeypatch, pair_db))
    at = page(monkeypatch, with_trade_at(pair_db, tmp_path, time_us))
    shown = metrics(at)
    # The same figures as without the stray row: z-score, hedge, correlation, last price.
    for label in ("z-score", "hedge ratio", "correlation", "BTCUSDT last", "ETHUSDT last"):
        assert shown[label] == clean[label] != "—", label
    text = warnings(at)
    assert (
        f"ETHUSDT has 1 one-second bar(s) stamped more than {MAX_FUTURE_SKEW_S // 60} min" in text
    )
    assert f"the latest at {said}" in text and "The page ignores them" in text


def test_the_views_end_at_the_newest_plausible_bar(pair_db, tmp_path):
    db = pipeline.ReadOnlyDB(with_trade_at(pair_db, tmp_path, YEAR_2255_US))
    try:
        source = pipeline.DbSource(db)
        fixture_end = db.run(queries.latest_bar_s, "sim", "BTCUSDT", 2**62)
        assert fixture_end is not None
        btc, eth = Leg("sim", "BTCUSDT"), Leg("sim", "ETHUSDT")
        assert pipeline.end_of_view(source, [btc, eth]) == fixture_end + 1
        assert source.future_bars(eth) == (1, YEAR_2255_US // 1_000_000)
        assert source.future_bars(btc) == (0, None)
        last = source.last_price(eth)
        assert last is not None and last[0] != 100.0 and last[1] < now_ms() * 1000
    finally:
        db.close()


def test_a_bar_just_ahead_of_the_clock_still_counts(pair_db, tmp_path):
    """A small skew ahead (an exchange clock a little fast) is data, not an error."""
    ahead_us = (now_ms() + 60_000) * 1000
    db = pipeline.ReadOnlyDB(with_trade_at(pair_db, tmp_path, ahead_us))
    try:
        source = pipeline.DbSource(db)
        assert source.latest_s(Leg("sim", "ETHUSDT")) == ahead_us // 1_000_000
        assert source.future_bars(Leg("sim", "ETHUSDT")) == (0, None)
    finally:
        db.close()


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1_714_521_600_000, "2024-05-01 00:00:00 UTC"),
        (2**63 - 1, "an out-of-range time (9,223,372,036,854,775,808 ms since 1970)"),
        (-(2**63), "an out-of-range time (-9,223,372,036,854,775,808 ms since 1970)"),
    ],
)
def test_utc_says_an_out_of_range_time_instead_of_raising(ms, text):
    assert utc(ms) == text
