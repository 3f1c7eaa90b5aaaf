"""Firings not yet acknowledged, above the tabs, whichever tab is open; and a warning
there when enabled rules exist but no daemon has judged them lately.

The daemon fires rules and stores each firing in ``alert_events``; a firing stays in this
banner until someone acknowledges it (``acked_ms``), here or with ``ingest.py alerts ack``.
The banner is a fragment that rereads the firings every ``FIRINGS_REFRESH`` (a count on
a partial index, then at most ``MAX_FIRINGS_SHOWN`` rows): new firings appear within a
second, and a firing first seen by this session also pops a toast.
"""

from __future__ import annotations

import sqlite3

import psycopg
import streamlit as st

from pairs_monitor.clock import now_ms
from pairs_monitor.page import cache
from pairs_monitor.page.alert_rules import AlertStore
from pairs_monitor.page.settings import (
    FIRINGS_REFRESH,
    MAX_FIRINGS_SHOWN,
    RULES_JUDGED_STALE_MS,
)
from pairs_monitor.page.text import md, utc


def render(db_path: str) -> None:
    """The banner, for a database the page could open."""
    _banner(db_path)


@st.fragment(run_every=FIRINGS_REFRESH)
def _banner(db_path: str) -> None:
    try:
        store = cache.alert_store(db_path)
        if not store.judged_by_daemon():
            return
        now = now_ms()
        enabled, unjudged_ms = store.unjudged_for_ms(now)
        count, newest = store.count_unacked()
        shown = store.firings(MAX_FIRINGS_SHOWN, unacked=True) if count else []
    except (sqlite3.Error, psycopg.Error) as exc:
        st.warning(f"New alert firings could not be read this refresh ({md(exc)}); retrying.")
        return
    if unjudged_ms is not None and unjudged_ms > RULES_JUDGED_STALE_MS:
        st.warning(
            f"**No daemon is judging the {enabled} enabled alert rule(s)** "
            f"(none judged for {unjudged_ms / 1000:,.0f} s): nothing fires and nothing is "
            "sent until one runs against this database. The Alerts tab says how to start it.",
            icon="⏳",
        )
    _toast_new([f.event_id for f in shown], {f.event_id: f.message for f in shown})
    failed = st.session_state.pop("ack_flash", None)
    if failed:
        st.error(failed)
    if not count or newest is None:
        return
    with st.container(border=True):
        more = (
            f"; the {count - len(shown)} older ones are in the Alerts tab"
            if count > len(shown)
            else ""
        )
        st.markdown(
            f"**🔔 {count} alert firing{'s' if count != 1 else ''} not yet acknowledged** "
            f"(they stay here until acknowledged{more})"
        )
        for firing in shown:
            text, button = st.columns([5, 1], vertical_alignment="center")
            text.error(
                f"**#{firing.event_id}**, {utc(firing.fired_ms)}: {md(firing.message)}  \n"
                f"Delivery: {md(firing.delivery_text(now))}",
                icon="🔔",
            )
            button.button(
                "Acknowledge",
                key=f"ack_{firing.event_id}",
                on_click=_acknowledge,
                args=(store, [firing.event_id]),
                help=f"Acknowledge firing #{firing.event_id}",
            )
        if count > 1:
            st.button(
                f"Acknowledge all {count}",
                key="ack_all",
                on_click=_acknowledge_through,
                args=(store, newest),
                help=f"Every firing up to #{newest}: one stored later stays.",
            )


def _toast_new(event_ids: list[int], messages: dict[int, str]) -> None:
    """A toast for each firing this session sees for the first time (none on its first
    look: those are already in the banner it draws)."""
    seen: set[int] | None = st.session_state.get("firings_seen")
    if seen is not None:
        for event_id in event_ids:
            if event_id not in seen:
                st.toast(md(messages[event_id]), icon="🚨")
    st.session_state["firings_seen"] = (seen or set()) | set(event_ids)


def _acknowledge(store: AlertStore, event_ids: list[int]) -> None:
    try:
        store.acknowledge(event_ids)
    except (sqlite3.Error, psycopg.Error) as exc:
        st.session_state["ack_flash"] = f"Not acknowledged ({md(exc)}); try again."


def _acknowledge_through(store: AlertStore, newest_id: int) -> None:
    try:
        store.acknowledge_through(newest_id)
    except (sqlite3.Error, psycopg.Error) as exc:
        st.session_state["ack_flash"] = f"Not acknowledged ({md(exc)}); try again."
