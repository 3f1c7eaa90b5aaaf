"""One module per tab, in the order they appear: each has ``render(ctx)``.

``live.py`` Live · ``prices.py`` Prices · ``pair.py`` Pair · ``statistics.py`` Statistics ·
``backtest.py`` Backtest · ``correlation.py`` Correlation · ``alerts.py`` Alerts ·
``data.py`` Data (export and upload).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from pairs_monitor.page import cache, pipeline
from pairs_monitor.page.settings import MAX_1S_ROWS, View

TAB_NAMES = ("Live", "Prices", "Pair", "Statistics", "Backtest", "Correlation", "Alerts", "Data")


@dataclass
class Context:
    """What every tab gets: where data comes from and what the sidebar chose."""

    db_path: str
    source: pipeline.Source
    view: View | None
    db_ok: bool = True  # False when the database could not be opened (upload still works)
    uploaded: Any = None  # upload.Uploaded when the uploaded files parsed
    upload_error: str | None = None  # why they did not
    _pair: pipeline.PairData | None = field(default=None, repr=False)

    @property
    def is_upload(self) -> bool:
        return pipeline.is_upload(self.source)

    @property
    def max_lookback_s(self) -> int | None:
        """The lookback cap: the database's one-second rows; none for an upload."""
        return None if self.is_upload else MAX_1S_ROWS

    @property
    def source_key(self) -> tuple:
        """What identifies the data for a cache key: the database, or the upload's bytes."""
        if self.is_upload:
            return ("upload", getattr(self.uploaded, "digest", None))
        return ("db", self.db_path)

    def pair(self) -> pipeline.PairData | None:
        """The pair's bars and analytics for the whole lookback, computed once per run."""
        if self.view is None:
            return None
        if self._pair is None:
            too_large = self.view.too_large(self.max_lookback_s)
            if too_large:
                self._pair = pipeline.PairData(self.view, None, waiting=too_large)
            elif self.is_upload:
                self._pair = pipeline.compute_pair(self.source, self.view)
            else:
                end_s = pipeline.end_of_view(self.source, [self.view.y, self.view.x])
                if end_s is None:
                    self._pair = pipeline.PairData(self.view, None, waiting="no bars yet")
                else:
                    self._pair = cache.pair(self.db_path, self.view, end_s)
        return self._pair


def need_view(ctx: Context) -> bool:
    """Say what is missing when there is no pair to show; True when the tab can go on."""
    if ctx.view is None:
        st.info("Waiting for data: a pair needs bars for at least two symbols of one venue.")
        return False
    return True


def need_frame(pair: pipeline.PairData | None) -> bool:
    """Say what the pair analytics are waiting for; True when the pair frame exists."""
    if pair is None:
        return False
    if pair.frame is None:
        st.info(f"Waiting: {pair.waiting}")
        return False
    return True


def ready_pair(ctx: Context) -> pipeline.PairData | None:
    """The pair with its analytics, or None after saying what the tab is waiting for."""
    if not need_view(ctx):
        return None
    pair = ctx.pair()
    return pair if need_frame(pair) else None
