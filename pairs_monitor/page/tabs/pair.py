"""Pair tab: spread, z-score with entry/exit bands, rolling correlation, hedge ratio paths;
for a coin's spot against its perpetual, the basis and the carry funding pays."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from pairs_monitor.page import charts, numbers, pipeline
from pairs_monitor.page.settings import MAX_STALE_BARS, MIN_FUNDING_SETTLEMENTS, View
from pairs_monitor.page.tabs import Context, literal, md, ready_pair
from pairs_monitor.page.tabs.prices import outages
from pairs_monitor.page.text import utc


def render(ctx: Context) -> None:
    ready = ready_pair(ctx)
    if ready is None:
        return
    view, pair, frame = ready
    spot_perp = pipeline.spot_perp(ctx.source, pair)
    if spot_perp is not None:
        _basis_and_carry(spot_perp, view)
    fit = pair.fit
    if fit is not None:
        st.markdown(f"**Static fit** ({view.method}, the whole lookback): {literal(fit.summary)}")
    else:
        st.markdown(f"**{view.method}** hedge: causal, each bar uses only earlier bars.")
    y, x = view.names
    title = f"{y} vs {x}: {view.timeframe} bars, window {view.window}"
    # A log spread of 0.0004 is 4 bps of the legs' relative price: a trader's unit.
    if view.log_prices:
        unit, scale = f"bps, log {y} − h·log {x}", 1e4
    else:
        unit, scale = f"{y} − h·{x}, {numbers.price_unit(view.y)}", 1.0
    st.plotly_chart(
        charts.pair_panels(
            frame,
            view.z_entry,
            view.z_exit,
            title,
            unit,
            spread_scale=scale,
            outages=outages(ctx, pair),
            max_bars=MAX_STALE_BARS,
        ),
        key="pair",
    )
    try:
        paths = hedge_paths(ctx, pair)
    except ValueError as exc:
        st.info(f"Hedge ratio paths not available yet: {md(exc)}")
        return
    truth = None
    recording = ctx.source.recording
    # The simulator's hedge is of log prices, between legs of its own venue.
    if recording is not None and view.log_prices and len(view.venues) == 1:
        run = recording.latest_run(view.venue)
        found = pipeline.true_pair_params(run.params, view.y, view.x) if run else None
        truth = found.hedge_ratio if found and found.hedge_ratio == found.hedge_ratio else None
    unit = f"log {y} per log {x}" if view.log_prices else f"{y} per {x}"
    st.plotly_chart(charts.hedge_paths(paths, unit, truth), key="hedge_paths")
    st.caption(
        "Static: one fit over the lookback (it has seen every bar it is drawn on). Rolling OLS: "
        "trailing window. Kalman: predicted state, from bars before each one, with its "
        "band of ±2 standard deviations under the filter's own model (the noise it was "
        "given, not a test)."
    )


HEDGE_PATHS = "hedge_paths"  # session key: (what the paths depend on, the paths)


def hedge_paths(ctx: Context, pair: pipeline.PairData) -> pd.DataFrame:
    """``pipeline.hedge_paths``, computed once per view and data: the Kalman filter over a
    day of 1-second bars is most of this tab's cost, and the z entry and exit bands, the
    other tabs' controls and a rerun with no new bar change none of it. Kept in the
    session, not ``st.cache_data``, which would pickle a day of paths on every new view
    (tens of ms)."""
    bands_free = replace(pair.view, z_entry=View.z_entry, z_exit=View.z_exit)
    key = (ctx.source.cache_key, bands_free, pair.end_s)
    kept = st.session_state.get(HEDGE_PATHS)
    if kept is not None and kept[0] == key:
        return kept[1]
    paths = pipeline.hedge_paths(pair)
    st.session_state[HEDGE_PATHS] = (key, paths)
    return paths


def _basis_and_carry(sp: pipeline.SpotPerp, view: View) -> None:
    """Basis now and over the view, the annualised carry of long spot / short perp from
    the settled funding rates, and the live rate due next."""
    st.subheader(f"Basis and carry: {md(sp.perp)} against {md(sp.spot)}")
    carry = sp.carry
    c = st.columns(4)
    c[0].metric(
        "Basis now (bps)",
        numbers.number(float(sp.basis.iloc[-1]), ".2f"),
        help="(perp − spot) / spot × 10,000 at the newest bar, from that bar's two closes.",
    )
    c[1].metric(
        "Basis, mean over the view (bps)",
        numbers.number(float(sp.basis.mean()), ".2f"),
        help=f"Mean of the per-bar basis over the {len(sp.basis):,} bars where both legs "
        "have a close.",
    )
    c[2].metric(
        "Carry, annualised",
        numbers.percent(carry.annualised) if carry.firm else "n too small",
        help="What long spot / short perp earns a year from the funding settled in the "
        "view: the sum of the settled rates over the time they cover, × 365 days. "
        "Positive when longs pay shorts.",
    )
    c[3].metric(
        "Next funding, annualised",
        numbers.percent(carry.next_annualised),
        help="The rate due at the next funding time as it stands now (funding_live), "
        "times the settlements a year at the interval seen: a forecast from one rate.",
    )
    interval = _hours(carry.interval)
    rests = (
        f"{carry.settlements:,} settlement(s) of {md(sp.perp)} in the view"
        + (f", every {interval}" if interval else "")
        + (f", mean rate {numbers.bps(carry.mean_rate, 3)}" if carry.settlements else "")
    )
    if carry.firm:
        st.caption(f"Carry rests on {rests}.")
    elif carry.settlements:
        st.caption(
            f"Carry {md(carry.reason)} (`settings.MIN_FUNDING_SETTLEMENTS` = "
            f"{MIN_FUNDING_SETTLEMENTS}): indicative only, "
            f"{numbers.percent(carry.annualised)} a year from {rests}. A longer lookback "
            "takes in more settlements."
        )
    else:
        st.caption(
            f"No funding settlement in the view ({md(sp.perp)}): no carry yet; pick a "
            "lookback that spans funding times (every 8 h for most symbols)."
        )
    if sp.live is not None:
        st.caption(
            f"Next funding at {utc(sp.live.next_funding_ms)}: rate "
            f"{numbers.bps(sp.live.rate, 3)} as of {utc(sp.live.event_time_ms)} "
            f"(mark price {numbers.plain(sp.live.mark_price)})."
        )
    elif sp.stored:
        st.caption(f"No live funding rate stored for {md(sp.perp)} (funding_live).")
    if not sp.stored:
        st.info(
            "This database predates funding records (schema version 5): the carry needs "
            "the settled rates the daemon stores for USD-M symbols."
        )
    elif sp.gaps:
        spans = "; ".join(f"{utc(a.value // 10**6)} to {utc(b.value // 10**6)}" for a, b in sp.gaps)
        st.warning(
            f"Funding settlements of {md(sp.perp)} are missing from the record ({spans}): "
            "the carry rests only on the settlements stored.",
            icon="⚠️",
        )
    st.plotly_chart(
        charts.basis(sp.basis, sp.rates, f"{sp.perp} against {sp.spot}: basis and funding"),
        key="basis",
    )


def _hours(span: pd.Timedelta | None) -> str:
    if span is None:
        return ""
    hours = span / pd.Timedelta(hours=1)
    return f"{hours:g} h" if hours >= 1 else f"{span / pd.Timedelta(minutes=1):g} min"
