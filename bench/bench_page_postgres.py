# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""The page's live refresh on a PostgreSQL store of 50,000,000 trades (issue 17).

Usage, from the repository root::

    .venv/bin/python -m bench.bench_page_postgres [--trades 50000000] [--days 5] [--repeat 15]

Starts a throwaway PostgreSQL cluster (``tests/helpers/postgres.py``: Debian's server run
as the ``postgres`` user, fsync on, ``shared_buffers`` 1 GB), creates the schema with
``db_setup``'s code, and fills it server-side (``generate_series``; building 50 M rows
through the writer would take ten minutes and time nothing the page does): two symbols,
half the trades each, evenly spaced over ``--days`` days in the day partitions of
``trades``, a cointegrated pair (a log-linear spread that mean-reverts), and their
1-second bars aggregated from those trades as the writer folds them. Then it times what a
Live page runs every second over the read-only connection (``page.pipeline``): the newest
bars over the live tail (300 x 1 s bars), the last trade of each leg, the feed status and
the pair's z-score. Target < 100 ms. The cluster and its files are removed at the end.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time

import numpy as np

from bench.bench_page import timed
from bench.stamp import stamped
from pairs_monitor.page import pipeline, queries
from pairs_monitor.page.settings import Leg, View
from pairs_monitor.store import postgres
from tests.helpers.postgres import PostgresCluster

SYMBOLS = ("BTCUSDT", "ETHUSDT")
VENUE = "sim"
START_S = 1_714_521_600  # 2024-05-01 00:00 UTC, a day boundary

# One symbol's trades, computed by the server: ids 1..n evenly spaced over the span; the x
# leg's log price drifts as a slow sine with noise, the y leg is 1.5 x it plus a spread
# that mean-reverts (a faster sine) and noise: a cointegrated pair with a finite z-score.
FILL_TRADES = """
INSERT INTO trades (venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker)
SELECT %(venue)s, %(symbol)s, i,
       %(start_us)s + (i * %(step_us)s)::bigint,
       round(exp(CASE WHEN %(is_y)s
                      THEN -5.0 + 1.5 * (ln(60000) + 0.02 * sin(i / 200000.0))
                           + 0.002 * sin(i / 3000.0) + 0.0002 * random()
                      ELSE ln(60000) + 0.02 * sin(i / 200000.0) + 0.0002 * random()
                 END)::numeric, 2)::double precision,
       round((0.001 + random())::numeric, 5)::double precision,
       (random() < 0.5)::int
FROM generate_series(1::bigint, %(n)s::bigint) AS i
"""
# The bars the writer would have folded from those trades, one statement for the store.
FILL_BARS = """
INSERT INTO bars_1s (venue, symbol, bar_time_s, open, high, low, close, volume,
                     quote_volume, taker_buy_volume, trade_count, first_trade_id,
                     last_trade_id)
SELECT venue, symbol, trade_time_us / 1000000,
       (array_agg(price ORDER BY trade_id))[1], max(price), min(price),
       (array_agg(price ORDER BY trade_id DESC))[1], sum(qty), sum(price * qty),
       sum(CASE WHEN buyer_is_maker = 0 THEN qty ELSE 0 END), count(*), min(trade_id),
       max(trade_id)
FROM trades
GROUP BY venue, symbol, trade_time_us / 1000000
"""
FEED_STATUS = """
INSERT INTO feed_status (venue, symbol, source, source_since_ms, last_trade_time_us,
                         updated_ms)
SELECT venue, symbol, 'sim', %(since_ms)s, max(trade_time_us), %(now_ms)s
FROM trades GROUP BY venue, symbol
"""


def build(url: str, trades: int, days: int) -> None:
    """Fill the store at ``url`` with ``trades`` trades over ``days`` days, and their bars."""
    per_symbol = trades // len(SYMBOLS)
    span_us = days * 86_400 * 1_000_000
    started = time.perf_counter()
    with postgres.connect(url, application_name="bench_page_postgres build") as conn:
        postgres.ensure_trade_partitions(conn, range(START_S // 86_400, START_S // 86_400 + days))
        conn.commit()
        for symbol in SYMBOLS:
            conn.execute(
                FILL_TRADES,
                {
                    "venue": VENUE,
                    "symbol": symbol,
                    "start_us": START_S * 1_000_000,
                    "step_us": span_us / (per_symbol + 1),
                    "is_y": symbol == SYMBOLS[1],
                    "n": per_symbol,
                },
            )
            conn.commit()
            print(f"  {symbol}: {per_symbol:,} trades ({time.perf_counter() - started:.0f} s)")
        conn.execute("SET work_mem = '1GB'")
        conn.execute(FILL_BARS)
        end_ms = (START_S + days * 86_400) * 1000
        conn.execute(FEED_STATUS, {"since_ms": START_S * 1000, "now_ms": end_ms})
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    print(f"built in {time.perf_counter() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=50_000_000)
    ap.add_argument("--days", type=int, default=5, help="the span the trades cover")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    with stamped("bench_page_postgres"):
        cluster = PostgresCluster({"shared_buffers": "1GB", "max_wal_size": "8GB"})
        try:
            cluster.start()
            url = cluster.create_database("bench_page")
            postgres.setup(url)
            build(url, args.trades, args.days)
            measure(url, args.repeat)
        finally:
            cluster.stop()
    return 0


def measure(url: str, repeat: int) -> None:
    """Time the Live panel's refresh on the store at ``url`` and print it."""
    db = pipeline.ReadOnlyDB(url)
    stored = db.conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    bars = db.conn.execute("SELECT count(*) FROM bars_1s").fetchone()[0]
    source = pipeline.DbSource(db)
    view = View(venue=VENUE, y=SYMBOLS[1], x=SYMBOLS[0], timeframe="1s", window=60).live()

    def live() -> None:
        pair = pipeline.compute_pair(source, view)
        for symbol in SYMBOLS:
            source.last_price(Leg(VENUE, symbol))
        db.run(queries.feed_status, VENUE)
        assert not np.isnan(pair.latest("zscore"))

    times = timed(live, repeat)
    median = statistics.median(times)
    print(f"store: PostgreSQL, {stored:,} trades, {bars:,} one-second bars; {repeat} runs")
    print(
        f"live refresh (300 x 1s bars): median {median:.1f} ms, max {max(times):.1f} ms, "
        f"target < 100 ms: {'met' if median < 100 else 'NOT met'}"
    )
    db.close()


if __name__ == "__main__":
    sys.exit(main())
