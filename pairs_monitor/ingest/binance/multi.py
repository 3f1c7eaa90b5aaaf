"""The live source as the daemon runs it: one or several Binance markets, one writer.

:class:`MarketsFeed` runs one :class:`~pairs_monitor.ingest.binance.feed.BinanceFeed` per
market (spot, USD-M), each on a thread of its own with its own connections, REST weight
budget, connection-attempt limiter, gap filler and health counters, plus the
:class:`~pairs_monitor.ingest.binance.funding.FundingRecorder` of the USD-M feed. They
share nothing but the writer thread, so a market that is down (unreachable, silent,
rate limited) never stalls the other: its threads wait and retry on their own.

To the daemon it is one :class:`~pairs_monitor.ingest.feed.Feed`: ``venue`` is the venues
comma-separated (``binance-spot,binance-usdm``, as ``ingest_runs.venue`` records it),
``stats`` every market's counters one after the other, ``params`` each market's parameters
under its venue (one market: that feed's parameters as they are).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from pairs_monitor.ingest.binance.feed import BinanceFeed
from pairs_monitor.ingest.binance.funding import FundingRecorder
from pairs_monitor.ingest.binance.history import HistoryBackfill
from pairs_monitor.ingest.status import FeedStats

log = logging.getLogger("ingest.binance")

JOIN_S = 15.0  # a market's orderly stop: sockets closed, its rows handed to the writer


class MarketsFeed:
    """Several markets' live feeds run as one source.

    :param feeds: one feed per market, built and validated (``cli.from_args``).
    :param recorders: the funding recorders set on the USD-M feeds.
    :param histories: the klines backfill of each market (``--history``), if any.
    """

    def __init__(
        self,
        feeds: Sequence[BinanceFeed],
        recorders: Sequence[FundingRecorder] = (),
        histories: Sequence[HistoryBackfill] = (),
    ):
        if not feeds:
            raise ValueError("a live source needs at least one market")
        self.feeds = list(feeds)
        self.recorders = list(recorders)
        self.histories = {history.venue: history for history in histories}
        self.venue = ",".join(feed.venue for feed in self.feeds)
        # ingest_runs.symbols: every symbol once (params say which market has which)
        self.symbols = list(dict.fromkeys(s for feed in self.feeds for s in feed.symbols))
        self.stats: list[FeedStats] = [st for feed in self.feeds for st in feed.stats]
        if len(self.feeds) == 1:
            self.params = dict(self.feeds[0].params)
        else:
            self.params = {
                "markets": {
                    feed.venue: {**feed.params, "symbols": list(feed.symbols)}
                    for feed in self.feeds
                }
            }
        self.stop = threading.Event()  # set once run() is asked to stop, or a market died
        self.runners: list[threading.Thread] = []

    @property
    def ws_urls(self) -> str:
        """Every market's WebSocket host, for messages."""
        return ", ".join(feed.ws_url for feed in self.feeds)

    def any_connected(self) -> bool:
        """Whether at least one market has a connection up."""
        return any(feed.connected.is_set() for feed in self.feeds)

    def run(self, stop_event: threading.Event) -> None:
        """Run every market until ``stop_event`` is set; then stop them all, in parallel.

        :raises BaseException: what a market's ``run`` raised (the other markets are
            stopped first, their rows handed over), or :class:`RuntimeError` when one
            ended on its own.
        """
        died: list[BaseException] = []

        def run_market(feed: BinanceFeed) -> None:
            try:
                feed.run(self.stop)
            except BaseException as exc:
                died.append(exc)
                self.stop.set()
                return
            if not self.stop.is_set():
                died.append(RuntimeError(f"the {feed.venue} feed ended on its own"))
                self.stop.set()

        for recorder in self.recorders:
            recorder.start()
        for history in self.histories.values():
            history.start()  # in the background: live trades never wait for it
        self.runners = [
            threading.Thread(target=run_market, args=(feed,), name=f"{feed.venue}", daemon=True)
            for feed in self.feeds
        ]
        for runner in self.runners:
            runner.start()
        try:
            while not stop_event.wait(0.2) and not self.stop.is_set():
                pass
        finally:
            self.stop.set()
            for runner in self.runners:
                runner.join(JOIN_S)
            for recorder in self.recorders:
                recorder.close()
            for history in self.histories.values():
                history.close()
        if died:
            raise died[0]

    def dead_threads(self) -> list[str]:
        """Names of threads of a running market that ended: its connections, gap filler,
        jump confirmer, flusher, route check and funding recorder (none once stopping).

        With several markets each name is prefixed by its venue (``binance-usdm ws-0``).
        """
        if self.stop.is_set():
            return []
        dead: list[str] = []
        several = len(self.feeds) > 1
        for feed in self.feeds:
            if feed.stop.is_set():
                continue
            threads: list[threading.Thread] = [
                *feed.connections,
                feed.filler,
                feed.confirmer,
                feed.flusher,
                feed.route_check,
            ]
            recorder = getattr(feed, "funding", None)
            if isinstance(recorder, FundingRecorder):
                threads += recorder.threads
            if feed.venue in self.histories:
                threads += self.histories[feed.venue].threads
            # ident is None until a thread starts: only a started and ended one counts.
            dead += [
                f"{feed.venue} {t.name}" if several else t.name
                for t in threads
                if t.ident is not None and not t.is_alive()
            ]
        return dead
