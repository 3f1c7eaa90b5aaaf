"""One module per tab, in the order they appear: each has ``render(ctx)``.

Watchlist (``page/watchlist.py``: the daemon's newest pair scan, ranked) · ``live.py`` Live
· ``prices.py`` Prices · ``pair.py`` Pair · ``statistics.py`` Statistics · ``backtest.py``
Backtest · ``correlation.py`` Correlation · ``alerts.py`` Alerts · ``data.py`` Data (export
and upload).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
import streamlit as st

from pairs_monitor.page import cache, pipeline
from pairs_monitor.page.settings import View
from pairs_monitor.page.text import literal as literal
from pairs_monitor.page.text import md as md
from pairs_monitor.page.text import plot as plot
from pairs_monitor.page.upload import Uploaded
from pairs_monitor.page.watchlist import TAB_NAME as WATCHLIST

TAB_NAMES = (
    WATCHLIST,
    "Live",
    "Prices",
    "Pair",
    "Statistics",
    "Backtest",
    "Correlation",
    "Alerts",
    "Data",
)
"""The tabs, in order. The page opens on the Watchlist when a pair scan exists to rank,
else on Live (``opening_tab``)."""


def opening_tab(scan_to_rank: bool) -> str:
    """The tab the page opens on."""
    return WATCHLIST if scan_to_rank else "Live"


@dataclass
class Context:
    """What every tab gets: where data comes from and what the sidebar chose."""

    db_path: str
    source: pipeline.Source
    view: View | None  # None: no pair to show, every tab says what it waits for
    db_ok: bool = True  # False when the database could not be opened (upload still works)
    uploaded: Uploaded | None = None  # the uploaded files, when they parsed
    upload_error: str | None = None  # why they did not
    _pair: pipeline.PairData | None = field(default=None, repr=False)

    def pair(self) -> pipeline.PairData | None:
        """The pair's bars and analytics for the whole lookback, computed once per run."""
        if self._pair is None:
            self._pair = self._computed(fit=True)
        return self._pair

    def pair_bars(self) -> pipeline.PairData | None:
        """The legs' bars and aligned closes without the pair's fit (``frame`` is None
        unless this run computed the whole pair already): what the Prices tab draws, and
        what a window, method or z change leaves as it was."""
        return self._pair if self._pair is not None else self._computed(fit=False)

    def _computed(self, fit: bool) -> pipeline.PairData | None:
        view = self.view
        if view is None:
            return None
        too_large = view.too_large(self.source.max_lookback_s)
        if too_large:
            return pipeline.PairData(view, None, waiting=too_large)
        if self.source.recording is None:  # data that does not change: nothing to key
            return pipeline.compute_pair(self.source, view, fit=fit)
        end_s = pipeline.end_of_view(self.source, view.legs)
        if end_s is None:
            return pipeline.PairData(view, None, waiting="no bars yet")
        if fit:
            return cache.pair(self.db_path, view, end_s)
        return cache.pair_bars(self.db_path, view, end_s)


def need_view(ctx: Context) -> View | None:
    """The sidebar's view, or None after saying what is missing for a pair."""
    if ctx.view is None:
        st.info("Waiting for data: a pair needs bars of two legs (a symbol on a venue each).")
    return ctx.view


class Ready(NamedTuple):
    """A pair whose analytics exist: what the Pair, Statistics and Backtest tabs draw."""

    view: View
    pair: pipeline.PairData
    frame: pd.DataFrame  # the pair frame (``quant.pair_frame``)


def ready_pair(ctx: Context) -> Ready | None:
    """The pair with its analytics, or None after saying what the tab is waiting for."""
    view = need_view(ctx)
    pair = ctx.pair()
    if view is None or pair is None:
        return None
    if pair.frame is None:
        st.info(f"Waiting: {md(pair.waiting)}")
        return None
    return Ready(view, pair, pair.frame)
