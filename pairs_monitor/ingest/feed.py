"""The :class:`Feed` protocol: what the daemon needs of every source of trades.

The live Binance feed, the simulator, replay and auto (live with the simulator as a
stand-in) each implement it; ``daemon.build_feed`` returns one. A feed hands its rows to
the :class:`~pairs_monitor.store.writer.TradeWriter` it was built with and keeps one
:class:`~pairs_monitor.ingest.status.FeedStats` per (venue, symbol) it produces.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

from pairs_monitor.ingest.status import FeedStats


class Feed(Protocol):
    """A producer of trades, run on a thread of its own by the daemon."""

    @property
    def venue(self) -> str:
        """The venue its trades are stored under (replay: the venues, comma-separated)."""
        ...

    @property
    def symbols(self) -> Sequence[str]:
        """The symbols it records, upper case."""
        ...

    @property
    def stats(self) -> list[FeedStats]:
        """Its health counters, one per (venue, symbol); the list may grow while it runs."""
        ...

    @property
    def params(self) -> Mapping[str, object]:
        """What it was started with, recorded as JSON in ``ingest_runs.params_json``."""
        ...

    def run(self, stop_event: threading.Event) -> None:
        """Produce until ``stop_event`` is set (replay: or until its files end)."""
        ...
