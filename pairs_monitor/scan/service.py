"""The daemon's pair scans: every ``--scan-every`` minutes, every pair of its legs tested.

:class:`ScanService` is what the daemon starts: one thread that, on schedule, asks a child
process (``worker.py``) for a scan of the legs the daemon records now, on 1-minute closes
over the trailing ``--scan-window``, and hands the result to the daemon's writer, which
stores the run in ``scan_runs`` and its best rows, ranked, in ``scan_results``
(docs/schema.md). The page opens on the newest of them.

Why a child process: a scan of 200 legs is about a second of one core's arithmetic every
few minutes (bench/bench_scan.py), and a thread doing that would hold the interpreter
lock between numpy calls while the feed and the writer wait for it. The child runs at the
lowest CPU priority (``os.nice`` 19) with one BLAS thread, so it never takes more than
one core and, on a busy machine, gets only what the daemon's threads leave; its memory
(pandas, statsmodels, the closes) is its own. The thread here only waits on a pipe and
writes a few hundred rows a scan: it costs the daemon nothing it would notice.

Failures: a scan that raises is logged (its traceback comes with the reply) and the next
one runs on schedule; a child that dies or hangs past ``timeout_s`` is killed and started
again at the next scan, at most every ``RESTART_S``. Nothing a scan does stops the daemon.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from pairs_monitor.clock import now_ms
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import StoreTarget, parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("scan")

DEFAULT_EVERY_MIN = 5.0
DEFAULT_WINDOW = "24h"
MIN_EVERY_MIN = 0.05  # 3 s: tests; an operator means minutes
MIN_WINDOW_S = 2 * 3_600  # 120 one-minute bars: the fewest a pair is tested on
MAX_WINDOW_S = 7 * 86_400  # 10,080 bars: a week; 500 legs of it fit in a few hundred MB
KEEP_ROWS = 100  # scan_results keeps the best rows of each scan (and every candidate)
RETAIN_MS = 7 * 86_400_000  # results of older scans are deleted (their runs stay)
FIRST_SCAN_S = 60.0  # the first scan at most this long after a start (the history lands)
RESTART_S = 60.0  # a child that died is started again at most this often
WORKER_NICE = 19
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
RUN_COLUMNS = (
    "started_ms",
    "finished_ms",
    "bar_s",
    "window_start_s",
    "window_end_s",
    "log_prices",
    "legs",
    "legs_skipped",
    "pairs_tested",
    "candidates",
    "tradable",
    "rows_stored",
    "cpu_s",
    "params_json",
    "note",
)
# scan_results' columns after scan_id, in the order of the worker's rows.
RESULT_COLUMNS = (
    "rank",
    "venue_y",
    "symbol_y",
    "venue_x",
    "symbol_x",
    "hedge_ratio",
    "intercept",
    "eg_stat",
    "eg_pvalue",
    "eg_qvalue",
    "half_life",
    "corr",
    "nobs",
    "oos_hedge_ratio",
    "oos_pvalue",
    "holds_out_of_sample",
    "candidate",
    "spread_std",
    "spread_std_bps",
    "round_trip_bps",
    "tradable",
    "last_bar_s",
    "zscore",
    "signal_bar_s",
    "signal_z",
)

_DURATION = re.compile(r"(?P<number>[0-9]+)(?P<unit>[mhd])")
_UNITS = {"m": 60, "h": 3_600, "d": 86_400}


def parse_window(text: str) -> int:
    """Seconds from ``--scan-window``: a number and a unit, ``m``, ``h`` or ``d``, from 2
    hours to 7 days.

    :raises argparse.ArgumentTypeError: with what to write instead.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a window: write a number and a unit, m, h or d (e.g. 6h, 24h, 3d)"
        )
    seconds = int(match["number"]) * _UNITS[match["unit"]]
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise argparse.ArgumentTypeError(
            f"{text} is outside 2h..7d: a pair is tested on at least 120 one-minute bars, "
            "and a week of them is the most a scan holds"
        )
    return seconds


def parse_every(text: str) -> float:
    """Minutes from ``--scan-every``: ``0`` (no scans) or a number of minutes, at least
    0.05."""
    try:
        minutes = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if minutes == 0:
        return 0.0
    if not MIN_EVERY_MIN <= minutes <= 1e6:
        raise argparse.ArgumentTypeError(
            f"--scan-every takes minutes, from {MIN_EVERY_MIN} (or 0: no scans), not {text}"
        )
    return minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon's scan flags, ``--scan-every`` and ``--scan-window`` (docs/ingest.md)."""
    group = parser.add_argument_group("pair scans (docs/schema.md#scan_runs)")
    group.add_argument(
        "--scan-every",
        type=parse_every,
        default=DEFAULT_EVERY_MIN,
        metavar="MINUTES",
        help="test every pair of the recorded symbols for cointegration this often, on "
        "1-minute closes, and store the ranked result (scan_runs, scan_results) for the "
        "page's watchlist; 0: no scans",
    )
    group.add_argument(
        "--scan-window",
        type=parse_window,
        default=parse_window(DEFAULT_WINDOW),
        metavar="DURATION",
        help=f"the trailing window each scan tests, 2h to 7d (default: {DEFAULT_WINDOW})"
        "%(default).0s",
    )


class ScanService(threading.Thread):
    """Scans on schedule in a child process; results stored through the daemon's writer.

    The daemon makes it after its writer has started, starts it, and closes it before it
    closes the writer (the last result is then committed)::

        service = ScanService(db_path, writer, stop_event, every_s=300, window_s=86_400)
        service.start()
        ...
        service.close()
        writer.close()

    :param db_path: the store, a SQLite file or a ``postgresql://`` URL, read by the child
        on a read-only connection (a URL reaches it through its pipe, never its command
        line, where ``ps`` would show the password).
    :param writer: the daemon's writer; each result is one ``submit``.
    :param stop: the daemon's stop event (the thread also ends on :meth:`close`).
    :param every_s: seconds from the start of one scan to the start of the next.
    :param window_s: the trailing window of 1-minute bars a scan tests.
    :param legs: (venue, symbol) to scan; None: the legs whose ``feed_status`` the daemon
        wrote in the last two minutes (what it records now).
    :param first_s: seconds before the first scan (default: ``every_s`` or a minute,
        whichever is shorter; the history lands meanwhile).
    :param timeout_s: a scan taking longer is killed with its child (default: 10 minutes
        or ``every_s``, whichever is longer).
    :param keep: rows stored per scan: the best ``keep`` and every candidate.
    :param log_prices: test log prices (the default: scale-free, as traders quote).
    """

    def __init__(
        self,
        db_path: str | Path | StoreTarget,
        writer: TradeWriter,
        stop: threading.Event,
        *,
        every_s: float = DEFAULT_EVERY_MIN * 60,
        window_s: int = 86_400,
        legs: Sequence[tuple[str, str]] | None = None,
        first_s: float | None = None,
        timeout_s: float | None = None,
        keep: int = KEEP_ROWS,
        log_prices: bool = True,
        nice: int = WORKER_NICE,
    ) -> None:
        super().__init__(name="scan", daemon=True)
        target = parse_target(db_path)
        # What the child opens: a URL, or the file by its absolute path.
        self.db = target.url or str(Path(str(target.path)).resolve())
        self.writer = writer
        self.daemon_stop = stop
        self.closing = threading.Event()
        self.every_s = every_s
        self.window_s = window_s
        self.legs = [tuple(leg) for leg in legs] if legs is not None else None
        self.first_s = min(FIRST_SCAN_S, every_s) if first_s is None else first_s
        self.timeout_s = timeout_s if timeout_s is not None else max(600.0, every_s)
        self.keep = keep
        self.log_prices = log_prices
        self.nice = nice
        self.child: subprocess.Popen[bytes] | None = None
        self.started_children = 0
        self.scans = 0  # results handed to the writer
        self.failures = 0
        self._last_start = -RESTART_S
        self._inflight: list[Future[int]] = []
        self._child_lock = threading.Lock()

    # -- the schedule ------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.closing.is_set() or self.daemon_stop.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when it is time to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.closing.wait(min(left, 0.2))
        return True

    def run(self) -> None:
        log.info(
            "pair scans every %.4g min over the last %.4g h of 1-minute bars, first in %.0f s",
            self.every_s / 60,
            self.window_s / 3600,
            self.first_s,
        )
        next_at = time.monotonic() + self.first_s
        try:
            while not self._sleep(next_at - time.monotonic()):
                started = time.monotonic()
                try:
                    self.scan_once()
                except Exception:
                    self.failures += 1
                    log.exception("pair scan failed; the next one runs on schedule")
                next_at = max(started + self.every_s, time.monotonic())
        finally:
            self._end_child()
            self._finish_writes()

    # -- one scan ----------------------------------------------------------------------

    def scan_once(self) -> None:
        """Ask the child for a scan and hand its result to the writer."""
        child = self._child()
        if child is None:
            return
        request = {
            "db": self.db,
            "now_ms": now_ms(),
            "window_s": self.window_s,
            "every_s": self.every_s,
            "legs": self.legs,
            "keep": self.keep,
            "log_prices": self.log_prices,
        }
        assert child.stdin is not None and child.stdout is not None
        try:
            pickle.dump(request, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
            reply = self._reply(child.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self.failures += 1
            log.error(
                "the scanner process (pid %d) failed: %r; started again next time", child.pid, exc
            )
            self._end_child()
            return
        if reply is None:  # stopping, or the scan overran: the child is ended
            return
        if "error" in reply:
            self.failures += 1
            log.error("pair scan failed in the scanner process: %s", reply["error"])
            return
        self._store(reply["run"], reply["rows"])

    def _reply(self, stdout: IO[bytes]) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._stopping():
                self._end_child()
                return None
            if time.monotonic() >= deadline:
                self.failures += 1
                log.error(
                    "a pair scan took more than %.0f s: the scanner process is ended and "
                    "started again at the next scan",
                    self.timeout_s,
                )
                self._end_child()
                return None
            readable, _, _ = select.select([stdout], [], [], 0.2)
            if readable:
                reply: dict[str, Any] = pickle.load(stdout)
                return reply

    def _store(self, run: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
        cutoff = run["finished_ms"] - RETAIN_MS
        values = tuple(run[column] for column in RUN_COLUMNS)

        def write(conn: Connection) -> int:
            ((scan_id,),) = conn.execute(
                f"INSERT INTO scan_runs ({', '.join(RUN_COLUMNS)})"  # noqa: S608
                f" VALUES ({', '.join('?' * len(RUN_COLUMNS))}) RETURNING scan_id",
                values,
            ).fetchall()
            conn.executemany(
                f"INSERT INTO scan_results (scan_id, {', '.join(RESULT_COLUMNS)})"  # noqa: S608
                f" VALUES (?, {', '.join('?' * len(RESULT_COLUMNS))})",
                [(scan_id, *row) for row in rows],
            )
            conn.execute(
                "DELETE FROM scan_results WHERE scan_id IN"
                " (SELECT scan_id FROM scan_runs WHERE finished_ms < ?)",
                (cutoff,),
            )
            return scan_id

        future = self.writer.submit(write)
        self._inflight = [f for f in self._inflight if not f.done()] + [future]
        self.scans += 1
        summary = (
            f"{run['legs']} legs ({run['legs_skipped']} left out), {run['pairs_tested']:,} "
            f"pairs, {run['candidates']} candidates, {run['tradable']} tradable, "
            f"{run['cpu_s']:.1f} s of CPU"
        )
        future.add_done_callback(lambda done: self._stored(done, summary, run["note"]))

    @staticmethod
    def _stored(done: Future[int], summary: str, note: str | None) -> None:
        if done.exception() is not None:
            log.error("a pair scan's result was not stored: %r", done.exception())
            return
        log.info("pair scan %d stored: %s%s", done.result(), summary, f"; {note}" if note else "")

    def _finish_writes(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for future in self._inflight:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                log.error("a pair scan's result was not stored: %r", exc)

    # -- the child ---------------------------------------------------------------------

    def _child(self) -> subprocess.Popen[bytes] | None:
        """The running child, started when there is none (at most every ``RESTART_S``)."""
        with self._child_lock:
            if self.child is not None and self.child.poll() is None:
                return self.child
            if self.child is not None:
                self.failures += 1
                log.error(
                    "the scanner process (pid %d) ended with status %s; starting another",
                    self.child.pid,
                    self.child.returncode,
                )
                self.child = None
            if self.started_children and time.monotonic() - self._last_start < RESTART_S:
                return None
            env = dict(os.environ)
            env.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
            root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            self.child = subprocess.Popen(
                [sys.executable, "-m", "pairs_monitor.scan.worker", "--nice", str(self.nice)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            self.started_children += 1
            self._last_start = time.monotonic()
            threading.Thread(
                target=_relay, args=(self.child,), name="scan-log", daemon=True
            ).start()
            log.info("scanner process started (pid %d, nice +%d)", self.child.pid, self.nice)
            return self.child

    def _end_child(self, grace_s: float = 2.0) -> None:
        """Ask the child to exit (end of input), kill it if it does not."""
        with self._child_lock:
            child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        try:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(grace_s)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop: end a scan under way with its child, wait for the last store; True when
        the thread ended in time."""
        self.closing.set()
        if self.is_alive():
            self.join(timeout)
        else:
            self._end_child()
        return not self.is_alive()


def _relay(child: subprocess.Popen[bytes]) -> None:
    """The child's standard error, line by line, into the daemon's log."""
    assert child.stderr is not None
    for line in child.stderr:
        text = line.decode(errors="replace").rstrip()
        if text:
            log.warning("scanner process: %s", text)
