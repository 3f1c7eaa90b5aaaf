"""``--source auto``: live Binance, with the simulator standing in while Binance is out of reach.

The live feed (ingest/binance/multi.py: every market's) runs all the time and keeps
reconnecting on its own. When none of its markets has had a connection for
``--fallback-after`` seconds (at start, or after a long outage), the simulator
(ingest/sim.py, venue ``sim``, never a live venue) starts and the loud log line says so; as
soon as a market connects again the simulator stops. Each live symbol's
``FeedStats.switch_source`` records which source is active and since when, so the page can
tell.

Supervision: the live feed's threads (each market's connections, gap filler, jump
confirmer and flusher, and the funding recorder's) are watched; when one dies, ``run``
raises :class:`LiveFailed` after stopping the simulator, and the daemon exits with a message
(``EXIT_SOURCE_FAILED``) instead of simulating for ever beside a live source that will
never reconnect. The simulator's thread dying while it stands in raises
:class:`SimFailed` the same way.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pairs_monitor.ingest import binance, sim
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest.auto")

DEFAULT_FALLBACK_AFTER = 10.0


class LiveFailed(RuntimeError):
    """A thread of the live feed died: it will never connect again in this run."""


class SimFailed(RuntimeError):
    """The simulator's thread died while it stood in for live."""


def dead_threads(feed: object) -> list[str]:
    """Names of the live feed's threads that ended while it runs (none once it stops).

    :param feed: any feed; only the live one (alone or under auto) has such threads.
    """
    live = feed.live if isinstance(feed, AutoFeed) else feed
    return live.dead_threads() if isinstance(live, binance.MarketsFeed) else []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--fallback-after`` to the daemon's command line."""
    parser.add_argument(
        "--fallback-after",
        type=float,
        default=DEFAULT_FALLBACK_AFTER,
        metavar="SECONDS",
        help="--source auto: simulate after this long without a live connection",
    )


def from_args(args: argparse.Namespace, writer: TradeWriter) -> AutoFeed:
    """Build the live feed, and the way to make the simulator when it is needed.

    The simulator stands in for the live symbols (every market's, once each, ``top:N``
    resolved), without their market prefixes: it records under venue ``sim``.
    """
    live = binance.from_args(args, writer)
    sim_args = argparse.Namespace(**{**vars(args), "symbols": list(live.symbols)})
    return AutoFeed(live, lambda: sim.from_args(sim_args, writer), writer, args.fallback_after)


@dataclass
class _RunningSim:
    """The simulator while it stands in for live: its feed, stop event and thread."""

    feed: sim.SimFeed
    stop: threading.Event
    thread: threading.Thread


class AutoFeed:
    """Live first; the simulator only while live has been down ``fallback_after`` seconds.

    :param live: the live feed.
    :param make_sim: builds a fresh simulated feed (it resumes its ids from the store).
    :param writer: the writer (flushed before a simulator starts, so ids resume right).
    :param fallback_after: seconds without a live connection before simulating.
    """

    def __init__(
        self,
        live: binance.MarketsFeed,
        make_sim: Callable[[], sim.SimFeed],
        writer: TradeWriter,
        fallback_after: float,
    ) -> None:
        self.live = live
        self.make_sim = make_sim
        self.writer = writer
        self.fallback_after = fallback_after
        self.venue = live.venue
        self.symbols = live.symbols
        self.stats = list(live.stats)  # the simulator's join while it runs
        self.params = {**live.params, "fallback_after_s": fallback_after}
        self._sim: _RunningSim | None = None
        self._sim_died: list[BaseException] = []

    def run(self, stop_event: threading.Event) -> None:
        """Run live (and the simulator when needed) until ``stop_event`` is set."""
        live_stop = threading.Event()
        died: list[BaseException] = []

        def run_live() -> None:
            try:
                self.live.run(live_stop)
            except BaseException as exc:
                died.append(exc)
                log.critical("the live feed died: %r", exc, exc_info=exc)

        live_thread = threading.Thread(target=run_live, name="live", daemon=True)
        live_thread.start()
        down_since: float | None = time.monotonic()
        try:
            while not stop_event.wait(0.1):
                dead = dead_threads(self.live)
                if died or dead or not live_thread.is_alive():
                    why = repr(died[0]) if died else f"thread(s) {', '.join(dead) or 'live'} died"
                    raise LiveFailed(f"the live feed failed ({why}): it would never reconnect")
                if self._sim is not None and not self._sim.thread.is_alive():
                    why = repr(self._sim_died[0]) if self._sim_died else "it ended"
                    raise SimFailed(f"the simulator standing in for live died ({why})")
                if self.live.any_connected():
                    down_since = None
                    if self._sim is not None:
                        self._stop_sim("the live connection to Binance is up")
                    continue
                if down_since is None:
                    down_since = time.monotonic()
                if self._sim is None and time.monotonic() - down_since >= self.fallback_after:
                    self._start_sim()
        finally:
            if self._sim is not None:
                self._stop_sim("stopping")
            live_stop.set()
            live_thread.join(10)

    def _start_sim(self) -> None:
        log.error(
            "NO CONNECTION TO BINANCE for %.0f s (%s): falling back to SIMULATED trades "
            "under venue 'sim'. Live keeps retrying in the background and takes over as "
            "soon as it connects.",
            self.fallback_after,
            self.live.ws_urls,
        )
        try:  # the simulator resumes its ids from the store: all queued must be in it
            self.writer.flush(timeout=1)
        except TimeoutError:  # the writer is behind (a locked disk): try again shortly
            log.warning("the writer is behind; the simulator starts once it has caught up")
            return
        try:
            feed = self.make_sim()
        except (Exception, SystemExit) as exc:  # a bad --sim-* flag must not stop live
            log.error("cannot start the simulator (%s); waiting for live only", exc)
            self.fallback_after = float("inf")
            return
        self.stats[:] = [*self.live.stats, *feed.stats]
        stop = threading.Event()
        died = self._sim_died

        def run_sim() -> None:
            try:
                feed.run(stop)
            except BaseException as exc:
                died.append(exc)
                log.critical("the simulator died: %r", exc, exc_info=exc)

        thread = threading.Thread(target=run_sim, name="sim", daemon=True)
        self._sim = _RunningSim(feed, stop, thread)
        thread.start()
        for stats in self.live.stats:
            stats.switch_source("sim")

    def _stop_sim(self, why: str) -> None:
        if self._sim is None:
            return
        log.warning("%s: simulator stopped, live trades only from here", why)
        self._sim.stop.set()
        self._sim.thread.join(10)
        for stats in self.live.stats:
            stats.switch_source("live")
        self._sim = None
