"""Statistics tab: regression summary, ADF, Engle-Granger, Johansen, half-life, Hurst, and
the per-bar statistics table. The tests run on demand (a button) and are cached."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import cache, data
from dashboard.tabs import Context, need_frame, need_view

RUN_KEY = "stats_run"


def render(ctx: Context) -> None:
    if not need_view(ctx):
        return
    pair = ctx.pair()
    if not need_frame(pair):
        return
    view = ctx.view
    fit = pair.fit
    st.subheader("Regression")
    if fit is not None:
        st.code(fit.summary, language=None)
    else:
        st.markdown(
            f"{view.method} hedge is dynamic; latest hedge ratio "
            f"{pair.latest('hedge_ratio'):.6g}, intercept {pair.latest('intercept'):.6g}."
        )
    st.subheader("Stationarity and mean reversion")
    if st.button("Run the tests", key="run_stats", help="ADF, Engle-Granger, Johansen, …"):
        st.session_state[RUN_KEY] = True
    if not st.session_state.get(RUN_KEY):
        st.caption("The tests take a moment on long windows: press the button to run them.")
    else:
        # Cached per view and minute of data: a rerun within the minute shows the same run.
        key = ("stats", ctx.db_path, view, pair.end_s // 60 if pair.end_s else None)
        result = cache.cached_call(key, data.statistics, (pair,))
        _show_tests(result, view.bar_seconds)
    st.subheader("Per-bar statistics")
    table = data.stats_table(pair)
    st.dataframe(table.tail(500), key="stats_table")
    st.caption(f"{len(table):,} rows; the last 500 shown, all of them in the Data tab's export.")


def _show_tests(result: data.Statistics, bar_seconds: int) -> None:
    rows = []
    for name, label in (
        ("adf", "ADF on the spread"),
        ("engle_granger", "Engle-Granger (MacKinnon)"),
        ("johansen", "Johansen trace"),
    ):
        res = getattr(result, name)
        if res is None:
            rows.append(
                {
                    "test": label,
                    "statistic": None,
                    "p-value": None,
                    "5% critical": None,
                    "verdict": result.errors.get(name, "not run"),
                }
            )
            continue
        rows.append(
            {
                "test": label,
                "statistic": res.statistic,
                "p-value": res.pvalue,
                "5% critical": res.critical_values.get("5%"),
                "verdict": res.verdict,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="tests")
    c1, c2 = st.columns(2)
    hl = result.half_life_bars
    hl_text = (
        "—"
        if math.isnan(hl)
        else (
            "∞ (not mean-reverting)"
            if math.isinf(hl)
            else f"{hl:,.1f} bars ≈ {hl * bar_seconds:,.0f} s"
        )
    )
    c1.metric("Half-life of the spread", hl_text)
    c2.metric(
        "Hurst exponent of the spread",
        "—" if math.isnan(result.hurst) else f"{result.hurst:.3f}",
        help="0.5 random walk, < 0.5 mean-reverting",
    )
