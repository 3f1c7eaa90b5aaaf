"""Pair tab: spread, z-score with entry/exit bands, rolling correlation, hedge ratio paths."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data
from dashboard.tabs import Context, need_frame, need_view


def render(ctx: Context) -> None:
    if not need_view(ctx):
        return
    pair = ctx.pair()
    if not need_frame(pair):
        return
    view = ctx.view
    fit = pair.fit
    if fit is not None:
        st.markdown(f"**Static fit** ({view.method}, the whole lookback): `{fit.summary}`")
    else:
        st.markdown(f"**{view.method}** hedge: causal, each bar uses only earlier bars.")
    title = f"{view.y} vs {view.x}: {view.timeframe} bars, window {view.window}"
    st.plotly_chart(charts.pair_panels(pair.frame, view.z_entry, view.z_exit, title), key="pair")
    try:
        paths = data.hedge_paths(pair)
    except ValueError as exc:
        st.info(f"Hedge ratio paths not available yet: {exc}")
        return
    st.plotly_chart(charts.hedge_paths(paths), key="hedge_paths")
    st.caption(
        "Static: one fit over the lookback (it has seen every bar it is drawn on). Rolling OLS: "
        "trailing window. Kalman: predicted state, from bars before each one."
    )
