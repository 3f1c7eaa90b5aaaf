"""Pair tab: spread, z-score with entry/exit bands, rolling correlation, hedge ratio paths."""

from __future__ import annotations

import streamlit as st

from pairs_monitor.page import charts, pipeline
from pairs_monitor.page.tabs import Context, literal, md, ready_pair


def render(ctx: Context) -> None:
    ready = ready_pair(ctx)
    if ready is None:
        return
    view, pair, frame = ready
    fit = pair.fit
    if fit is not None:
        st.markdown(f"**Static fit** ({view.method}, the whole lookback): {literal(fit.summary)}")
    else:
        st.markdown(f"**{view.method}** hedge: causal, each bar uses only earlier bars.")
    title = f"{view.y} vs {view.x}: {view.timeframe} bars, window {view.window}"
    unit = f"log {view.y} − h·log {view.x}" if view.log_prices else f"{view.y} − h·{view.x}"
    st.plotly_chart(charts.pair_panels(frame, view.z_entry, view.z_exit, title, unit), key="pair")
    try:
        paths = pipeline.hedge_paths(pair)
    except ValueError as exc:
        st.info(f"Hedge ratio paths not available yet: {md(exc)}")
        return
    truth = None
    recording = ctx.source.recording
    if recording is not None and view.log_prices:  # the simulator's hedge is of log prices
        run = recording.latest_run()
        found = pipeline.true_pair_params(run.params, view.y, view.x) if run else None
        truth = found.hedge_ratio if found and found.hedge_ratio == found.hedge_ratio else None
    unit = f"log {view.y} per log {view.x}" if view.log_prices else f"{view.y} per {view.x}"
    st.plotly_chart(charts.hedge_paths(paths, unit, truth), key="hedge_paths")
    st.caption(
        "Static: one fit over the lookback (it has seen every bar it is drawn on). Rolling OLS: "
        "trailing window. Kalman: predicted state, from bars before each one, with its "
        "band of ±2 standard deviations under the filter's own model (the noise it was "
        "given, not a test)."
    )
