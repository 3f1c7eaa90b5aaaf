"""Correlation tab: return-correlation heatmap of every leg of the venues on screen and
the pair scanner."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pairs_monitor.page import cache, charts, numbers, pipeline
from pairs_monitor.page.settings import CORRELATION_BUCKET_S, MAX_SCAN_SYMBOLS, SCAN_MIN_BARS
from pairs_monitor.page.tabs import Context, md, need_view


def render(ctx: Context) -> None:
    view = need_view(ctx)
    if view is None:
        return
    legs, _names = pipeline.scan_legs(ctx.source, view)
    end_s = pipeline.end_of_view(ctx.source, legs)
    if end_s is None or len(legs) < 2:
        st.info("Waiting for bars of at least two legs.")
        return
    too_large = view.too_large(ctx.source.max_lookback_s)
    if too_large:
        st.info(too_large)
        return
    key = (
        "corr",
        ctx.source.cache_key,
        pipeline.correlation_inputs(view),
        end_s // CORRELATION_BUCKET_S,
    )
    try:
        matrix, scan = cache.cached_call(key, pipeline.correlation, (ctx.source, view, end_s))
    except ValueError as exc:
        st.info(f"Waiting for more bars: {md(exc)}")
        return
    if matrix.empty:
        st.info(f"Waiting for {view.timeframe} bars where at least two symbols have traded.")
        return
    title = f"Correlation of {view.timeframe} log returns ({len(legs)} legs)"
    st.plotly_chart(charts.heatmap(matrix, title), key="heatmap")
    if len(legs) == MAX_SCAN_SYMBOLS:
        st.caption(f"The first {MAX_SCAN_SYMBOLS} legs of the venues on screen.")
    st.subheader("Pair scanner (Engle-Granger on every pair)")
    if scan.empty:
        st.info(f"Too few common bars to test any pair yet (at least {SCAN_MIN_BARS} needed).")
    else:
        first = [c for c in ("candidate", "y", "x", "eg_pvalue", "eg_qvalue") if c in scan]
        scan = scan[first + [c for c in scan.columns if c not in first]]
        st.dataframe(
            scan,
            hide_index=True,
            key="scan",
            placeholder=numbers.DASH,
            column_config=scan_config(view.bar_seconds, view.log_prices),
        )
        if "eg_qvalue" in scan and "candidate" in scan:
            st.caption(
                f"{len(scan)} pairs tested: about 5% of unrelated pairs show p < 0.05 by "
                "chance, so the q-value is the Benjamini-Hochberg q-value over all of them. "
                "A pair is a candidate only with q < 0.05 and when it holds out of sample "
                "(hedge fitted on the first two thirds of the bars, its spread ADF-tested on "
                f"the rest: out-of-sample p). {int(scan['candidate'].sum())} candidate(s). The "
                "in-sample hedge is fitted on the bars it is tested on: a screen, not a signal."
            )
        else:
            st.caption(
                "The hedge is fitted on the same bars it is tested on: a screen, not a "
                "signal. With many pairs, expect about 5% false positives at p < 0.05."
            )


def scan_config(bar_seconds: int, log_prices: bool) -> dict[str, Any]:
    """Human headers with units for the pair scanner's table (its columns stay quant's)."""
    number = st.column_config.NumberColumn
    unit = "log price" if log_prices else "price"
    return {
        "candidate": st.column_config.CheckboxColumn(
            "Candidate", help="q < 0.05 and it holds out of sample."
        ),
        "y": st.column_config.TextColumn("Y"),
        "x": st.column_config.TextColumn("X"),
        "eg_pvalue": number("EG p-value", format="%.3g", help="Engle-Granger, MacKinnon."),
        "eg_qvalue": number("EG q-value", format="%.3g", help="Benjamini-Hochberg."),
        "hedge_ratio": number("Hedge ratio", format="%.6g"),
        "intercept": number("Intercept", format="%.6g"),
        "eg_stat": number("EG statistic", format="%.3f"),
        "half_life": number(
            "Half-life (bars)", format="%.1f", help=f"Bars of {bar_seconds} s; empty: none."
        ),
        "corr": number("ρ of returns", format="%.3f"),
        "nobs": number("n (bars)", format="localized"),
        "oos_hedge_ratio": number("Out-of-sample hedge ratio", format="%.6g"),
        "oos_pvalue": number("Out-of-sample p-value", format="%.3g"),
        "holds_out_of_sample": st.column_config.CheckboxColumn("Holds out of sample"),
        "spread_std": number(f"Spread σ ({unit})", format="%.6g"),
        "spread_std_bps": number("Spread σ (bps of notional)", format="%.1f"),
        "round_trip_bps": number("Round-trip fees (bps)", format="%.1f"),
        "tradable": st.column_config.CheckboxColumn("Tradable"),
    }
