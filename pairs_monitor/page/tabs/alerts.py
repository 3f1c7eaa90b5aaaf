"""Alerts tab: create rules (z-score above/below, price above/below, volume spike), see and
pause them, and the history of fired alerts. Rules are checked by the Live panel every
refresh."""

from __future__ import annotations

import sqlite3

import pandas as pd
import streamlit as st

from pairs_monitor import quant
from pairs_monitor.page import cache, pipeline
from pairs_monitor.page.alert_rules import KINDS, AlertError, AlertStore
from pairs_monitor.page.settings import View
from pairs_monitor.page.tabs import Context, md, need_view

CREATABLE = list(KINDS)


def render(ctx: Context) -> None:
    if not ctx.db_ok:
        st.info("Alerts are stored in the database, which is not available.")
        return
    view = need_view(ctx)
    if view is None:
        return
    if ctx.source.recording is None:
        st.info("Alerts watch the database; switch the data source back to Database.")
        return
    try:
        store = cache.alert_store(ctx.db_path)
        _new_rule(store, ctx, view)
        _rules(store)
        _history(store)
    except sqlite3.Error as exc:
        st.error(f"The alert tables could not be read or written: {md(exc)}")


def _new_rule(store: AlertStore, ctx: Context, view: View) -> None:
    st.subheader("New rule")
    with st.form("new_rule", clear_on_submit=False):
        c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
        kind = c1.selectbox("When", CREATABLE, format_func=KINDS.__getitem__, key="rule_kind")
        legs = [leg for leg in ctx.source.legs() if leg.venue in view.venues]
        target = c2.selectbox(
            "Leg (price and volume rules)",
            legs,
            index=legs.index(view.leg_y) if view.leg_y in legs else 0,
            key="rule_symbol",
            format_func=lambda leg: leg.label,
            help=f"z-score rules watch the pair on screen: {md(view.name_y)}/{md(view.name_x)}.",
        )
        threshold = c3.number_input(
            "Threshold", value=2.0, step=0.1, key="rule_threshold", format="%.6g"
        )
        rearm = c4.number_input(
            "Re-arm at",
            value=1.0,
            step=0.1,
            key="rule_rearm",
            format="%.6g",
            help="The value must come back past this before the rule can fire again (hysteresis).",
        )
        submitted = st.form_submit_button("Add rule")
    # Both selectboxes have options and a default, so they return a value (typed Optional).
    if submitted and kind is not None and target is not None:
        zscore = kind.startswith("zscore")
        try:
            leg = view.leg_y if zscore else target
            rule_id = store.add_rule(
                kind,
                leg.venue,
                leg.symbol,
                float(threshold),
                float(rearm),
                symbol_x=view.x if zscore else None,
                timeframe=view.timeframe,
                window=view.window,
                method=view.method,
                log_prices=view.log_prices,
                venue_x=view.venue_x if zscore else None,
            )
        except AlertError as exc:
            st.error(f"Rule not added: {md(exc)}")
        else:
            st.success(f"Rule {rule_id} added.")
    kind_of_hedge = f"{view.method}, {'log' if view.log_prices else 'raw'} prices"
    st.caption(
        f"A new z-score rule watches the pair on screen ({md(view.name_y)}/{md(view.name_x)}"
        f"{', both legs with their venues' if view.venue_x else ''}) and keeps "
        f"today's settings ({view.timeframe} bars, window {view.window}, {kind_of_hedge}; "
        "auto Kalman noise, no liquidity floor): every open page judges it in those, "
        f"whatever it shows. Volume spike = the newest {view.timeframe} bar's volume / the "
        f"mean volume of the {view.window} bars before it (`quant.volume_ratio`); "
        "e.g. threshold 3, re-arm at 1.5."
    )
    if not store.stores_views:
        st.warning(
            "This database predates per-rule settings (schema version 2): new rules are "
            "judged in each page's own view. Run `python db_setup.py --db <file>` to migrate."
        )
    _volume_context(ctx, view)


def _volume_context(ctx: Context, view: View) -> None:
    """The volume ratio of each leg now, so a threshold can be chosen with a scale in mind."""
    pair = ctx.pair()
    if pair is None or pair.end_s is None or not pair.bars:
        return
    parts = []
    for leg, name in zip(view.legs, view.names, strict=True):
        bars = pair.bars.get(name)
        if bars is None:
            continue
        value, _bar = pipeline.volume_ratio_now(ctx.source, view, leg, pair.end_s, bars)
        if value == value:
            ratio = quant.volume_ratio(bars, view.window)
            ratio = ratio[ratio.abs() < float("inf")]  # drop NaN and the inf of a 0 baseline
            parts.append(
                f"{md(name)} {value:.2f} (99th percentile over the lookback "
                f"{ratio.quantile(0.99):.2f})"
            )
    if parts:
        st.caption("Volume ratio of the newest bar: " + "; ".join(parts) + ".")


def _rules(store: AlertStore) -> None:
    st.subheader("Rules")
    rules = store.rules()
    if not rules:
        st.info("No rules yet.")
        return
    table = pd.DataFrame(
        [
            {
                "id": r.rule_id,
                "rule": r.describe(),
                "judged in": r.judged_in(),
                "re-arm at": r.rearm,
                "enabled": r.enabled,
                "armed": r.armed,
            }
            for r in rules
        ]
    )
    st.dataframe(table, hide_index=True, key="rules_table")
    c1, c2, c3 = st.columns([2, 1, 1])
    ids = [r.rule_id for r in rules]
    chosen = c1.selectbox(
        "Rule",
        ids,
        key="rule_pick",
        format_func=lambda i: next(r.describe() for r in rules if r.rule_id == i),
    )
    rule = next(r for r in rules if r.rule_id == chosen)
    if c2.button("Resume" if not rule.enabled else "Pause", key="rule_toggle"):
        store.set_enabled(chosen, not rule.enabled)
        st.rerun()
    if c3.button("Delete", key="rule_delete"):
        store.delete_rule(chosen)
        st.rerun()


def _history(store: AlertStore) -> None:
    st.subheader("Fired alerts")
    events = store.events()
    if events.empty:
        st.info("No alert has fired yet.")
        return
    shown = events[["fired_at", "message", "value", "bar_time_s", "rule_id"]]
    st.dataframe(shown, hide_index=True, key="alert_history")
