"""Alerts tab: the rules the daemon judges, with what it last saw of each; a form to add
one; their firings with each channel's delivery state.

The page judges nothing: the daemon (``ingest.py``) does, page or no page
(docs/alerts.md). The tab is a fragment, so choosing a rule kind or typing a threshold
reruns this tab only. The form's widgets are not in an ``st.form``: pressing Enter in a
field only commits that field, and a rule is added by the *Add rule* button alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from pairs_monitor import quant
from pairs_monitor.alerts import rules
from pairs_monitor.alerts.rules import Rule
from pairs_monitor.clock import now_ms
from pairs_monitor.page import cache, numbers, pipeline, queries
from pairs_monitor.page.alert_rules import (
    AlertError,
    AlertStore,
    RuleState,
    describe,
    new_rule,
)
from pairs_monitor.page.settings import MIN_TEST_OBS, RULES_JUDGED_STALE_MS, Leg, View
from pairs_monitor.page.tabs import Context, literal, md
from pairs_monitor.page.tabs.prices import known_decimals
from pairs_monitor.page.text import utc

CREATABLE = list(rules.KINDS)
# What the threshold of each kind is counted in (the field's label).
THRESHOLD_LABELS = {
    "zscore_above": "z-score",
    "zscore_below": "z-score",
    "price_above": "Price",
    "price_below": "Price",
    "volume_spike": "Volume ratio",
    "feed_silent": "Seconds silent",
    "gap_abandoned": "Gaps abandoned",
    "writer_failing": "Seconds failing",
    "coint_lost": "p-value level",
    "corr_breakdown": "Correlation level",
}
# Kinds whose level is a convention rather than near today's value: pre-filled with it
# (the current value is shown beside the field).
CONVENTIONAL = {
    "coint_lost": (0.05, 0.01),
    "feed_silent": (30.0, 5.0),
    "gap_abandoned": (1.0, 0.0),
    "writer_failing": (30.0, 0.0),
}
STEPS = {  # the +/- step of the threshold and re-arm fields (0.1 for the others)
    "price_above": 1.0,
    "price_below": 1.0,
    "feed_silent": 5.0,
    "gap_abandoned": 1.0,
    "writer_failing": 5.0,
    "coint_lost": 0.01,
}
FALLBACK = {  # when there is no current value to start from
    "zscore_above": (2.0, 1.0),
    "zscore_below": (-2.0, -1.0),
    "volume_spike": (3.0, 1.5),
    "corr_breakdown": (0.5, 0.7),
}
# Widget keys whose values the form fills in (and the last values it filled them with).
FILLED = ("rule_threshold", "rule_rearm", "rule_window")
# Run from the daemon's command line: what the page suggests when no daemon judges rules.
DAEMON_HINT = "python ingest.py --db {db} --symbols btcusdt ethusdt"


def render(ctx: Context) -> None:
    if not ctx.db_ok:
        st.info("Alerts are stored in the database, which is not available.")
        return
    _tab(ctx)


@st.fragment
def _tab(ctx: Context) -> None:
    try:
        store = cache.alert_store(ctx.db_path)
        if not store.judged_by_daemon():
            command = f"python db_setup.py --db {ctx.db_path}"
            st.warning(
                "This database predates alerts judged by the daemon (schema version 6): "
                f"run {literal(command)}, or start the daemon, which migrates it; rules and "
                "firings are shown and added then."
            )
            return
        st.caption(
            "The daemon (`ingest.py`) judges every enabled rule on each new bar, whether or "
            "not a page is open, stores each firing and sends it to every `--notify` URL it "
            "was given; this page only adds, pauses and deletes rules and shows what the "
            "daemon saw. New firings show above the tabs until acknowledged. The command "
            "line does the same: `ingest.py alerts --help`."
        )
        _new_rule(store, ctx)
        _rules(store, ctx, store.rules())
        _firings(store)
    except queries.STORE_ERRORS as exc:
        st.error(f"The alert tables could not be read or written: {md(exc)}")


def _flash(where: str) -> None:
    """The outcome of the last button pressed there (set by its callback), shown once."""
    outcome = st.session_state.pop(where, None)
    if outcome is not None:
        ok, text = outcome
        (st.success if ok else st.error)(text)


def _say(where: str, ok: bool, text: str) -> None:
    st.session_state[where] = (ok, text)


# -- the form ------------------------------------------------------------------------------


def _new_rule(store: AlertStore, ctx: Context) -> None:
    st.subheader("New rule")
    view = ctx.view
    if view is None or ctx.source.recording is None:
        st.info(
            "Rules watch the database: show a pair of it (data source *Database*) to add one "
            "here, or use `ingest.py alerts add`."
        )
        return
    c1, c2 = st.columns([1, 2])
    kind = c1.selectbox("When", CREATABLE, format_func=rules.KINDS.__getitem__, key="rule_kind")
    kind = kind or CREATABLE[0]
    leg, leg_x = _target(c2, ctx, view, kind)
    _prefill(ctx, view, kind, leg, leg_x)
    c3, c4, c5, c6 = st.columns(4)
    step = STEPS.get(kind, 0.1)
    level_format = _level_format(kind)
    c3.number_input(THRESHOLD_LABELS[kind], step=step, key="rule_threshold", format=level_format)
    if kind in rules.EVENT_KINDS:
        c4.caption("Each gap abandoned after the rule is made counts once: no re-arm level.")
    else:
        c4.number_input(
            "Re-arm at",
            step=step,
            key="rule_rearm",
            format=level_format,
            help="The value must come back past this before the rule can fire again (hysteresis).",
        )
    if kind in rules.VIEW_KINDS:
        c5.number_input(
            "Window (bars)",
            min_value=2,
            step=1,
            key="rule_window",
            help=f"{view.timeframe} bars, the sidebar's timeframe. Cointegration needs at "
            f"least {MIN_TEST_OBS}.",
        )
    c6.number_input(
        "Cooldown (s)",
        min_value=0,
        step=60,
        key="rule_cooldown",
        help="At least this long between two firings of the rule (0: none).",
    )
    rule = _rule_from_form(view, kind, leg, leg_x)
    value, said = value_now(ctx, rule)
    st.caption(
        f"Now: **{md(numbers.plain(value))}** ({md(said)}). Judged in: {md(rule.judged_in())}. "
        + (
            f"Fires when the value reaches the threshold{_direction(kind)}. "
            if kind not in rules.EVENT_KINDS
            else "Fires for each new abandoned gap. "
        )
        + _kind_help(kind, view)
    )
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button(
        "Use the current value",
        key="rule_fill",
        on_click=_fill_now,
        args=(kind, value, _level_decimals(kind, leg, value)),
        disabled=math.isnan(value) or kind in CONVENTIONAL,
        help="Set the threshold to the value now (and a re-arm level on its safe side).",
    )
    b2.button("Add rule", key="rule_add", type="primary", on_click=_add, args=(store, view))
    _flash("rule_flash")


def _target(column: Any, ctx: Context, view: View, kind: str) -> tuple[Leg | None, Leg | None]:
    """What a rule of ``kind`` watches: the pair on screen, a leg (or every symbol of a
    venue for abandoned gaps), or the daemon's writer."""
    if kind == "writer_failing":
        column.markdown("**Watching**  \nthe daemon's writer")
        return None, None
    if kind in rules.PAIR_KINDS:
        column.markdown(
            f"**Watching**  \nthe pair on screen, {md(view.leg_y.label)} / "
            f"{md(view.leg_x.label)} (pick another in the sidebar)"
        )
        return view.leg_y, view.leg_x
    legs = list(ctx.source.legs())
    if kind == "gap_abandoned":
        venues = list(dict.fromkeys(leg.venue for leg in legs))
        legs = [Leg(venue, rules.ANY) for venue in venues] + legs
    chosen = st.session_state.get("rule_symbol")
    if chosen is not None and chosen not in legs:
        del st.session_state["rule_symbol"]  # a leg of another kind's list: start over
    leg = column.selectbox(
        "Watching",
        legs,
        index=legs.index(view.leg_y) if view.leg_y in legs else 0,
        key="rule_symbol",
        format_func=_leg_label,
    )
    return leg, None


def _leg_label(leg: Leg) -> str:
    if leg.symbol == rules.ANY:
        return f"every symbol of {leg.venue}"
    return leg.label


def _rule_from_form(view: View, kind: str, leg: Leg | None, leg_x: Leg | None) -> Rule:
    state = st.session_state
    return new_rule(
        kind,
        leg,
        float(state.get("rule_threshold") or 0.0),
        0.0 if kind in rules.EVENT_KINDS else float(state.get("rule_rearm") or 0.0),
        leg_x=leg_x,
        cooldown_s=int(state.get("rule_cooldown") or 0),
        timeframe=view.timeframe,
        window=int(state.get("rule_window") or view.window),
        method=view.method,
        log_prices=view.log_prices,
    )


def _prefill(ctx: Context, view: View, kind: str, leg: Leg | None, leg_x: Leg | None) -> None:
    """Fill the threshold, re-arm level and window when the rule's kind or what it
    watches changes: the current value of what it watches (the conventional level for
    p-values and the daemon's health), a re-arm level on its safe side and the sidebar's
    window. A field the user has changed since it was filled is left as it is."""
    state = st.session_state
    watch = (kind, leg, leg_x)
    if state.get("rule_watch") == watch:
        return
    state["rule_watch"] = watch
    filled = state.get("rule_filled", {})
    kept = {key for key in FILLED if key in state and state[key] != filled.get(key)}
    window = view.window if kind != "coint_lost" else max(view.window, MIN_TEST_OBS)
    if "rule_window" not in kept:
        state["rule_window"] = window
    if "rule_cooldown" not in state:
        state["rule_cooldown"] = 0
    rule = _rule_from_form(view, kind, leg, leg_x)
    value, _ = value_now(ctx, rule)
    decimals = _level_decimals(kind, leg, value)
    threshold, rearm = suggested(kind, value, decimals)
    if "rule_threshold" in kept:
        threshold = float(state["rule_threshold"])
        rearm = suggested(kind, threshold, decimals)[1] if kind not in CONVENTIONAL else rearm
    state["rule_threshold"] = threshold
    if "rule_rearm" not in kept:
        state["rule_rearm"] = rearm
    state["rule_filled"] = {key: state[key] for key in FILLED}


def _level_decimals(kind: str, leg: Leg | None, value: float) -> int | None:
    """The decimals a price rule's levels are written at: the leg's, as the page has read
    them off its prices and never fewer than the price now has (``prices.known_decimals``);
    None for a rule of another kind or with no price yet."""
    if not kind.startswith("price") or leg is None or math.isnan(value):
        return None
    return known_decimals(leg, value)


def _level_format(kind: str) -> str:
    """The printf format of the threshold and re-arm fields: a price rule's at the decimals
    of the levels they hold (``60123.45`` is not shown as ``60123.5``), any other to 6
    significant digits."""
    if not kind.startswith("price"):
        return "%.6g"
    state = st.session_state
    levels = [state.get("rule_threshold"), state.get("rule_rearm")]
    return numbers.printf(numbers.price_decimals([v for v in levels if v is not None]))


def suggested(kind: str, value: float, decimals: int | None = None) -> tuple[float, float]:
    """The threshold and re-arm level a new rule of ``kind`` starts from: ``value`` (what
    it watches now) and a level on the side it re-arms from, or the kind's usual level.

    :param decimals: a price rule's levels are rounded to these (the leg's, so the
        threshold is the price now and the re-arm level a price it can trade at); None:
        to ``numbers.SIGNIFICANT_DIGITS`` significant digits.

    >>> suggested("zscore_above", 1.234)
    (1.23, 0.23)
    >>> suggested("price_above", 60123.45, 2)
    (60123.45, 60003.2)
    """
    if kind in CONVENTIONAL:
        return CONVENTIONAL[kind]
    if math.isnan(value) or (kind in ("volume_spike", "price_above", "price_below") and value <= 0):
        return FALLBACK.get(kind, (1.0, 0.5))
    if kind.startswith("price"):
        if decimals is None:
            decimals = numbers.significant_decimals(value)
        threshold = round(value, decimals)
        factor = 0.998 if kind == "price_above" else 1.002
        return threshold, round(threshold * factor, decimals)
    threshold = round(value, 2)
    if kind == "zscore_above":
        return threshold, round(threshold - 1, 2)
    if kind == "zscore_below":
        return threshold, round(threshold + 1, 2)
    if kind == "volume_spike":
        return threshold, round(threshold / 2, 2)
    return threshold, round((threshold + 1) / 2, 2)  # corr_breakdown: re-arms above


def _fill_now(kind: str, value: float, decimals: int | None) -> None:
    threshold, rearm = suggested(kind, value, decimals)
    st.session_state["rule_threshold"] = threshold
    st.session_state["rule_rearm"] = rearm
    filled = st.session_state.get("rule_filled", {})
    st.session_state["rule_filled"] = {**filled, "rule_threshold": threshold, "rule_rearm": rearm}


def _add(store: AlertStore, view: View) -> None:
    """The *Add rule* button: stored once, or refused with what to change.

    The rule is read from the fields as they are now: a value typed just before the click
    reaches the page in the same rerun as the click, after the form was last drawn.
    """
    state = st.session_state
    kind = state.get("rule_kind") or CREATABLE[0]
    if kind == "writer_failing":
        leg, leg_x = None, None
    elif kind in rules.PAIR_KINDS:
        leg, leg_x = view.leg_y, view.leg_x
    else:
        leg, leg_x = state.get("rule_symbol"), None
    rule = _rule_from_form(view, kind, leg, leg_x)
    try:
        rule_id = store.add_rule(rule)
    except AlertError as exc:
        _say("rule_flash", False, f"Rule not added: {md(exc)}")
    except queries.STORE_ERRORS as exc:
        _say("rule_flash", False, f"Rule not added: the database refused it ({md(exc)}); retry.")
    else:
        _say("rule_flash", True, f"Rule {rule_id} added: {md(describe(rule))}.")


def _direction(kind: str) -> str:
    return " from below" if kind in rules.RISING else " from above"


def _kind_help(kind: str, view: View) -> str:
    if kind.startswith("zscore"):
        return (
            "A z-score rule keeps the sidebar's timeframe, hedge method and log prices, "
            "with the auto Kalman noise and no liquidity floor, over the last "
            "max(3 × window, 300) bars, as the Live panel."
        )
    if kind == "volume_spike":
        return (
            f"Volume ratio = the newest {view.timeframe} bar's volume over the mean of the "
            "window's bars before it (`quant.volume_ratio`); e.g. 3, re-arm at 1.5."
        )
    if kind == "coint_lost":
        return (
            "Engle-Granger p-value of Y on X over the window's last bars, tested once a "
            "minute; 0.05 is the usual level."
        )
    if kind == "corr_breakdown":
        return "Correlation of one-bar log returns of the two legs over the window."
    if kind == "feed_silent":
        return "Seconds since the symbol's last trade, counted only while its market trades."
    if kind == "writer_failing":
        return "Seconds the daemon's writer has kept failing to commit."
    return ""


# -- the value now, for the form -----------------------------------------------------------


def value_now(ctx: Context, rule: Rule) -> tuple[float, str]:
    """The value a rule made from the form would be judged on now, and what it is (the
    daemon computes it the same way; this is for choosing a threshold): NaN with the
    reason when there is none."""
    kind = rule.kind
    source, recording = ctx.source, ctx.source.recording
    if kind == "writer_failing":
        writer = recording.writer_status() if recording else None
        if writer is None:
            return math.nan, "no daemon has written its writer status yet"
        if writer.state != "retrying":
            return 0.0, f"the writer is {writer.state}"
        since = writer.failing_since_ms or writer.updated_ms
        return (now_ms() - since) / 1000, "seconds the writer has been failing"
    if kind == "gap_abandoned":
        return 0.0, "only gaps abandoned after the rule is made count"
    leg = Leg(*rule.leg_y)
    if kind.startswith("price") or kind == "feed_silent":
        last = source.last_price(leg)
        if last is None:
            return math.nan, f"no trade of {leg.label} yet"
        age_s = max(0.0, now_ms() / 1000 - last[1] / 1e6)
        if kind == "feed_silent":
            return age_s, f"seconds since {leg.label} last traded"
        return last[0], f"{leg.label} last trade, {age_s:,.1f} s ago"
    view = rules.rule_view(rule)
    end_s = pipeline.end_of_view(source, view.legs if kind in rules.PAIR_KINDS else [leg])
    if end_s is None:
        return math.nan, "no bars yet"
    if kind == "volume_spike":
        return _volume_now(ctx, view, leg, end_s)
    pair = cache.pair(ctx.db_path, view, end_s)
    if kind == "coint_lost":
        return _pvalue_now(ctx, pair, rule)
    column = "corr" if kind == "corr_breakdown" else "zscore"
    value, _bar = pair.now(column)
    if math.isnan(value):
        return value, pair.waiting or "a leg is stale or the window has no value yet"
    name = "correlation of returns" if column == "corr" else "z-score"
    return value, f"{name} of the pair at its newest bar"


def _volume_now(ctx: Context, view: View, leg: Leg, end_s: int) -> tuple[float, str]:
    bars = pipeline.leg_bars(ctx.source, view, leg, end_s)
    value, _bar = pipeline.volume_ratio_now(ctx.source, view, leg, end_s, bars)
    if math.isnan(value):
        return value, f"waiting for {view.window + 1} {view.timeframe} bars of {leg.label}"
    ratio = quant.volume_ratio(bars, view.window)
    ratio = ratio[ratio.abs() < float("inf")]  # drop NaN and the inf of a 0 baseline
    return value, (
        f"{leg.label}'s newest bar; 99th percentile over the last {len(bars):,} bars "
        f"{ratio.quantile(0.99):.2f}"
    )


def _pvalue_now(ctx: Context, pair: pipeline.PairData, rule: Rule) -> tuple[float, str]:
    closes = pair.closes
    window = int(rule.window or 0)
    if closes is None or len(closes) < MIN_TEST_OBS:
        return math.nan, f"n too small: needs {MIN_TEST_OBS} bars with both legs"
    tail = closes.tail(window)
    if len(tail) < MIN_TEST_OBS:
        return math.nan, f"n too small: {len(tail)} bars with both legs, needs {MIN_TEST_OBS}"
    view = pair.view
    key = ("coint_now", ctx.db_path, view, pair.end_s, window)
    try:
        pvalue = cache.cached_call(key, _engle_granger, (tail, view.names, rule.log_prices))
    except ValueError as exc:  # a flat leg: no test
        return math.nan, str(exc)
    return pvalue, f"Engle-Granger p-value over the last {len(tail):,} bars"


def _engle_granger(tail: pd.DataFrame, names: list[str], log_prices: bool | None) -> float:
    y, x = tail[names[0]], tail[names[1]]
    if log_prices:
        y, x = np.log(y), np.log(x)
    return float(quant.engle_granger(y, x).pvalue)


# -- rules ---------------------------------------------------------------------------------


def _rules(store: AlertStore, ctx: Context, states: list[RuleState]) -> None:
    st.subheader("Rules")
    if not states:
        st.info("No rules yet.")
        return
    now = now_ms()
    _unjudged(ctx, states, now)
    st.dataframe(
        rules_table(states, now), hide_index=True, key="rules_table", placeholder=numbers.DASH
    )
    by_id = {s.rule.rule_id: s.rule for s in states}
    if st.session_state.get("rule_pick") not in by_id:
        st.session_state.pop("rule_pick", None)  # deleted meanwhile: pick the first
    c1, c2, c3 = st.columns([3, 1, 1])
    # The options are rule ids (the selection is an id, never a position in the list).
    chosen = c1.selectbox(
        "Rule",
        list(by_id),
        key="rule_pick",
        format_func=lambda rule_id: _picker_label(by_id[rule_id]),
    )
    if chosen is None:
        return
    enabled = by_id[chosen].enabled
    c2.button(
        f"{'Pause' if enabled else 'Resume'} rule {chosen}",
        key="rule_toggle",
        on_click=_toggle,
        args=(store, chosen, not enabled),
    )
    c3.button(f"Delete rule {chosen}", key="rule_delete", on_click=_delete, args=(store, chosen))
    _flash("pick_flash")


def _picker_label(rule: Rule) -> str:
    """``#3 · ETHUSDT/BTCUSDT on sim: z-score above 2 (paused)``: the id first, so two
    alike rules are never mistaken for each other."""
    return f"#{rule.rule_id} · {describe(rule)}" + ("" if rule.enabled else " (paused)")


def _toggle(store: AlertStore, rule_id: int, enabled: bool) -> None:
    """Pause or resume the rule the button was drawn for (its id is in its label)."""
    _changed(
        rule_id, "resumed" if enabled else "paused", lambda: store.set_enabled(rule_id, enabled)
    )


def _delete(store: AlertStore, rule_id: int) -> None:
    _changed(rule_id, "deleted, with its firings", lambda: store.delete_rule(rule_id))


def _changed(rule_id: int, done: str, change: Callable[[], bool]) -> None:
    try:
        found = change()
    except queries.STORE_ERRORS as exc:
        _say("pick_flash", False, f"Rule {rule_id} was not changed ({md(exc)}); try again.")
        return
    if found:
        _say("pick_flash", True, f"Rule {rule_id} {done}.")
    else:
        _say("pick_flash", False, f"There is no rule {rule_id} any more (deleted elsewhere).")


def rules_table(states: list[RuleState], now: int) -> pd.DataFrame:
    """One row per rule: what it watches, its settings and what the daemon last saw."""
    rows = []
    for s in states:
        rule, age = s.rule, s.judged_age_s(now)
        state = "on" if rule.enabled else "paused"
        if rule.enabled and not rule.armed:
            state += ", fired: re-arms at its level"
        value = s.note or numbers.plain(s.last_value)
        rows.append(
            {
                "id": rule.rule_id,
                "rule": describe(rule),
                "judged in": rule.judged_in() if rule.kind in rules.KINDS else "",
                "re-arm at": None if rule.kind in rules.EVENT_KINDS else numbers.plain(rule.rearm),
                "cooldown (s)": rule.cooldown_s,
                "state": state,
                "value now": value,
                "judged": "never" if age is None else f"{age:,.0f} s ago",
                "last fired": utc(rule.last_fired_ms) if rule.last_fired_ms else "never",
            }
        )
    return pd.DataFrame(rows)


def _unjudged(ctx: Context, states: list[RuleState], now: int) -> None:
    """Warn when no daemon has judged rules lately: then nothing fires or is sent."""
    stale = [s for s in states if s.unjudged(now, RULES_JUDGED_STALE_MS)]
    if not stale:
        return
    seen = [s.checked_ms for s in states if s.checked_ms is not None]
    last = "never" if not seen else f"{(now - max(seen)) / 1000:,.0f} s ago"
    ids = ", ".join(str(s.rule.rule_id) for s in stale[:20]) + (" …" if len(stale) > 20 else "")
    command = DAEMON_HINT.format(db=ctx.db_path)
    st.warning(
        f"**No daemon is judging rule(s) {ids}**: not judged for more than "
        f"{RULES_JUDGED_STALE_MS // 1000} s (the last judgement of any rule: {last}). "
        "Rules are judged by the ingest daemon, not by this page, so until one runs against "
        f"this database nothing fires and nothing is sent. Start it: `make run`, or "
        f"{literal(command)} (with the symbols you record); a daemon of a version before "
        "alerts moved into it must be restarted.",
        icon="⏳",
    )


# -- firings -------------------------------------------------------------------------------


def _firings(store: AlertStore) -> None:
    st.subheader("Firings")
    firings = store.firings()
    if not firings:
        st.info("No rule has fired yet.")
        return
    now = now_ms()
    table = pd.DataFrame(
        [
            {
                "id": f.event_id,
                "fired": utc(f.fired_ms),
                "rule": f.rule_id,
                "message": f.message,
                # Text at the value's own decimals: a price of 0.00005123 in a number
                # column would be rounded to the table's four places.
                "value": numbers.plain(f.value),
                "threshold": numbers.plain(f.threshold),
                "acknowledged": "new" if f.acked_ms is None else utc(f.acked_ms),
                "delivery": f.delivery_text(now),
            }
            for f in firings
        ]
    )
    st.dataframe(table, hide_index=True, key="alert_history", placeholder=numbers.DASH)
    st.caption(
        "Delivery: each `--notify` URL of the daemon (secrets masked), retried with "
        "backoff until sent, for up to 24 hours, also after a restart of the daemon."
    )
