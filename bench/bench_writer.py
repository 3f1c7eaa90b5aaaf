"""Writer alone: trades/s from the queue into SQLite and PostgreSQL (trades + bars_1s),
against the raw limit of each.

    .venv/bin/python -m bench.bench_writer [--trades 1000000] [--runs 5] [--no-postgres]

(from the repository root).

Each run starts a fresh database in a temporary folder, queues pre-built trades of two
symbols (as 1,000-row chunks like replay and backfill, or one trade per item like the live
feed) and times from the first put until ``flush()`` returns, i.e. until everything is
committed. The raw figure is a bare ``executemany`` of the same rows into the same
``trades`` table in 50,000-row transactions, with nothing else: the ceiling on this machine.
The "beside a busy thread" case runs a Python thread that only counts, as the live feed's
receive thread keeps the interpreter busy: what the writer loses there is time spent
waiting for the GIL, and the counter's rate says how much of the interpreter it left.

PostgreSQL (issue 17): the same cases into a throwaway PostgreSQL cluster the benchmark
starts on this machine (tests/helpers/postgres.py: initdb in a temporary folder, a free
port, the server's defaults but ``shared_buffers`` of 1 GB, as a server is given a share
of its memory; fsync on), a fresh database per run, over TCP to 127.0.0.1. Its raw
ceiling is a bare ``COPY`` of the rows into ``trades`` (its day partition made first), in
50,000-row transactions. ``--no-postgres`` leaves it out (no server binaries needed).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.stamp import stamped
from pairs_monitor.store import postgres, schema
from pairs_monitor.store.writer import TradeWriter
from tests.helpers.postgres import PostgresCluster

# A server is given a share of its memory; the default 128 MB would evict the indexes of
# a million trades while they are written.
BENCH_SERVER_SETTINGS = {"shared_buffers": "1GB"}


def make_trades(n: int) -> list[tuple]:
    rng = random.Random(42)
    start_us = 1_700_000_000_000_000
    return [
        (
            "binance-spot",
            "BTCUSDT" if i % 2 else "ETHUSDT",
            i // 2,
            start_us + i * 400,
            30_000 + rng.random(),
            rng.random(),
            i % 3 == 0,
        )
        for i in range(n)
    ]


class BusyThread(threading.Thread):
    """Counts as fast as the interpreter lets it, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self._stop_requested = threading.Event()

    def run(self) -> None:
        count, stop = 0, self._stop_requested
        while not stop.is_set():
            count += 1
        self.count = count

    def stop(self) -> int:
        self._stop_requested.set()
        self.join()
        return self.count


def count_rate(seconds: float = 1.0) -> float:
    """The busy thread's counting rate with nothing else running."""
    busy = BusyThread()
    busy.start()
    time.sleep(seconds)
    return busy.stop() / seconds


def time_writer(
    rows: list[tuple], chunk: int, db: Path | str, busy: BusyThread | None = None
) -> tuple[float, float]:
    """Trades/s through the writer, and the busy thread's count per second meanwhile.

    :param db: a folder for a new SQLite file, or a new PostgreSQL database's URL.
    """
    target = db if isinstance(db, str) else db / f"w{chunk}-{time.monotonic_ns()}.db"
    writer = TradeWriter(target)
    writer.start()
    if busy is not None:
        busy.start()
    started = time.perf_counter()
    for i in range(0, len(rows), chunk):
        writer.put_trades(rows[i : i + chunk])
    writer.flush()
    elapsed = time.perf_counter() - started
    counted = busy.stop() if busy is not None else 0
    assert writer.stats.trades_stored == len(rows), writer.stats
    writer.close()
    return len(rows) / elapsed, counted / elapsed


def time_raw(rows: list[tuple], folder: Path) -> float:
    path = folder / f"raw-{time.monotonic_ns()}.db"
    schema.setup(path)
    conn = schema.connect_for_writing(path)
    started = time.perf_counter()
    for i in range(0, len(rows), 50_000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i : i + 50_000])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def time_raw_postgres(rows: list[tuple], url: str) -> float:
    """Trades/s of a bare COPY into ``trades``: PostgreSQL's ceiling here."""
    postgres.setup(url)
    with postgres.connect(url) as conn:
        days = {row[3] // postgres.US_PER_DAY for row in rows}
        with conn.transaction():
            postgres.ensure_trade_partitions(conn, days)
        columns = ", ".join(schema.TRADES_COLUMNS)
        as_stored = [(*row[:6], int(row[6])) for row in rows]  # the flag as the column's 0/1
        started = time.perf_counter()
        for i in range(0, len(rows), 50_000):
            with (
                conn.transaction(),
                conn.cursor() as cursor,
                cursor.copy(f"COPY trades ({columns}) FROM STDIN") as copy,
            ):
                for row in as_stored[i : i + 50_000]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--no-postgres", action="store_true", help="time SQLite only (no server started)"
    )
    args = parser.parse_args()
    with stamped("bench_writer"):
        if args.no_postgres:
            measure(args.trades, args.runs, None)
            return
        cluster = PostgresCluster(BENCH_SERVER_SETTINGS).start()
        try:
            measure(args.trades, args.runs, cluster)
        finally:
            cluster.stop()


def measure(trades: int, runs: int, cluster: PostgresCluster | None) -> None:
    """Time every case ``runs`` times, interleaved, and print median, min and max."""
    rows = make_trades(trades)
    live_rows = rows[: trades // 5]
    busy_rows = rows[: trades // 2]
    results: dict[str, list[float]] = {
        "raw executemany": [],
        "writer, 1000-row chunks": [],
        "writer, 1 trade per item": [],
        "writer beside a busy thread": [],
    }
    if cluster is not None:
        results.update(
            {
                "postgres: raw COPY": [],
                "postgres: writer, 1000-row": [],
                "postgres: writer, 1 per item": [],
            }
        )
    busy_share: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(runs):  # interleaved, so machine load hits every case alike
            results["raw executemany"].append(time_raw(rows, folder))
            results["writer, 1000-row chunks"].append(time_writer(rows, 1000, folder)[0])
            results["writer, 1 trade per item"].append(time_writer(live_rows, 1, folder)[0])
            alone = count_rate()
            rate, counted = time_writer(busy_rows, 1000, folder, BusyThread())
            results["writer beside a busy thread"].append(rate)
            busy_share.append(counted / alone)
            if cluster is not None:
                results["postgres: raw COPY"].append(
                    time_raw_postgres(rows, cluster.create_database("raw"))
                )
                results["postgres: writer, 1000-row"].append(
                    time_writer(rows, 1000, cluster.create_database("w"))[0]
                )
                results["postgres: writer, 1 per item"].append(
                    time_writer(live_rows, 1, cluster.create_database("w"))[0]
                )
    print(
        f"{trades:,} trades, {runs} runs (1-per-item case: {len(live_rows):,}; "
        f"busy-thread case: {len(busy_rows):,})"
    )
    for name, rates in results.items():
        print(
            f"{name:28s} median {statistics.median(rates):>9,.0f}/s  "
            f"min {min(rates):>9,.0f}  max {max(rates):>9,.0f}"
        )
    print(
        f"the busy thread kept {statistics.median(busy_share):.0%} of its solo counting "
        "rate meanwhile (median)"
    )


if __name__ == "__main__":
    main()
