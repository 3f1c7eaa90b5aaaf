"""Prices tab: candlesticks with volume for each leg, both legs rebased on one chart."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pairs_monitor import quant
from pairs_monitor.page import charts
from pairs_monitor.page.tabs import Context, md, need_view


def render(ctx: Context) -> None:
    view = need_view(ctx)
    pair = ctx.pair()
    if view is None or pair is None:
        return
    if not pair.bars:
        st.info(f"Waiting: {md(pair.waiting)}")
        return
    stats = {}
    for name, bars in pair.bars.items():
        if bars.empty:
            st.info(f"No {view.timeframe} bars for {md(name)} in the lookback yet.")
            continue
        stats[name] = quant.price_stats(bars)
    if stats:
        st.dataframe(pd.DataFrame(stats).T, key="price_stats")
    for name, bars in pair.bars.items():
        if not bars.empty:
            st.plotly_chart(charts.candles(bars, name), key=f"candles_{name}")
    if pair.closes is not None and len(pair.closes) > 1:
        st.plotly_chart(charts.normalised(pair.closes), key="normalised")
    else:
        st.info("Waiting for bars where both legs have traded to compare them.")
