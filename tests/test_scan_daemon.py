"""``ingest.py --scan-every``: the daemon scans the legs it records and stops its scanner.

The real daemon on its simulated feed, over a database that already holds three hours of
those symbols' trades (one a minute each; the simulator then continues them): the
scanner's child process starts, its scans land in ``scan_runs``/``scan_results``, and
SIGTERM ends the daemon cleanly with the child gone.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pairs_monitor.store.writer import TradeWriter

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["AUSDT", "BUSDT", "CUSDT"]

pytestmark = pytest.mark.daemon


def prefill(db: Path, minutes: int = 180) -> None:
    """One trade a minute of each symbol for the last ``minutes`` minutes, venue sim,
    ending near 100 where the simulator starts them: BUSDT cointegrated with AUSDT (an
    AR(1) spread), CUSDT a random walk."""
    rng = np.random.default_rng(5)
    end_m = time.time_ns() // 60_000_000_000 - 1
    walk = np.cumsum(rng.normal(0, 2e-3, minutes))
    spread = np.zeros(minutes)
    for t in range(1, minutes):
        spread[t] = 0.5 * spread[t - 1] + rng.normal(0, 1e-3)
    logs = {
        "AUSDT": walk - walk[-1],
        "BUSDT": 0.8 * (walk - walk[-1]) + spread,
        "CUSDT": np.cumsum(rng.normal(0, 2e-3, minutes))[::-1],
    }
    writer = TradeWriter(db)
    writer.start()
    for symbol, path in logs.items():
        writer.put_trades(
            [
                ("sim", symbol, i + 1, ((end_m - minutes + i) * 60 + 30) * 1_000_000, p, 1.0, 0)
                for i, p in enumerate((100 * np.exp(path)).round(6).tolist())
            ]
        )
    assert writer.close(30)


def test_the_daemon_scans_what_it_records_and_stops_its_scanner(tmp_path: Path):
    db = tmp_path / "ticks.db"
    prefill(db)
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log:
        argv = [sys.executable, str(ROOT / "ingest.py"), "--source", "sim", "--db", str(db)]
        argv += ["--symbols", *SYMBOLS, "--scan-every", "0.05", "--scan-window", "3h"]
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            runs: list[tuple] = []
            while time.monotonic() < deadline and len(runs) < 2:
                time.sleep(0.5)
                with sqlite3.connect(db) as conn:
                    runs = conn.execute(
                        "SELECT scan_id, legs, pairs_tested, rows_stored FROM scan_runs"
                    ).fetchall()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert len(runs) >= 2, text
    assert runs[-1][1:] == (3, 3, 3)  # three legs, three pairs, each stored
    child = int(re.search(r"scanner process started \(pid (\d+)", text)[1])  # type: ignore[index]
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the daemon ended its scanner
    with sqlite3.connect(db) as conn:
        top = conn.execute(
            "SELECT symbol_y, symbol_x FROM scan_results WHERE scan_id = ? AND rank = 1",
            (runs[-1][0],),
        ).fetchone()
    assert top == ("AUSDT", "BUSDT")
