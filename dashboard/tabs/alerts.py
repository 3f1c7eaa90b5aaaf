"""Alerts tab: create rules (z-score above/below, price above/below), see and pause them,
and the history of fired alerts. Rules are checked by the Live panel every refresh."""

from __future__ import annotations

import sqlite3

import pandas as pd
import streamlit as st

from dashboard import cache
from dashboard.alerts import KINDS, AlertError, AlertStore
from dashboard.tabs import Context, need_view

# Volume-spike rules need a volume-spike measure from analytics (not there yet).
CREATABLE = [k for k in KINDS if k != "volume_spike"]


def render(ctx: Context) -> None:
    if not ctx.db_ok:
        st.info("Alerts are stored in the database, which is not available.")
        return
    if not need_view(ctx):
        return
    if ctx.is_upload:
        st.info("Alerts watch the database; switch the data source back to Database.")
        return
    try:
        store = cache.alert_store(ctx.db_path)
        _new_rule(store, ctx)
        _rules(store, ctx)
        _history(store)
    except sqlite3.Error as exc:
        st.error(f"The alert tables could not be read or written: {exc}")


def _new_rule(store: AlertStore, ctx: Context) -> None:
    view = ctx.view
    st.subheader("New rule")
    with st.form("new_rule", clear_on_submit=False):
        c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
        kind = c1.selectbox("When", CREATABLE, format_func=KINDS.get, key="rule_kind")
        symbols = ctx.source.symbols()
        target = c2.selectbox(
            "Symbol (price rules)",
            symbols,
            index=symbols.index(view.y) if view.y in symbols else 0,
            key="rule_symbol",
            help=f"z-score rules watch the pair on screen: {view.y}/{view.x}.",
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
    if submitted:
        zscore = kind.startswith("zscore")
        try:
            rule_id = store.add_rule(
                kind,
                view.venue,
                view.y if zscore else target,
                float(threshold),
                float(rearm),
                symbol_x=view.x if zscore else None,
            )
        except AlertError as exc:
            st.error(f"Rule not added: {exc}")
        else:
            st.success(f"Rule {rule_id} added.")
    st.caption(
        "Volume-spike rules are not offered yet: analytics has no volume-spike measure to "
        "judge them on."
    )


def _rules(store: AlertStore, ctx: Context) -> None:
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
