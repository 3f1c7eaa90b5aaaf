"""Fixture databases for the page's tests and benchmark, written by the real TradeWriter.

``build_pair_db`` records a cointegrated pair (and a third, unrelated symbol) as trades
several times a second: X is a random walk, ``log Y = A + B log X + OU noise``, and the
last ``shock_s`` seconds push Y up so the z-score ends well above 2.

``build_basis_db`` records both Binance markets: BTCUSDT and ETHUSDT on binance-spot,
BTCUSDT on binance-usdm a few basis points above spot, 26 hours of trades, with the
perpetual's settled funding every 8 hours (``funding_rates``) and its live rate
(``funding_live``), and a simulated leg (venue ``sim``) beside them; ``store_scan`` adds
the daemon's pair scan of its four legs (``scan_runs``, ``scan_results``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pairs_monitor.scan.service import RESULT_COLUMNS, RUN_COLUMNS
from pairs_monitor.scan.worker import Scanner
from pairs_monitor.store import klines as kline_store
from pairs_monitor.store.klines import KlineBar
from pairs_monitor.store.writer import TradeWriter

START_S = 1_714_521_600  # 2024-05-01T00:00:00Z
TRUE_SLOPE = 1.5
TRUE_INTERCEPT = -5.0
OU_PHI = 0.98  # per trade


def pair_trades(
    venue: str = "sim",
    seconds: int = 1200,
    trades_per_s: int = 2,
    start_s: int = START_S,
    shock_s: int = 20,
    seed: int = 7,
    first_id: int = 1,
) -> list[tuple]:
    """Trade rows for BTCUSDT (X), ETHUSDT (Y) and SOLUSDT, time-ordered per symbol."""
    rng = np.random.default_rng(seed)
    n = seconds * trades_per_s
    t_us = start_s * 1_000_000 + (np.arange(n) * (1_000_000 // trades_per_s))
    log_x = np.log(60_000.0) + np.cumsum(rng.normal(0, 4e-4, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = OU_PHI * ou[i - 1] + rng.normal(0, 1.5e-4)
    shock = np.where(t_us >= (start_s + seconds - shock_s) * 1_000_000, 0.01, 0.0)
    log_y = TRUE_INTERCEPT + TRUE_SLOPE * log_x + ou + shock
    log_z = np.log(150.0) + np.cumsum(rng.normal(0, 3e-4, n))
    rows = []
    for symbol, logs in (("BTCUSDT", log_x), ("ETHUSDT", log_y), ("SOLUSDT", log_z)):
        prices = np.round(np.exp(logs), 4)
        qty = np.round(rng.uniform(0.001, 0.5, n), 6)
        maker = rng.integers(0, 2, n)
        for i in range(n):
            rows.append(
                (
                    venue,
                    symbol,
                    first_id + i,
                    int(t_us[i]),
                    float(prices[i]),
                    float(qty[i]),
                    int(maker[i]),
                )
            )
    return rows


def sim_params(trades_per_s: int = 2) -> dict:
    """The fixture's true model in the simulator's ``params_json`` layout (ingest/sim.py):
    ETHUSDT is the leg driven by the hedge leg BTCUSDT; SOLUSDT is not part of it."""
    return {
        "simulated": True,
        "venue": "sim",
        "price_space": "log",
        "hedge_leg": "BTCUSDT",
        "legs": {"ETHUSDT": {"hedge_ratio": TRUE_SLOPE, "intercept": TRUE_INTERCEPT}},
        "half_life_s": true_half_life_s(trades_per_s),
        "seed": 7,
    }


def true_half_life_s(trades_per_s: int = 2) -> float:
    """The OU noise has AR(1) coefficient 0.98 per trade: half-life ln 0.5 / ln 0.98 trades."""
    return math.log(0.5) / math.log(OU_PHI) / trades_per_s


def build_pair_db(path: Path, venue: str = "sim", seconds: int = 1200, **kw) -> Path:
    """Write the fixture pair through the real TradeWriter, plus a feed status and a run."""
    w = TradeWriter(path)
    w.start()
    try:
        rows = pair_trades(venue=venue, seconds=seconds, **kw)
        for i in range(0, len(rows), 20_000):
            w.put_trades(rows[i : i + 20_000])
        now_ms = int(time.time() * 1000)
        params = sim_params(kw.get("trades_per_s", 2))

        def meta(conn):
            conn.execute(
                "INSERT INTO ingest_runs (venue, source, symbols, params_json, pid, started_ms)"
                " VALUES (?, 'sim', 'BTCUSDT,ETHUSDT,SOLUSDT', ?, 1, ?)",
                (venue, json.dumps(params), now_ms),
            )
            for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
                conn.execute(
                    "INSERT OR REPLACE INTO feed_status (venue, symbol, source, source_since_ms,"
                    " connected, last_trade_time_us, trades_per_s, updated_ms)"
                    " VALUES (?, ?, 'sim', ?, 1, ?, 2.0, ?)",
                    (venue, symbol, now_ms, (START_S + seconds) * 1_000_000, now_ms),
                )

        w.submit(meta)
        w.flush()
    finally:
        w.close()
    return path


def build_empty_db(path: Path) -> Path:
    """A database with the schema and nothing else (the daemon has not recorded yet)."""
    w = TradeWriter(path)
    w.start()
    w.close()
    return path


def add_trades(path: Path, rows: list[tuple]) -> None:
    """Append trades to an existing fixture database through the writer."""
    w = TradeWriter(path)
    w.start()
    try:
        w.put_trades(rows)
        w.flush()
    finally:
        w.close()


def rename_series(
    path: Path, symbols: dict[str, str], venue: tuple[str, str] | None = None
) -> None:
    """Rename symbols (and a venue) in every table of a fixture database, as if the tape
    had carried those names: the page must show whatever the database holds."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            for table in ("trades", "bars_1s", "feed_status"):
                for old, new in symbols.items():
                    conn.execute(f"UPDATE {table} SET symbol = ? WHERE symbol = ?", (new, old))
                if venue:
                    conn.execute(
                        f"UPDATE {table} SET venue = ? WHERE venue = ?", (venue[1], venue[0])
                    )
            if venue:
                conn.execute("UPDATE ingest_runs SET venue = ? WHERE venue = ?", venue[::-1])
            runs = conn.execute("SELECT run_id, params_json FROM ingest_runs").fetchall()
            for run_id, params_json in runs:
                params = json.loads(params_json)
                params["hedge_leg"] = symbols.get(params["hedge_leg"], params["hedge_leg"])
                params["legs"] = {symbols.get(k, k): v for k, v in params["legs"].items()}
                conn.execute(
                    "UPDATE ingest_runs SET params_json = ? WHERE run_id = ?",
                    (json.dumps(params), run_id),
                )
    finally:
        conn.close()


SPOT, PERP = "binance-spot", "binance-usdm"
BASIS_HOURS = 26
BASIS_STEP_S = 15  # one trade per leg every 15 s
BASIS_MEAN_BPS = 3.0
HOUR_MS = 3_600_000
# Settled BTCUSDT funding: (time from START_S in ms, rate). The first precedes the data;
# one is stamped 3 ms after the hour, as Binance stamps some; the last, 32 h, is still due.
FUNDING = [
    (-8 * HOUR_MS, 0.00010),
    (0, 0.00012),
    (8 * HOUR_MS + 3, 0.00020),
    (16 * HOUR_MS, -0.00005),
    (24 * HOUR_MS, 0.00009),
]
LIVE_FUNDING = (32 * HOUR_MS, 0.00014)  # (next funding time, rate due then) in funding_live


def basis_trades(seed: int = 11) -> list[tuple]:
    """Trade rows of the four legs (see the module's docstring), time-ordered per leg."""
    rng = np.random.default_rng(seed)
    n = BASIS_HOURS * 3600 // BASIS_STEP_S
    t_us = (START_S + np.arange(n) * BASIS_STEP_S) * 1_000_000
    log_btc = np.log(60_000.0) + np.cumsum(rng.normal(0, 3e-4, n))
    basis = np.zeros(n)
    for i in range(1, n):  # an AR(1) around the mean basis, in bps
        basis[i] = 0.9 * basis[i - 1] + rng.normal(0, 1.0)
    perp = np.exp(log_btc) * (1 + (BASIS_MEAN_BPS + basis) / 1e4)
    legs = {
        (SPOT, "BTCUSDT"): (np.exp(log_btc), 0),
        (SPOT, "ETHUSDT"): (np.exp(np.log(3_000.0) + np.cumsum(rng.normal(0, 4e-4, n))), 0),
        (PERP, "BTCUSDT"): (perp, 2_000_000),  # the perpetual trades 2 s after spot
        ("sim", "ETHUSDT"): (np.exp(np.log(3_000.0) + np.cumsum(rng.normal(0, 4e-4, n))), 0),
    }
    rows = []
    for (venue, symbol), (prices, lag_us) in legs.items():
        qty = np.round(rng.uniform(0.001, 0.5, n), 6)
        for i in range(n):
            price = float(round(prices[i], 2))
            rows.append((venue, symbol, i + 1, int(t_us[i]) + lag_us, price, float(qty[i]), i % 2))
    return rows


def build_basis_db(path: Path) -> Path:
    """Both markets, funding and a simulated leg, through the real TradeWriter."""
    w = TradeWriter(path)
    w.start()
    try:
        rows = basis_trades()
        for i in range(0, len(rows), 20_000):
            w.put_trades(rows[i : i + 20_000])
        now_ms = int(time.time() * 1000)
        start_ms = START_S * 1000
        end_us = (START_S + BASIS_HOURS * 3600) * 1_000_000

        def funding_and_status(conn):
            conn.executemany(
                "INSERT INTO funding_rates (venue, symbol, funding_time_ms, rate, mark_price)"
                " VALUES (?, 'BTCUSDT', ?, ?, NULL)",
                [(PERP, start_ms + offset, rate) for offset, rate in FUNDING],
            )
            next_ms, rate = LIVE_FUNDING
            conn.execute(
                "INSERT INTO funding_live (venue, symbol, event_time_ms, mark_price,"
                " index_price, rate, next_funding_ms) VALUES (?, 'BTCUSDT', ?, 60000.0,"
                " 59990.0, ?, ?)",
                (PERP, start_ms + BASIS_HOURS * HOUR_MS, rate, start_ms + next_ms),
            )
            conn.execute(
                "INSERT INTO ingest_runs (venue, source, symbols, params_json, pid, started_ms)"
                " VALUES (?, 'live', 'BTCUSDT,ETHUSDT,BTCUSDT', '{}', 1, ?)",
                (f"{SPOT},{PERP}", now_ms),
            )
            for venue, symbol, nonmarket, problem in (
                (SPOT, "BTCUSDT", 0, None),
                (SPOT, "ETHUSDT", 0, None),
                (PERP, "BTCUSDT", 4, "wrong route: the socket delivers nothing"),
            ):
                conn.execute(
                    "INSERT INTO feed_status (venue, symbol, source, source_since_ms,"
                    " connected, last_trade_time_us, trades_per_s, nonmarket, problem,"
                    " updated_ms) VALUES (?, ?, 'live', ?, 1, ?, 0.1, ?, ?, ?)",
                    (venue, symbol, now_ms, end_us, nonmarket, problem, now_ms),
                )

        w.submit(funding_and_status)
        w.flush()
    finally:
        w.close()
    return path


# -- the daemon's pair scans (issue 14) ---------------------------------------------------
BASIS_END_S = START_S + BASIS_HOURS * 3600  # the basis fixture's trades end just before
BASIS_LEGS = [(SPOT, "BTCUSDT"), (SPOT, "ETHUSDT"), (PERP, "BTCUSDT"), ("sim", "ETHUSDT")]


def store_scan(
    db: Path,
    *,
    every_s: float = 300,
    finished_ms: int | None = None,
    legs: Sequence[tuple[str, str]] = BASIS_LEGS,
) -> int:
    """A pair scan of ``legs`` over the basis fixture's last 24 h (``build_basis_db``), run
    by the daemon's scanner code in this process and stored with the daemon's columns; its
    scan id.

    :param finished_ms: stamp the run as finished then (a stale scan); now by default.
    """
    scanner = Scanner()
    reply = scanner.scan(
        {
            "db": str(db),
            "now_ms": BASIS_END_S * 1000,
            "window_s": 86_400,
            "keep": 100,
            "every_s": every_s,
            "log_prices": True,
            "legs": [list(leg) for leg in legs],
        }
    )
    scanner.reset()  # closes its connection
    run = reply["run"]
    if finished_ms is not None:
        run["finished_ms"] = finished_ms
    return insert_scan(db, run, reply["rows"])


def insert_scan(db: Path, run: dict, rows: list[tuple]) -> int:
    """One ``scan_runs`` row and its ``scan_results`` rows, with plain SQL."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            scan_id = conn.execute(
                f"INSERT INTO scan_runs ({', '.join(RUN_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                [run[c] for c in RUN_COLUMNS],
            ).lastrowid
            conn.executemany(
                f"INSERT INTO scan_results (scan_id, {', '.join(RESULT_COLUMNS)})"
                f" VALUES (?, {', '.join('?' * len(RESULT_COLUMNS))})",
                [(scan_id, *row) for row in rows],
            )
    finally:
        conn.close()
    assert scan_id is not None
    return scan_id


def add_firing(
    path: Path,
    rule_id: int,
    message: str,
    value: float,
    *,
    fired_ms: int | None = None,
    deliveries: tuple[tuple, ...] = (),
) -> int:
    """A firing as the daemon's evaluator stores one (``alert_events`` with the rule's
    threshold, one ``alert_deliveries`` row per channel), with plain SQL; its id.

    :param deliveries: ``(channel, target, status, attempts, next_attempt_ms, last_error,
        sent_ms)`` per channel.
    """
    fired = int(time.time() * 1000) if fired_ms is None else fired_ms
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        (threshold,) = conn.execute(
            "SELECT threshold FROM alert_rules WHERE rule_id = ?", (rule_id,)
        ).fetchone()
        event_id = conn.execute(
            "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message, threshold)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (rule_id, fired, fired // 1000, value, message, threshold),
        ).lastrowid
        conn.executemany(
            "INSERT INTO alert_deliveries (event_id, channel, target, status, attempts,"
            " next_attempt_ms, last_error, sent_ms, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(event_id, *delivery, fired) for delivery in deliveries],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return int(event_id or 0)


# -- history from klines (issue 12) -----------------------------------------------------
# A database as `ingest.py --history` leaves it minutes after a first start: hours of
# klines before the tape of trades begins (spot: 1-second klines in bars_1s, USD-M:
# 1-minute klines in kline_bars), a few trades, an outage of USD-M covered by 1-minute
# klines, and a replayed 1-hour klines file (kline_bars only).
TAPE_S = START_S + 86_400  # 2024-05-02T00:00:00Z: the first stored trade of every live leg
SPOT_HISTORY_S = 2 * 3600  # 1-second klines of each spot leg before the tape
USDM_HISTORY_S = 86_400  # 1-minute klines of the perpetual before the tape
TAPE_END_S = 620  # every live leg trades twice a second from TAPE_S to TAPE_S + 620 ...
OUTAGE = (20, 600)  # ... but the perpetual's trades of these seconds are missing:
GAP_IDS = (41, 1200)  # these ids, an open gap whose minutes 1-minute klines cover
HISTORY_ETH_INTERCEPT = -8.5  # log ETH = this + 1.5 log BTC: ETH near 3,000 at BTC 60,000
REPLAY_VENUE = "replay-usdm"  # two replayed hourly files, before the rest
REPLAY_FILES = {"BTCUSDT": "BTCUSDT-1h-2024-04.zip", "ETHUSDT": "ETHUSDT-1h-2024-04.zip"}
REPLAY_HOURS = 96


def _history_paths(seed: int = 3) -> dict[tuple[str, str], np.ndarray]:
    """Per-second closes from TAPE_S - USDM_HISTORY_S to the last run's end: BTCUSDT a
    random walk, ETHUSDT cointegrated with it, the perpetual BTCUSDT a few bps above spot."""
    rng = np.random.default_rng(seed)
    n = USDM_HISTORY_S + TAPE_END_S
    log_btc = np.log(60_000.0) + np.cumsum(rng.normal(0, 1e-4, n))
    ou = np.zeros(n)
    shocks = rng.normal(0, 1e-4, n)
    for i in range(1, n):
        ou[i] = 0.995 * ou[i - 1] + shocks[i]
    basis = 3e-4 + np.cumsum(rng.normal(0, 1e-6, n))
    return {
        (SPOT, "BTCUSDT"): np.exp(log_btc),
        (SPOT, "ETHUSDT"): np.exp(HISTORY_ETH_INTERCEPT + TRUE_SLOPE * log_btc + ou),
        (PERP, "BTCUSDT"): np.exp(log_btc) * (1 + basis),
    }


def history_klines(seed: int = 3) -> dict[tuple[str, str, int], list[KlineBar]]:
    """The klines of the fixture, ``(venue, symbol, length) -> [KlineBar fields]``: each
    spot leg's 1-second klines, the perpetual's 1-minute ones (before the tape and over
    its outage), the replayed hourly ETHUSDT."""
    first_s = TAPE_S - USDM_HISTORY_S
    paths = _history_paths(seed)
    rng = np.random.default_rng(seed + 1)
    out: dict[tuple[str, str, int], list[KlineBar]] = {}
    for (venue, symbol), closes in paths.items():
        opens = np.r_[closes[0], closes[:-1]]
        volume = np.round(rng.uniform(0.01, 2.0, len(closes)), 6)
        count = rng.integers(1, 6, len(closes))
        if venue == SPOT:
            keep = range(USDM_HISTORY_S - SPOT_HISTORY_S, USDM_HISTORY_S)
            out[(venue, symbol, 1)] = [
                KlineBar(first_s + i, float(opens[i]), float(max(opens[i], closes[i]) * 1.00001),
                 float(min(opens[i], closes[i]) * 0.99999), float(closes[i]),
                 float(volume[i]), float(volume[i] * closes[i]), float(volume[i] / 2),
                 int(count[i]))
                for i in keep
            ]  # fmt: skip
            continue
        # the minutes strictly inside the outage
        gap_minutes = list(range(TAPE_S + 60, TAPE_S + OUTAGE[1], 60))
        minutes = [*range(first_s, TAPE_S, 60), *gap_minutes]
        rows: list[KlineBar] = []
        for t in minutes:
            i = t - first_s
            part = slice(i, i + 60)
            rows.append(
                KlineBar(t, float(opens[i]), float(closes[part].max()), float(closes[part].min()),
                 float(closes[i + 59]), float(volume[part].sum()),
                 float((volume[part] * closes[part]).sum()), float(volume[part].sum() / 2),
                 int(count[part].sum()))
            )  # fmt: skip
        out[(venue, symbol, 60)] = rows
    replay_start = START_S - REPLAY_HOURS * 3600
    log_btc = np.log(60_000.0) + np.cumsum(rng.normal(0, 3e-3, REPLAY_HOURS))
    log_eth = HISTORY_ETH_INTERCEPT + TRUE_SLOPE * log_btc + rng.normal(0, 1e-3, REPLAY_HOURS)
    for symbol, logs in (("BTCUSDT", log_btc), ("ETHUSDT", log_eth)):
        out[(REPLAY_VENUE, symbol, 3600)] = [
            KlineBar(replay_start + h * 3600, p, p * 1.002, p * 0.998, p, 10.0, 10 * p, 5.0, 100)
            for h, p in enumerate(np.exp(logs).tolist())
        ]
    return out


def history_trades(seed: int = 3) -> list[tuple]:
    """The trades of the fixture: every live leg twice a second from TAPE_S for TAPE_END_S
    seconds, ids from 1, but none of the perpetual's in OUTAGE (its ids GAP_IDS)."""
    paths = _history_paths(seed)
    rows = []
    for (venue, symbol), closes in paths.items():
        for k in range(2 * TAPE_END_S):
            if venue == PERP and OUTAGE[0] <= k // 2 < OUTAGE[1]:
                continue
            t_us = TAPE_S * 1_000_000 + k * 500_000
            price = float(round(closes[USDM_HISTORY_S + k // 2], 2))
            rows.append((venue, symbol, k + 1, t_us, price, 0.01 + (k % 7) / 100, k % 2))
    return rows


def build_history_db(path: Path, seed: int = 3) -> Path:
    """The history fixture (see the section's comment) through the real TradeWriter and the
    daemon's own kline store (``store/klines.py``)."""
    w = TradeWriter(path)
    w.start()
    try:

        def store_klines(conn):
            for (venue, symbol, length), bars in history_klines(seed).items():
                kline_store.store_bars(conn, venue, symbol, length, bars)
                origin = REPLAY_FILES[symbol] if venue == REPLAY_VENUE else "rest"
                if venue == PERP:  # before the tape, and over the outage: two spans
                    kline_store.add_span(conn, venue, symbol, 60, bars[0][0], TAPE_S, origin)
                    kline_store.add_span(
                        conn, venue, symbol, 60, TAPE_S + 60, TAPE_S + OUTAGE[1], origin
                    )
                else:
                    end = bars[-1][0] + length
                    kline_store.add_span(conn, venue, symbol, length, bars[0][0], end, origin)

        w.submit(store_klines).result()
        w.put_trades(history_trades(seed))
        now_ms = int(time.time() * 1000)
        end_us = (TAPE_S + TAPE_END_S) * 1_000_000

        def status(conn):
            conn.execute(
                "INSERT INTO ingest_runs (venue, source, symbols, params_json, pid, started_ms)"
                " VALUES (?, 'live', 'BTCUSDT,ETHUSDT,BTCUSDT', '{\"history\": \"24h\"}', 1, ?)",
                (f"{SPOT},{PERP}", now_ms),
            )
            for venue, symbol, gaps_open in (
                (SPOT, "BTCUSDT", 0),
                (SPOT, "ETHUSDT", 0),
                (PERP, "BTCUSDT", 1),
            ):
                conn.execute(
                    "INSERT INTO feed_status (venue, symbol, source, source_since_ms,"
                    " connected, last_trade_time_us, trades_per_s, gaps_open, updated_ms)"
                    " VALUES (?, ?, 'live', ?, 1, ?, 2.0, ?, ?)",
                    (venue, symbol, now_ms, end_us, gaps_open, now_ms),
                )
            conn.execute(
                "INSERT INTO gaps (venue, symbol, first_missing_id, last_missing_id, reason,"
                " status, detected_ms, note, covered_by) VALUES (?, 'BTCUSDT', ?, ?,"
                " 'catch-up', 'open', ?, 'beyond --max-catchup=50', '1m klines')",
                (PERP, *GAP_IDS, now_ms),
            )

        w.submit(status)
        w.flush()
    finally:
        w.close()
    return path


# -- Binance's kline files, for the upload (issue 12) ----------------------------------
KLINES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "binance-klines"
KLINES_ZIP = "XLMBTC-1m-2018-01.zip"  # real XLMBTC 1-minute klines (see the folder's README)


def kline_fixture() -> tuple[bytes, bytes]:
    """The real klines zip and its ``.CHECKSUM``, as data.binance.vision publishes them."""
    return (KLINES_DIR / KLINES_ZIP).read_bytes(), (
        KLINES_DIR / f"{KLINES_ZIP}.CHECKSUM"
    ).read_bytes()


def kline_rows() -> list[list[str]]:
    """The rows of the fixture's CSV, its 12 fields each, as written."""
    with zipfile.ZipFile(KLINES_DIR / KLINES_ZIP) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return [line.split(",") for line in text.splitlines() if line]


def partner_klines(factor: float = 25.0, seed: int = 2) -> bytes:
    """A second symbol's klines in the same layout (no header, ms), cointegrated with the
    fixture: each price ``factor`` times XLMBTC's times ``exp(AR(1) noise)``, the same
    volumes and trade counts; high and low widened to hold open and close."""
    rng = np.random.default_rng(seed)
    lines = []
    noise = 0.0
    for fields in kline_rows():
        noise = 0.9 * noise + rng.normal(0, 2e-3)
        o, h, lo, c = (float(fields[k]) * factor * math.exp(noise) for k in (1, 2, 3, 4))
        h, lo = max(h, o, c), min(lo, o, c)
        volume = float(fields[5])
        out = [fields[0], f"{o:.10f}", f"{h:.10f}", f"{lo:.10f}", f"{c:.10f}", fields[5]]
        out += [fields[6], f"{volume * (h + lo) / 2:.8f}", fields[8], f"{volume / 2:.8f}"]
        out += [f"{volume / 2 * (h + lo) / 2:.8f}", "0"]
        lines.append(",".join(out))
    return ("\n".join(lines) + "\n").encode()
