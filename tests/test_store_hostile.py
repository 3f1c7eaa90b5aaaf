"""Hostile rows reaching the writer: each is set aside and counted, the rest of its batch
commits, and the writer goes on storing every symbol (issue 15: one trade id of 2**63
wedged the writer for good)."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairs_monitor.store import sql
from pairs_monitor.store.writer import TradeWriter
from tests.test_writer import expected_bars, stored_bars, stored_trades

VENUE = "binance-spot"
T0 = 1_700_000_000_000_000


def tape(symbol: str, first_id: int, count: int) -> list[tuple]:
    """``count`` consecutive trades of ``symbol``, three to a second."""
    return [
        (VENUE, symbol, i, T0 + i * 333_333, 100.0 + i % 7, 0.25 + i % 3, i % 2)
        for i in range(first_id, first_id + count)
    ]


def row(**fields: Any) -> tuple:
    """A good trade row with some fields replaced."""
    good = dict(
        venue=VENUE,
        symbol="AAAUSDT",
        trade_id=5_000,
        trade_time_us=T0 + 5_000 * 333_333,
        price=101.0,
        qty=1.0,
        buyer_is_maker=0,
    )
    good.update(fields)
    return tuple(good.values())


HOSTILE = {
    "trade id 2**63": row(trade_id=2**63),
    "trade id -2**63 - 1": row(trade_id=-(2**63) - 1),
    "trade id negative": row(trade_id=-5),
    "trade id fractional": row(trade_id=5_000.5),
    "trade id as text": row(trade_id="5000x"),
    "time whose microseconds overflow 64 bits": row(trade_time_us=2**63),
    "time near the int64 limit (beyond pandas)": row(trade_time_us=2**63 - 1),
    "time before 1970": row(trade_time_us=-1),
    "time as a float inf": row(trade_time_us=math.inf),
    "price NaN": row(price=math.nan),
    "price inf": row(price=math.inf),
    "price -inf": row(price=-math.inf),
    "price zero": row(price=0.0),
    "price negative": row(price=-101.0),
    "price as a dict": row(price={"p": 1}),
    "price as bytes": row(price=b"101"),
    "price None": row(price=None),
    "qty NaN": row(qty=math.nan),
    "qty inf": row(qty=math.inf),
    "qty negative": row(qty=-1.0),
    "price times qty overflows": row(price=1e200, qty=1e200),
    "buyer_is_maker 2": row(buyer_is_maker=2),
    "symbol empty": row(symbol=""),
    "symbol with a lone surrogate": row(symbol="AAA\udcffUSDT"),
    "symbol None": row(symbol=None),
    "six fields": row()[:6],
    "eight fields": (*row(), 0),
    "None instead of a row": None,
    "a number instead of a row": 7,
    "a dict instead of a row": {"trade_id": 5_000},
}


@pytest.mark.parametrize("bad", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_row_is_set_aside_and_everything_else_commits(tmp_path, caplog, bad):
    path = tmp_path / "ticks.db"
    # 1,200 rows: the bad one sits inside a 500-row statement, among two symbols.
    aaa, bbb = tape("AAAUSDT", 1, 600), tape("BBBUSDT", 1, 600)
    batch = [*aaa[:300], *bbb[:300], bad, *aaa[300:], *bbb[300:]]
    writer = TradeWriter(path)
    writer.start()
    writer.put_trades(batch)
    writer.flush(10)
    later = tape("AAAUSDT", 601, 10) + tape("CCCUSDT", 1, 10)
    writer.put_trades(later)  # the writer still stores, every symbol
    assert writer.close(10)
    good = sorted(aaa + bbb + later)
    assert stored_trades(path) == good
    expected = expected_bars(good)
    pd.testing.assert_frame_equal(
        stored_bars(path)[expected.columns], expected, check_dtype=False, rtol=1e-12
    )
    assert writer.stats.rows_rejected == 1
    assert writer.stats.trades_stored == len(good)
    assert writer.stats.failed_commits == 0  # set aside, never retried
    lines = [r.getMessage() for r in caplog.records if "rejected trade row" in r.getMessage()]
    assert len(lines) == 1
    assert repr(bad)[:40] in lines[0]


def test_each_reason_is_named_in_the_log(tmp_path, caplog):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    writer.put_trades([row(trade_id=2**63), row(price=math.inf), row(trade_time_us=2**63 - 1)])
    writer.put_trades([row(qty=math.nan), row()[:6]])
    assert writer.close(10)
    assert writer.stats.rows_rejected == 5
    assert stored_trades(path) == []
    text = caplog.text
    assert "OverflowError" in text
    assert "price_finite_and_positive" in text
    assert "trade_time_us_in_1970_to_2262" in text
    assert "NOT NULL constraint failed: incoming.qty" in text
    assert "not a sequence of the 7 trade fields" in text


def test_rejections_are_logged_at_most_ten_a_minute_and_all_counted(tmp_path, caplog):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    good = tape("AAAUSDT", 1, 100)
    bad = [row(trade_id=2**63 + i) for i in range(500)]
    writer.put_trades(bad + good)
    assert writer.close(10)
    assert writer.stats.rows_rejected == 500
    assert stored_trades(path) == good
    lines = [r for r in caplog.records if "rejected trade row" in r.getMessage()]
    assert len(lines) == 10
    assert all(r.levelno == logging.ERROR for r in lines)


def test_a_huge_value_is_cut_short_in_the_log(tmp_path, caplog):
    path = tmp_path / "ticks.db"
    writer = TradeWriter(path)
    writer.start()
    writer.put_trades([row(symbol="X" * 10_000_000, price=math.inf)])
    assert writer.close(10)
    assert writer.stats.rows_rejected == 1
    assert len(caplog.text) < 2_000
    assert "10000" in caplog.text  # the length of what was cut is said


def test_the_staging_limits_are_what_a_reader_can_hold():
    # The page turns times into pandas timestamps: the writer's bound is theirs.
    assert pd.Timestamp(sql.MAX_TIME_US, unit="us") == pd.Timestamp.max.floor("us")


# -- property: random hostile rows beside a real tape -------------------------------------

_ints = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 2**63 - 1, 2**63, -(2**63), sql.MAX_TIME_US, sql.MAX_TIME_US + 1]),
)
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0))
_values = st.one_of(_ints, _floats, st.text(max_size=5), st.none(), st.binary(max_size=3))
_hostile_rows = st.one_of(
    st.tuples(
        st.just(VENUE),
        st.sampled_from(["AAAUSDT", "BBBUSDT"]),
        _ints,
        _ints,
        _floats,
        _floats,
        st.sampled_from([0, 1, 2, -1, True]),
    ),
    # Any other length: seven loose values would be read by SQLite's own lossless rules
    # (the text "5" as the id 5), which this oracle does not model.
    st.lists(_values, max_size=9).filter(lambda values: len(values) != 7).map(tuple),
)


def _storable(r: Any) -> bool:
    """An oracle written apart from the writer: what a reader can use."""
    if not (isinstance(r, tuple) and len(r) == 7):
        return False
    venue, symbol, trade_id, time_us, price, qty, maker = r
    return (
        isinstance(venue, str)
        and isinstance(symbol, str)
        and bool(venue)
        and bool(symbol)
        and type(trade_id) is int
        and 0 <= trade_id < 2**63
        and type(time_us) is int
        and 0 <= time_us <= sql.MAX_TIME_US
        and isinstance(price, float)
        and isinstance(qty, float)
        and 0 < price <= 1.7976931348623157e308
        and 0 <= qty <= 1.7976931348623157e308
        and price * qty <= 1.7976931348623157e308
        and maker in (0, 1)
    )


@pytest.mark.soak
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=st.lists(_hostile_rows, min_size=1, max_size=30), data=st.data())
def test_random_hostile_rows_never_stop_the_tape_and_nothing_bogus_is_stored(
    tmp_path_factory, hostile, data
):
    path: Path = tmp_path_factory.mktemp("hostile") / "ticks.db"
    real = tape("AAAUSDT", 1, 200) + tape("BBBUSDT", 1, 200)
    # Hostile ids above the real tape's, so a hostile row never shares a key with a real one.
    hostile = [
        (*r[:2], r[2] + 10_000, *r[3:])
        if isinstance(r, tuple) and len(r) == 7 and type(r[2]) is int and r[2] >= 0
        else r
        for r in hostile
    ]
    batch = list(real)
    for r in hostile:
        batch.insert(data.draw(st.integers(0, len(batch))), r)
    writer = TradeWriter(path)
    writer.start()
    writer.put_trades(batch)
    assert writer.close(20)
    stored = stored_trades(path)
    kept = [r for r in hostile if _storable(r)]
    # First copy of each key wins among the kept hostile rows; the real tape is whole.
    expected = {(r[0], r[1], r[2]): r for r in reversed(kept)}
    for r in real:
        expected[(r[0], r[1], r[2])] = r
    assert set(real) <= set(stored)
    assert {(r[0], r[1], r[2]) for r in stored} == set(expected)
    for r in stored:
        assert _storable(r), r
    assert writer.stats.failed_commits == 0
    assert writer.stats.trades_stored == len(stored)
    with sqlite3.connect(path) as conn:
        in_bars = conn.execute("SELECT sum(trade_count) FROM bars_1s").fetchone()[0]
    assert in_bars == len(stored)
