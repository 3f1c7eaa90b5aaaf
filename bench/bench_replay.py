"""Replay import speed: a 1,000,000-row Binance trades dump through the real daemon.

    .venv/bin/python -m bench.bench_replay [--rows 1000000] [--runs 5] [--zip]
                                           [--dir /tmp/bench_replay]

(from the repository root).

Writes a spot trades dump in Binance's format (no header, millisecond times, a random-walk
price) under ``--dir`` once, then per run imports it into a fresh database with
``ingest.py --source replay --replay FILE --speed 0`` as a subprocess, and checks that every
row was stored. Two figures per run:

* import: rows / the feed's own time, from its start (checksum, parsing) until the writer
  has committed the last row (the daemon's ``replay done: ... rows/s`` line);
* process: rows / the wall time of the whole command (Python start, imports, schema
  creation and shutdown included).

Then the two halves alone, in this process, on the same file: the parser (blocks -> rows as
tuples, nothing stored) and the writer (pre-built tuples in 5,000-row chunks -> committed),
to say which one bounds the import.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from itertools import repeat
from pathlib import Path

import numpy as np

from bench.stamp import stamped
from pairs_monitor.ingest.replay.dumps import DumpReader
from pairs_monitor.ingest.replay.feed import CHUNK_ROWS
from pairs_monitor.store.writer import TradeWriter

ROOT = Path(__file__).resolve().parent.parent
NAME = "BTCUSDT-trades-2024-01-01"


def make_dump(folder: Path, rows: int, as_zip: bool) -> Path:
    """A realistic spot trades CSV (74 bytes a row for 1M rows), zipped with a CHECKSUM."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{NAME}-{rows}.csv"
    if not csv_path.exists():
        rng = np.random.default_rng(0)
        ids = np.arange(3_000_000_000, 3_000_000_000 + rows)
        times = 1_704_067_200_000 + np.cumsum(rng.poisson(40, rows))
        price = np.round(42_000 * np.exp(np.cumsum(rng.normal(0, 1e-5, rows))), 2)
        qty = np.round(rng.lognormal(-6, 1.5, rows), 5) + 0.00001
        maker = rng.random(rows) < 0.5
        with csv_path.open("w") as f:
            for i in range(0, rows, 100_000):
                part = slice(i, i + 100_000)
                f.writelines(
                    f"{a},{p:.8f},{q:.8f},{p * q:.8f},{t},{m},True\n"
                    for a, p, q, t, m in zip(
                        ids[part], price[part], qty[part], times[part], maker[part], strict=True
                    )
                )
    if not as_zip:
        return csv_path
    zip_path = folder / f"{NAME}-{rows}.zip"
    if not zip_path.exists():
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(csv_path, csv_path.name)
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(f"{digest}  {zip_path.name}\n")
    return zip_path


def run_daemon(dump: Path, rows: int, folder: Path) -> tuple[float, float]:
    """(import rows/s as the daemon measured it, whole-process rows/s)."""
    db = folder / f"replay-{time.monotonic_ns()}.db"
    cmd = [sys.executable, "ingest.py", "--source", "replay", "--replay", str(dump)]
    cmd += ["--speed", "0", "--db", str(db)]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the daemon exited with {done.returncode}:\n{done.stderr[-2000:]}")
    match = re.search(r"(\d+) rows read in ([\d.]+) s \((\d+) rows/s\)", done.stderr)
    if not match:
        raise SystemExit(f"no summary line in the daemon's log:\n{done.stderr[-2000:]}")
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    if count != rows:
        raise SystemExit(f"stored {count} rows, expected {rows}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return float(match[3]), rows / wall


def parse_only(dump: Path) -> tuple[float, list[tuple]]:
    """Parser rows/s (blocks -> tuples, as the feed builds them) and the rows."""
    started = time.perf_counter()
    rows: list[tuple] = []
    for cols, _ in DumpReader(dump):
        rows += zip(
            repeat("replay"),
            repeat("BTCUSDT"),
            cols.trade_id.tolist(),
            cols.time_us.tolist(),
            cols.price.tolist(),
            cols.qty.tolist(),
            cols.buyer_is_maker.tolist(),
            strict=False,
        )
    return len(rows) / (time.perf_counter() - started), rows


def writer_only(rows: list[tuple], folder: Path) -> float:
    """Writer rows/s for pre-built rows in the feed's chunk size, until committed."""
    writer = TradeWriter(folder / f"writer-{time.monotonic_ns()}.db")
    writer.start()
    started = time.perf_counter()
    for i in range(0, len(rows), CHUNK_ROWS):
        writer.put_trades(rows[i : i + CHUNK_ROWS])
    writer.flush()
    rate = len(rows) / (time.perf_counter() - started)
    writer.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--zip", action="store_true", help="a .zip with a .CHECKSUM")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_replay"))
    args = parser.parse_args()
    with stamped("bench_replay"):
        measure(args.dir, args.rows, args.runs, args.zip)
    return 0


def measure(folder: Path, rows: int, runs: int, as_zip: bool) -> None:
    """Write the dump unless it exists, import it ``runs`` times, and print the table."""
    dump = make_dump(folder, rows, as_zip)
    print(f"{dump} ({dump.stat().st_size / 1e6:.1f} MB), {rows:,} rows, {runs} runs")
    imports, processes, parses, writes = [], [], [], []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for run in range(runs):
            rate, wall_rate = run_daemon(dump, rows, Path(tmp))
            parse_rate, parsed = parse_only(dump)
            write_rate = writer_only(parsed, Path(tmp))
            del parsed
            imports.append(rate)
            processes.append(wall_rate)
            parses.append(parse_rate)
            writes.append(write_rate)
            print(
                f"run {run + 1}: import {rate:,.0f} rows/s, process {wall_rate:,.0f} rows/s; "
                f"parser alone {parse_rate:,.0f}, writer alone {write_rate:,.0f}",
                flush=True,
            )
    print("\n| figure | median | min | max |\n|---|---:|---:|---:|")
    for label, values in (
        ("**import** (daemon, start to last commit)", imports),
        ("whole process (start-up and shutdown included)", processes),
        ("parser alone (rows as tuples, nothing stored)", parses),
        ("writer alone (pre-built rows, 5,000-row chunks)", writes),
    ):
        print(
            f"| {label} | {statistics.median(values):,.0f}/s | {min(values):,.0f} | "
            f"{max(values):,.0f} |"
        )
    met = statistics.median(imports) >= 200_000
    print(f"\ntarget 200,000 rows/s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
