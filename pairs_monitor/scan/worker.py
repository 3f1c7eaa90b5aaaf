"""The scanner's child process: reads 1-minute closes and runs ``scan_pairs`` on request.

Started by :class:`~pairs_monitor.scan.service.ScanService` as
``python -m pairs_monitor.scan.worker --nice 19``, with one BLAS thread (its environment).
It first lowers its own CPU priority (``os.nice``), so on a busy machine the daemon's
threads run first and the scan waits; then it answers requests, one at a time: each
request is a pickled dict on standard input (``None`` or end of input: exit), each reply
a pickled dict on standard output (``run`` and ``rows``, ready for ``scan_runs`` and
``scan_results``, or ``error``). Replies hold plain Python values only, so the daemon's
side needs neither numpy nor pandas. Standard error is the daemon's log.

What a scan reads, on a read-only connection it keeps (a SQLite file or a PostgreSQL
URL): every leg of the request, or, without one, every (venue, symbol) whose
``feed_status`` row the daemon has written in the last two minutes (the legs it records
now). Each leg's close of each minute of the window is the close of its last ``bars_1s``
second in that minute, or else the close of its 1-minute kline (``kline_bars``, USD-M
history); a minute without either carries the previous close forward for at most
``MAX_STALE_BARS`` minutes. Closes are kept in memory between scans and only the minutes
from the last one held are read again; every ``FULL_READ_MS`` all of them are (bars
recovered into the past, a history that landed after the first scan).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the child imports the store when its first request comes
    from pairs_monitor.store.connection import Connection

# What a scan runs with (stored in scan_runs.params_json).
BAR_S = 60
MAX_STALE_BARS = 5  # a minute without a trade carries the last close this many minutes
MIN_BARS = 120  # a leg needs this many closes in the window, a pair as many in common
LIVE_LEG_MS = 120_000  # a feed_status row this recent: the daemon records that leg now
FULL_READ_MS = 3_600_000  # every hour all minutes of the window are read again
SCHEMA_WITH_SCANS = 8
DEFAULT_NICE = 19


class MinuteCloses:
    """The 1-minute closes of each leg over the window, kept between scans."""

    def __init__(self) -> None:
        self.by_leg: dict[tuple[str, str], dict[int, float]] = {}
        self.read_all_ms = 0
        self.rows_read = 0

    def refresh(
        self,
        conn: Connection,
        legs: list[tuple[str, str]],
        start_m: int,
        end_m: int,
        now_ms: int,
    ) -> None:
        """Read what is new of each leg in minutes ``start_m .. end_m - 1``."""
        if now_ms - self.read_all_ms >= FULL_READ_MS:
            self.by_leg, self.read_all_ms = {}, now_ms
        self.by_leg = {leg: self.by_leg.get(leg, {}) for leg in legs}
        for (venue, symbol), held in self.by_leg.items():
            since = max(start_m, max(held, default=start_m))  # the last minute may have grown
            span = (venue, symbol, since * BAR_S, end_m * BAR_S)
            klines = conn.execute(
                "SELECT bar_time_s / 60, close FROM kline_bars WHERE venue = ? AND symbol = ?"
                " AND interval_s = 60 AND bar_time_s >= ? AND bar_time_s < ?",
                span,
            ).fetchall()
            seconds = conn.execute(_closes_sql(conn), span).fetchall()
            held.update(klines)
            held.update((minute, close) for minute, close, _ in seconds)
            for minute in [m for m in held if m < start_m]:
                del held[minute]
            self.rows_read += len(klines) + len(seconds)

    def matrix(self, start_m: int, end_m: int) -> Any:
        """Closes as minutes x legs (NaN where a leg has none), legs in request order."""
        import numpy as np

        values = np.full((end_m - start_m, len(self.by_leg)), np.nan)
        for column, held in enumerate(self.by_leg.values()):
            if held:
                minutes = np.fromiter(held.keys(), dtype=np.int64, count=len(held))
                values[minutes - start_m, column] = np.fromiter(
                    held.values(), dtype=np.float64, count=len(held)
                )
        return values


class Scanner:
    """What the child keeps between requests: its connection and the closes."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.closes = MinuteCloses()

    def reset(self) -> None:
        """After a failure: a new connection and a full read next time."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.closes = MinuteCloses()

    def connection(self, db: str) -> Connection:
        """The read-only connection to ``db`` (a SQLite path or a ``postgresql://`` URL)."""
        from pairs_monitor.store import connection
        from pairs_monitor.store.target import redact

        if self.conn is None:
            self.conn = connection.connect_read_only(db)
            version = connection.schema_version(self.conn)
            if version < SCHEMA_WITH_SCANS:
                self.reset()
                raise RuntimeError(
                    f"{redact(db)} is at schema version {version}, scans need "
                    f"{SCHEMA_WITH_SCANS}: run `python db_setup.py`"
                )
        return self.conn

    def scan(self, request: dict[str, Any]) -> dict[str, Any]:
        """One scan: the ``scan_runs`` row and the ``scan_results`` rows (without the id)."""
        import numpy as np
        import pandas as pd

        from pairs_monitor import quant
        from pairs_monitor.quant import scan as scan_module

        started_ms, cpu = int(time.time() * 1000), time.process_time()
        conn = self.connection(request["db"])
        now_ms = int(request["now_ms"])
        legs = [tuple(leg) for leg in request["legs"]] if request.get("legs") else None
        if legs is None:
            legs = conn.execute(
                "SELECT venue, symbol FROM feed_status WHERE updated_ms >= ?"
                " ORDER BY venue, symbol",
                (now_ms - LIVE_LEG_MS,),
            ).fetchall()
        end_m = now_ms // 1000 // BAR_S  # the minute under way is not a bar yet
        start_m = end_m - int(request["window_s"]) // BAR_S
        self.closes.refresh(conn, legs, start_m, end_m, now_ms)
        names = [f"{venue}:{symbol}" for venue, symbol in legs]
        frame = pd.DataFrame(
            self.closes.matrix(start_m, end_m),
            index=pd.to_datetime(np.arange(start_m, end_m) * BAR_S, unit="s", utc=True),
            columns=names,
        ).ffill(limit=MAX_STALE_BARS)
        enough = (frame.count() >= MIN_BARS).to_numpy()
        frame = frame.loc[:, enough]
        fees = {name: _fee(venue) for name, (venue, _) in zip(names, legs, strict=True)}
        log_prices = bool(request.get("log_prices", True))
        keep = int(request["keep"])
        params = {
            "fdr": scan_module.SCAN_FDR,
            "holdout": scan_module.SCAN_HOLDOUT,
            "oos_alpha": scan_module.SCAN_OOS_ALPHA,
            "lags": None,
            "fee_bps": {venue: _fee(venue) for venue, _ in legs},
            "entry_z": scan_module.SCAN_ENTRY_Z,
            "max_stale_bars": MAX_STALE_BARS,
            "min_bars": MIN_BARS,
            "keep": keep,
            "every_s": request.get("every_s"),
        }
        note = None
        rows: list[tuple[Any, ...]] = []
        table = pd.DataFrame(columns=["candidate", "tradable"])
        if frame.shape[1] < 2:
            note = (
                f"{frame.shape[1]} of {len(legs)} legs have {MIN_BARS} one-minute closes in "
                "the window: nothing to test yet"
            )
        else:
            table = quant.scan_pairs(
                frame,
                log_prices=log_prices,
                min_obs=MIN_BARS,
                fee_bps={name: fees[name] for name in frame.columns},
            )
            shown = table[(table.index < keep) | table["candidate"]]
            signals = quant.scan_signals(frame, shown, log_prices=log_prices)
            leg_of = dict(zip(names, legs, strict=True))
            rows = [
                _row(rank + 1, record, signal, leg_of)
                for rank, record, signal in zip(
                    shown.index,
                    shown.to_dict("records"),
                    signals.to_dict("records"),
                    strict=True,
                )
            ]
        run = {
            "started_ms": started_ms,
            "finished_ms": int(time.time() * 1000),
            "bar_s": BAR_S,
            "window_start_s": start_m * BAR_S,
            "window_end_s": end_m * BAR_S,
            "log_prices": int(log_prices),
            "legs": int(frame.shape[1]),
            "legs_skipped": len(legs) - int(frame.shape[1]),
            "pairs_tested": len(table),
            "candidates": int(table["candidate"].sum()),
            "tradable": int(table["tradable"].sum()),
            "rows_stored": len(rows),
            "cpu_s": time.process_time() - cpu,
            "params_json": json.dumps(params, sort_keys=True),
            "note": note,
        }
        return {"run": run, "rows": rows, "rows_read": self.closes.rows_read}


# The close of each minute's last second. SQLite: the bare column close comes from the row
# with the greatest bar_time_s of the minute (its rule for a bare column beside max()).
# PostgreSQL has no bare columns: the first row of each minute, newest second first.
_CLOSES_SQL = (
    "SELECT bar_time_s / 60, close, max(bar_time_s) FROM bars_1s"
    " WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?"
    " GROUP BY bar_time_s / 60"
)
_CLOSES_SQL_POSTGRES = (
    "SELECT DISTINCT ON (bar_time_s / 60) bar_time_s / 60, close, bar_time_s FROM bars_1s"
    " WHERE venue = ? AND symbol = ? AND bar_time_s >= ? AND bar_time_s < ?"
    " ORDER BY bar_time_s / 60, bar_time_s DESC"
)


def _closes_sql(conn: Connection) -> str:
    from pairs_monitor.store.connection import is_postgres

    return _CLOSES_SQL_POSTGRES if is_postgres(conn) else _CLOSES_SQL


def _fee(venue: str) -> float:
    """The venue's standard taker fee; the spot default for venues without one (sim)."""
    from pairs_monitor import quant

    try:
        return quant.taker_fee_bps(venue)
    except ValueError:
        return quant.SCAN_FEE_BPS


def _number(value: Any) -> float | None:
    """A float for SQLite; NaN (no value) as NULL."""
    number = float(value)
    return None if math.isnan(number) else number


def _second(stamp: Any) -> int | None:
    """A bar's open time in seconds; a missing one (None, NaT) as NULL."""
    import pandas as pd

    return None if pd.isna(stamp) else int(stamp.timestamp())


def _row(
    rank: int,
    record: dict[Any, Any],
    signal: dict[Any, Any],
    leg_of: dict[str, tuple[str, str]],
) -> tuple[Any, ...]:
    """One ``scan_results`` row without its ``scan_id``, in ``service.RESULT_COLUMNS``
    order."""
    (venue_y, symbol_y), (venue_x, symbol_x) = leg_of[record["y"]], leg_of[record["x"]]
    return (
        rank,
        venue_y,
        symbol_y,
        venue_x,
        symbol_x,
        float(record["hedge_ratio"]),
        float(record["intercept"]),
        float(record["eg_stat"]),
        float(record["eg_pvalue"]),
        float(record["eg_qvalue"]),
        _number(record["half_life"]),
        _number(record["corr"]),
        int(record["nobs"]),
        _number(record["oos_hedge_ratio"]),
        _number(record["oos_pvalue"]),
        int(bool(record["holds_out_of_sample"])),
        int(bool(record["candidate"])),
        float(record["spread_std"]),
        _number(record["spread_std_bps"]),
        _number(record["round_trip_bps"]),
        int(bool(record["tradable"])),
        _second(signal["last_bar"]),
        _number(signal["zscore"]),
        _second(signal["signal_bar"]),
        _number(signal["signal_z"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pairs_monitor.scan.worker")
    parser.add_argument("--nice", type=int, default=DEFAULT_NICE, help="os.nice increment")
    args = parser.parse_args(argv)
    os.nice(args.nice)
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    requests = sys.stdin.buffer
    scanner = Scanner()
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return 0
        if request is None:
            return 0
        try:
            reply = scanner.scan(request)
        except Exception as exc:
            scanner.reset()
            reply = {"error": f"{exc!r}\n{traceback.format_exc()}"}
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
