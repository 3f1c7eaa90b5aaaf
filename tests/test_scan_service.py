"""The daemon's pair scans (pairs_monitor/scan): a real database written by the real
writer (a SQLite file, or a PostgreSQL database: ``store_db``), the real scanner child
process, results read back from ``scan_runs`` and ``scan_results``.

The universe: a few random walks and one planted cointegrated pair, one trade a minute
each over the last four hours (so each 1-minute close is that trade's price), stored
through ``TradeWriter`` like the feed's; one more leg exists only as 1-minute klines (USD-M
history). The service's results must be ``scan_pairs`` on those closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

import analytics as A
from pairs_monitor.scan import service as scan_service
from pairs_monitor.scan.service import RESULT_COLUMNS, ScanService
from pairs_monitor.store import schema
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.either_store import connect, store_db

__all__ = ["store_db"]  # the fixture: registered by being imported here

WINDOW_S = 4 * 3600
MINUTES = WINDOW_S // 60
SPOT, USDM, SIM = "binance-spot", "binance-usdm", "sim"


def closes_now(seed: int) -> pd.DataFrame:
    """Minute closes of the universe for the four hours before the current minute."""
    rng = np.random.default_rng(seed)
    end_m = time.time_ns() // 60_000_000_000
    index = pd.to_datetime(np.arange(end_m - MINUTES, end_m) * 60, unit="s", utc=True)
    logs = np.log(100.0) + np.cumsum(rng.normal(0, 3e-3, (MINUTES, 4)), axis=0)
    frame = pd.DataFrame(np.exp(logs), index=index, columns=["AUSDT", "BUSDT", "CUSDT", "DUSDT"])
    spread = np.zeros(MINUTES)
    for t in range(1, MINUTES):
        spread[t] = 0.5 * spread[t - 1] + rng.normal(0, 4e-3)  # sd 46 bps: pays 20 bps
    frame["PUSDT"] = np.exp(0.9 * logs[:, 0] + 0.5 + spread)  # cointegrated with AUSDT
    frame["KUSDT"] = np.exp(np.log(50.0) + np.cumsum(rng.normal(0, 3e-3, MINUTES)))
    return frame


VENUE_OF = {
    "AUSDT": SPOT,
    "BUSDT": SPOT,
    "CUSDT": SPOT,
    "DUSDT": SPOT,
    "PUSDT": SPOT,
    "KUSDT": USDM,
}


def store_universe(writer: TradeWriter, closes: pd.DataFrame, *, stale: tuple[str, ...] = ()):
    """Trades (spot legs) and 1-minute klines (the USD-M leg), and a fresh feed_status row
    per leg (``stale``: an hour old, a leg the daemon no longer records)."""
    seconds = [int(stamp.timestamp()) for stamp in closes.index]
    for symbol in closes.columns:
        if VENUE_OF[symbol] == SPOT:
            writer.put_trades(
                [
                    (SPOT, symbol, i + 1, (s + 30) * 1_000_000, float(p), 1.0, i % 2)
                    for i, (s, p) in enumerate(zip(seconds, closes[symbol], strict=True))
                ]
            )
    klines = [
        (USDM, "KUSDT", 60, s, p, p, p, p, 1.0, p, 0.5, 3)
        for s, p in zip(seconds, closes["KUSDT"].astype(float), strict=True)
    ]
    now = time.time_ns() // 1_000_000
    status = [
        (VENUE_OF[symbol], symbol, now - (3_600_000 if symbol in stale else 0))
        for symbol in closes.columns
    ]

    def write(conn: Connection) -> None:
        conn.executemany("INSERT INTO kline_bars VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", klines)
        conn.executemany(
            "INSERT INTO feed_status (venue, symbol, source, source_since_ms, updated_ms)"
            " VALUES (?, ?, 'live', 0, ?)",
            [(v, s, t) for v, s, t in status],
        )

    writer.submit(write).result(10)
    writer.flush(10)


def open_database(db: str | Path) -> Iterator[tuple[str | Path, TradeWriter]]:
    writer = TradeWriter(db)
    writer.start()
    yield db, writer
    writer.close(10)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str | Path, TradeWriter]]:
    """A SQLite file and its writer."""
    yield from open_database(tmp_path / "ticks.db")


@pytest.fixture
def either_database(store_db: str) -> Iterator[tuple[str | Path, TradeWriter]]:
    """A SQLite file or a PostgreSQL database, and its writer."""
    yield from open_database(store_db)


def query(db: str | Path, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
    """The rows of ``sql`` on either store, with their column names."""
    conn = connect(str(db))
    try:
        cursor = conn.execute(sql, params)
        names = [column[0] for column in cursor.description or ()]
        return pd.DataFrame([tuple(row) for row in cursor.fetchall()], columns=names)
    finally:
        conn.close()


def wait_for_runs(db: str | Path, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = query(db, "SELECT * FROM scan_runs ORDER BY scan_id")
        if len(frame) >= count:
            return cast(list[dict[str, Any]], frame.to_dict("records"))
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} scans stored within {timeout} s")


def results(db: str | Path, scan_id: int) -> pd.DataFrame:
    return query(db, "SELECT * FROM scan_results WHERE scan_id = ? ORDER BY rank", (scan_id,))


def service(db: str | Path, writer: TradeWriter, stop: threading.Event, **kwargs) -> ScanService:
    settings = {"every_s": 3600.0, "window_s": WINDOW_S, "first_s": 0.0, **kwargs}
    return ScanService(db, writer, stop, **settings)


@pytest.mark.daemon
def test_a_scan_of_the_recorded_legs_is_stored_ranked_and_equal_to_scan_pairs(either_database):
    db, writer = either_database
    closes = closes_now(13)  # the planted pair: p = 3e-6, a tradable candidate
    store_universe(writer, closes, stale=("DUSDT",))
    stop = threading.Event()
    scans = service(db, writer, stop)
    scans.start()
    try:
        run = wait_for_runs(db, 1)[0]
        child = scans.child
        assert child is not None
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 19  # the lowest CPU priority
    finally:
        assert scans.close(timeout=10)
    assert child.poll() is not None  # the child ended with the service

    # DUSDT's feed_status is an hour old: not a leg the daemon records now.
    live = closes.drop(columns="DUSDT")
    frame = live.set_axis([f"{VENUE_OF[s]}:{s}" for s in live.columns], axis=1)
    fees = {name: A.taker_fee_bps(name.split(":")[0]) for name in frame.columns}
    expected = A.scan_pairs(frame, log_prices=True, min_obs=120, fee_bps=fees)
    signals = A.scan_signals(frame, expected, log_prices=True)
    end_s = int(closes.index[-1].timestamp()) + 60
    assert (run["legs"], run["legs_skipped"], run["pairs_tested"]) == (5, 0, 10)
    assert (run["window_start_s"], run["window_end_s"]) == (end_s - WINDOW_S, end_s)
    assert run["bar_s"] == 60 and run["log_prices"] == 1 and run["note"] is None
    assert run["candidates"] == int(expected["candidate"].sum()) >= 1
    assert run["rows_stored"] == 10 and run["cpu_s"] > 0
    assert run["started_ms"] <= run["finished_ms"]
    params = json.loads(run["params_json"])
    assert params["every_s"] == 3600.0 and params["fee_bps"] == {SPOT: 10.0, USDM: 5.0}

    got = results(db, run["scan_id"])
    assert list(got.columns) == ["scan_id", *RESULT_COLUMNS]
    assert got["rank"].tolist() == list(range(1, 11))
    top = got.iloc[0]
    assert (top.symbol_y, top.symbol_x, top.candidate, top.tradable) == ("AUSDT", "PUSDT", 1, 1)
    assert got["venue_x"].tolist().count(USDM) + got["venue_y"].tolist().count(USDM) == 4
    np.testing.assert_array_equal(
        (got["venue_y"] + ":" + got["symbol_y"]).to_numpy(), expected["y"].to_numpy()
    )
    for column in ("eg_stat", "eg_pvalue", "eg_qvalue", "hedge_ratio", "spread_std_bps"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-9, err_msg=column)
    np.testing.assert_allclose(got["round_trip_bps"].iloc[0], 20.0)  # spot legs: 10 bps each
    np.testing.assert_allclose(got["zscore"], signals["zscore"], rtol=1e-9)
    assert (got["last_bar_s"] == end_s - 60).all()
    hits = signals["signal_bar"].notna()
    assert got["signal_bar_s"].notna().tolist() == hits.tolist()


@pytest.mark.daemon
def test_a_killed_scanner_process_is_replaced_and_the_scans_go_on(database, monkeypatch, caplog):
    db, writer = database
    store_universe(writer, closes_now(12))
    monkeypatch.setattr(scan_service, "RESTART_S", 0.0)
    caplog.set_level(logging.INFO, logger="scan")
    stop = threading.Event()
    scans = service(db, writer, stop, every_s=1.0)
    scans.start()
    try:
        wait_for_runs(db, 1)
        assert scans.child is not None
        first = scans.child.pid
        os.kill(first, signal.SIGKILL)
        runs = wait_for_runs(db, 3)
    finally:
        stop.set()  # the daemon's stop event ends it too
        assert scans.close(timeout=10)
    assert scans.started_children >= 2 and f"pid {first}" in caplog.text
    assert "ended with status -9; starting another" in caplog.text
    assert all(run["pairs_tested"] == 15 for run in runs)


@pytest.mark.daemon
def test_a_failing_scan_is_logged_and_an_overrunning_one_ended(database, caplog):
    db, writer = database
    store_universe(writer, closes_now(11))
    writer.submit(lambda conn: conn.execute("PRAGMA user_version = 7")).result(10)
    stop = threading.Event()
    scans = service(db, writer, stop, every_s=1.0)
    scans.start()
    try:
        deadline = time.monotonic() + 30
        while scans.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        assert scans.close(timeout=10)
    assert scans.failures >= 2 and scans.started_children == 1
    assert "schema version 7, scans need 8: run `python db_setup.py`" in caplog.text

    writer.submit(lambda conn: conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION}"))
    writer.flush(10)
    slow = service(db, writer, threading.Event(), timeout_s=0.05)
    slow.start()
    try:
        deadline = time.monotonic() + 30
        while slow.failures < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        child = slow.started_children
    finally:
        assert slow.close(timeout=10)
    assert child == 1 and "took more than 0 s: the scanner process is ended" in caplog.text
    assert slow.child is None


@pytest.mark.daemon
def test_too_few_legs_with_bars_is_a_run_with_a_note(either_database):
    db, writer = either_database
    closes = closes_now(14)
    store_universe(writer, closes.iloc[-60:])  # one hour: under the 120 closes a leg needs
    scans = service(db, writer, threading.Event())
    scans.start()
    try:
        run = wait_for_runs(db, 1)[0]
    finally:
        assert scans.close(timeout=10)
    assert (run["legs"], run["legs_skipped"], run["pairs_tested"], run["rows_stored"]) == (
        0,
        6,
        0,
        0,
    )
    assert run["note"] == (
        "0 of 6 legs have 120 one-minute closes in the window: nothing to test yet"
    )


def test_the_scan_flags_parse_minutes_and_windows_and_refuse_nonsense():
    parser = argparse.ArgumentParser()
    scan_service.add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.scan_every, defaults.scan_window) == (5.0, 86_400)
    args = parser.parse_args(["--scan-every", "0", "--scan-window", "3d"])
    assert (args.scan_every, args.scan_window) == (0.0, 3 * 86_400)
    for word, message in [
        ("30m", "outside 2h..7d"),
        ("8d", "outside 2h..7d"),
        ("24", "is not a window"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            scan_service.parse_window(word)
    for word, message in [("-1", "takes minutes"), ("0.01", "takes minutes"), ("x", "not a")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            scan_service.parse_every(word)
