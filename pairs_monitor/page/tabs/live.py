"""Live tab: last prices, z-score, hedge ratio, correlation and feed health.

The panel is an ``st.fragment`` that reruns itself every ``LIVE_REFRESH`` (1 s): only
this panel recomputes, from the newest bars, over a short tail of the lookback
(``View.live``) so a refresh stays well under 100 ms.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from pairs_monitor import quant
from pairs_monitor.clock import now_ms
from pairs_monitor.page import cache, charts, numbers, pipeline, queries, status_strip
from pairs_monitor.page.settings import (
    HEALTH_REFRESH,
    LIVE_MIN_TAIL_BARS,
    LIVE_REFRESH,
    LIVE_TAIL_WINDOWS,
    MAX_GAPS_SHOWN,
    MAX_SPANS_SHOWN,
    MAX_STALE_BARS,
    MIN_TEST_OBS,
    STALE_STATUS_MS,
    Leg,
    View,
    duration_label,
    too_small,
)
from pairs_monitor.page.tabs import Context, literal, md, need_view
from pairs_monitor.page.tabs.prices import known_decimals, leg_decimals, outages
from pairs_monitor.page.text import utc


def render(ctx: Context) -> None:
    view = need_view(ctx)
    if view is None:
        return
    recording = ctx.source.recording
    if recording is None:
        st.caption("Uploaded data does not change: the panel is not refreshed.")
        _panel(ctx, view)
    else:
        _live_panel(ctx, view)
        _health_panel(ctx, view)
    if recording is not None and len(view.venues) == 1:  # a simulator's model: one venue
        _true_parameters(ctx, recording, view)


@st.fragment(run_every=LIVE_REFRESH)
def _live_panel(ctx: Context, view: View) -> None:
    # The fragment reruns on its own, outside the page's per-tab guard (main.py).
    try:
        _panel(ctx, view)
    except queries.STORE_ERRORS as exc:
        st.error(f"The database could not be read this refresh: {md(exc)}", icon="🛑")


@st.fragment(run_every=HEALTH_REFRESH)
def _health_panel(ctx: Context, view: View) -> None:
    """Feed health and where the legs' history comes from: slower to read, slower to
    change, so refreshed less often than the figures above."""
    recording = ctx.source.recording
    if recording is None:
        return
    try:
        _feed_health(recording, view.venues)
        _history(recording, view)
    except queries.STORE_ERRORS as exc:
        st.error(f"The database could not be read this refresh: {md(exc)}", icon="🛑")


# Pixel heights of the panel's fixed slots: a message appearing or leaving (|z| crossing
# the entry, a leg going stale, the data stopping) changes what is in a slot, never where
# the chart below it is.
MESSAGE_SLOT_PX = 92
CHART_SLOT_PX = 262  # charts.live_z is 240 px high

# Figures whose data stopped are drawn grey (the container's key is its CSS class).
_STOPPED_CSS = (
    "<style>.st-key-live_figures_stopped [data-testid='stMetricValue']{color: #9e9e9e;}</style>"
)


def _panel(ctx: Context, view: View) -> None:
    started = time.perf_counter()
    strip = (
        status_strip.current(ctx.db_path, view.legs)
        if ctx.source.recording is not None and ctx.db_ok
        else None
    )
    stopped_s = strip.stopped_s if strip is not None else None
    pair = _live_pair(ctx, view.live())
    z, _bar = pair.now("zscore")
    figures = st.container(key="live_figures_stopped" if stopped_s is not None else "live_figures")
    # Drawn on every refresh, stopped or not: an element that comes and goes moves the rest.
    figures.markdown(_STOPPED_CSS, unsafe_allow_html=True)
    cols = figures.columns(5)
    for col, leg, name in zip(cols[:2], view.legs, view.names, strict=True):
        last = ctx.source.last_price(leg)
        own = pair.bars_of(leg)
        if last is None and own is not None and len(own):
            # No trade stored (klines only): the newest bar's close is the last price known.
            end = pd.Timestamp(own.index[-1]) + pd.Timedelta(seconds=view.bar_seconds)
            col.metric(
                f"{md(name)} last",
                numbers.price(own["close"].iloc[-1], leg_decimals(own, leg)),
                help=f"close of the {view.timeframe} bar ending {end:%Y-%m-%d %H:%M:%S} UTC "
                "(from klines: no trade of this leg is stored)",
            )
        elif last is None:
            col.metric(f"{md(name)} last", "—")
        else:
            age = now_ms() / 1000 - last[1] / 1e6
            col.metric(
                f"{md(name)} last",
                numbers.price(last[0], _trade_decimals(leg, last[0], own)),
                help=f"trade {age:,.1f} s ago",
            )
    cols[2].metric(
        "z-score",
        _fmt(z, ".2f"),
        help=f"window {view.window} bars, over the live tail; the z-score alert rules judge "
        "this same number (rules.zscore_now)",
    )
    cols[3].metric("hedge ratio", _fmt(pair.now("hedge_ratio")[0], ".5g"), help=view.method)
    cols[4].metric("correlation", _fmt(pair.now("corr")[0], ".3f"), help="of log returns")
    if ctx.source.recording is not None and ctx.db_ok:
        _rules_line(ctx, view, z)
    with st.container(height=MESSAGE_SLOT_PX, border=False, key="live_messages"):
        _messages(pair, view, z, stopped_s)
    with st.container(height=CHART_SLOT_PX, border=False, key="live_chart"):
        if pair.frame is None:
            st.info(f"Waiting: {md(pair.waiting)}")
        else:
            st.plotly_chart(_figure(ctx, pair, view), key="live_z")
    if pair.frame is not None:
        bars = len(pair.frame)
        newest = pd.Timestamp(pair.frame.index[-1])
        st.caption(
            f"Live figures use the last {bars} {view.timeframe} bars "
            f"(max({LIVE_TAIL_WINDOWS} × window, {LIVE_MIN_TAIL_BARS}) of the lookback); "
            "static hedge methods are refitted on that tail, so they can differ slightly "
            "from the Pair tab. "
            f"Bar {newest:%H:%M:%S} UTC."
        )
    st.caption(f"Refreshed in {1000 * (time.perf_counter() - started):.0f} ms.")


def _trade_decimals(leg: Leg, price: float, bars: pd.DataFrame | None) -> int:
    """The decimals of a leg's last trade: its market's (read off the leg's bars, never
    fewer than this session has read for it) or the price's own when it has more."""
    if bars is None or not len(bars):
        return known_decimals(leg, price)
    return max(leg_decimals(bars, leg), numbers.price_decimals([price]))


def _messages(pair: pipeline.PairData, view: View, z: float, stopped_s: float | None) -> None:
    """What the panel has to say now, most important first, in its fixed slot."""
    if stopped_s is not None:
        st.warning(
            f"**Data stopped {status_strip.age_text(stopped_s)} ago**: the figures above are "
            "the last known, "
            "greyed; the strip at the top says which feed stopped.",
            icon="⏹️",
        )
    elif pair.stale:
        _stale_legs(pair)
    elif pair.frame is not None and not math.isnan(z) and abs(z) >= view.z_entry:
        side = "short Y / long X" if z > 0 else "long Y / short X"
        st.error(
            f"**|z| = {abs(z):.2f} ≥ entry {view.z_entry:g}**: "
            f"{md(view.name_y)}/{md(view.name_x)} spread is "
            f"{'rich' if z > 0 else 'cheap'}: {side}.",
            icon="🚨",
        )
    elif pair.frame is not None:
        st.caption(f"|z| below the entry ({view.z_entry:g}): no signal.")


LIVE_PAIR = "live_pair"  # session key: (signature, PairData, figure) of the last refresh


def _live_pair(ctx: Context, live_view: View) -> pipeline.PairData:
    """The live tail's pair, recomputed only when a leg has a newer trade or bar than at
    the last refresh (the newest bar grows with each trade): a refresh with nothing new
    costs two indexed reads."""
    source = ctx.source
    signature = (
        live_view,
        source.cache_key,
        tuple(source.last_price(leg) for leg in live_view.legs),
        pipeline.end_of_view(source, live_view.legs),
    )
    kept = st.session_state.get(LIVE_PAIR)
    if kept is not None and kept[0] == signature:
        return kept[1]
    pair = pipeline.compute_pair(source, live_view)
    st.session_state[LIVE_PAIR] = (signature, pair, None)
    return pair


def _figure(ctx: Context, pair: pipeline.PairData, view: View):
    """The live z chart with the legs' outages shaded, built once per new pair (the same
    refresh's pair reuses it)."""
    kept = st.session_state.get(LIVE_PAIR)
    if kept is not None and kept[1] is pair and kept[2] is not None:
        return kept[2]
    assert pair.frame is not None
    figure = charts.live_z(pair.frame, view.z_entry, outages=outages(ctx, pair))
    if kept is not None and kept[1] is pair:
        st.session_state[LIVE_PAIR] = (kept[0], pair, figure)
    return figure


def _rules_line(ctx: Context, view: View, z: float) -> None:
    """The z-score alert rules of this pair and what the daemon last computed for each:
    with the settings on screen it is the number above."""
    db = cache.read_db(ctx.db_path)
    y, x = view.legs
    rules = db.run(queries.zscore_rules, y.venue, y.symbol, x.venue, x.symbol)
    if not rules:
        st.caption("No z-score alert rule on this pair.")
        return
    parts = []
    for rule in rules:
        direction = "above" if rule.kind == "zscore_above" else "below"
        value = (
            f"the daemon's z {rule.last_value:.2f}"
            if rule.last_value is not None
            else f"no z ({md(rule.note or 'not judged yet')})"
        )
        differs = _differs(rule, view)
        same = "settings as here" if not differs else "its own " + ", ".join(differs)
        parts.append(f"rule #{rule.rule_id} (z {direction} {rule.threshold:g}): {value}; {same}")
    st.caption("Alert rules: " + "; ".join(parts) + ".")


def _differs(rule: queries.ZRule, view: View) -> list[str]:
    """The settings in which a rule is judged differently from the view on screen."""
    out = []
    if (rule.timeframe or "1s") != view.timeframe:
        out.append(f"timeframe {rule.timeframe or '1s'}")
    if rule.window is not None and rule.window != view.window:
        out.append(f"window {rule.window}")
    if rule.method is not None and rule.method != view.method:
        out.append(f"method {rule.method}")
    if rule.log_prices is not None and rule.log_prices != view.log_prices:
        out.append("log prices" if rule.log_prices else "raw prices")
    if view.min_volume or view.min_trades:
        out.append("no liquidity floor")
    return out


def _stale_legs(pair: pipeline.PairData) -> None:
    """Name each leg that stopped trading and how long ago: the z-score stops with it."""
    view = pair.view
    for name, age_s in pair.stale.items():
        st.warning(
            f"**Stale leg: {md(name)}** has no traded bar"
            + (" above the liquidity floor" if view.min_volume or view.min_trades else "")
            + f" for {age_s:,.0f} s ({age_s / view.bar_seconds:,.0f} {view.timeframe} bars) "
            f"behind the newest bar. A price more than {MAX_STALE_BARS} bars old is not "
            "carried, so there is no current z-score, hedge or correlation, and the daemon "
            "does not judge z-score rules on this pair until it trades again.",
            icon="⏸️",
        )


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, spec)


def _feed_health(recording: pipeline.Recording, venues: tuple[str, ...]) -> None:
    """The writer's health, then the feed status of each symbol of the venues on screen."""
    st.subheader("Feed health")
    now = now_ms()
    _writer_health(recording, now)
    status = _stacked([recording.feed_status(v) for v in venues])
    if status.empty:
        st.info(
            f"No feed status for {'these venues' if len(venues) > 1 else 'this venue'}: the "
            "daemon has not run against this database (the bars shown are what is stored)."
        )
        return
    stale = (now - status["updated_ms"]) > STALE_STATUS_MS
    if stale.all():
        age = (now - status["updated_ms"].max()) / 1000
        if status["source"].eq("replay").all():
            st.info(
                f"The replay last updated its feed status {age:,.0f} s ago: it has finished "
                "or stopped. Its data are recorded, not live: nothing newer arrives."
            )
        else:
            st.warning(f"The daemon has not updated feed status for {age:,.0f} s: is it running?")
    table = pd.DataFrame(
        {
            "venue": status["venue"],
            "symbol": status["symbol"],
            "source": status["source"],
            "connected": status["connected"].astype(bool) & ~stale,
            "last trade age (s)": (now / 1000 - status["last_trade_time_us"] / 1e6).round(1),
            "trades/s": status["trades_per_s"].round(2),
            "open gaps": status["gaps_open"],
            "abandoned gaps": status["gaps_abandoned"],
            "refused values": status["rejected"],
            "non-market trades": status["nonmarket"],
            "reconnects": status["reconnects"],
            "queue": status["queue_depth"],
            "status age (s)": ((now - status["updated_ms"]) / 1000).round(1),
        }
    )
    if len(venues) == 1:
        table = table.drop(columns="venue")
    st.dataframe(table, hide_index=True, key="feed_health")
    for row in status[status["problem"].notna()].itertuples():
        st.error(
            f"**{md(Leg(str(row.venue), str(row.symbol)).label)}**: {md(row.problem)}",
            icon="🛑",
        )
    if (status["gaps_open"] > 0).any():
        st.warning("Open gaps: some trade ids are missing and not yet backfilled.")
    if (status["gaps_abandoned"] > 0).any():
        st.warning(
            "Abandoned gaps: some trade ids could not be recovered (REST no longer has them, "
            "or never returns them); the bars around them miss those trades. The `gaps` "
            "table says which ranges."
        )
    if (status["rejected"] > 0).any():
        st.warning(
            "Refused values: the daemon refused trades no exchange sends (see its log for "
            "each one); a genuine trade refused this way is recovered over REST or shows "
            "as a gap."
        )


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one under the other, the empty ones left out: an empty frame read from
    SQL has object columns, and pandas 2.2 warns (FutureWarning) that it will stop
    ignoring them when it picks the result's types."""
    rows = [frame for frame in frames if not frame.empty]
    return pd.concat(rows, ignore_index=True) if rows else frames[0]


def _history(recording: pipeline.Recording, view: View) -> None:
    """Where each leg's tape of trades begins, the klines stored before it or over an
    outage (``kline_spans``), and the gaps worth naming, with what covers them."""
    rows = []
    for leg, name in zip(view.legs, view.names, strict=True):
        tape_us = recording.tape_start_us(leg)
        spans = recording.kline_spans(leg)
        described = [
            f"{duration_label(int(interval_s))} {_utc(int(start_s) * 1000)} → "
            f"{_utc(int(end_s) * 1000)} ({origin})"
            for interval_s, start_s, end_s, origin in spans.head(MAX_SPANS_SHOWN).itertuples(
                index=False, name=None
            )
        ]
        if len(spans) > MAX_SPANS_SHOWN:
            described.append(f"and {len(spans) - MAX_SPANS_SHOWN:,} more")
        rows.append(
            {
                "leg": name,
                "tape of trades from": _utc(tape_us // 1000) if tape_us else "no trade stored",
                "bars from klines": "; ".join(described) or "none",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="history")
    st.caption(
        "Before a leg's tape of trades begins, its bars come from Binance's klines "
        "(`ingest.py --history`: origin *rest*; or a replayed klines file): exact open, high, "
        "low, close and volumes, but no trades to export. Spot has 1-second klines; USD-M "
        "only 1-minute ones, shown from the 1m timeframe up."
    )
    gaps = _stacked([recording.gaps(leg, MAX_GAPS_SHOWN) for leg in view.legs])
    if gaps.empty:
        return
    names = {leg: name for leg, name in zip(view.legs, view.names, strict=True)}
    table = pd.DataFrame(
        {
            "leg": [names[Leg(v, s)] for v, s in zip(gaps["venue"], gaps["symbol"], strict=True)],
            "missing ids": [
                f"{a:,}–{b:,}"
                for a, b in zip(gaps["first_missing_id"], gaps["last_missing_id"], strict=True)
            ],
            "status": gaps["status"],
            "reason": gaps["reason"],
            "after trade at": [_utc_or(t) for t in gaps["after_us"]],
            "before trade at": [_utc_or(t) for t in gaps["before_us"]],
            "covered by": gaps["covered_by"].fillna("—"),
            "filled from": gaps["filled_from"].fillna("—"),
            "note": gaps["note"].fillna(""),
        }
    )
    st.dataframe(table, hide_index=True, key="gaps")
    st.caption(
        f"Gaps of the legs on screen that are open, abandoned or covered by klines (the newest "
        f"{MAX_GAPS_SHOWN} of each). *Covered by* `1s klines` or `1m klines`: the seconds "
        "between the trades around the gap have bars from klines, since trades could not "
        "be fetched for them."
    )


def _utc_or(time_us: float | None) -> str:
    """A trade time (µs) as UTC text, or a dash for none."""
    if time_us is None or pd.isna(time_us):
        return "—"
    return _utc(int(time_us) // 1000)


def _writer_health(recording: pipeline.Recording, now: int) -> None:
    """An error while the daemon's commits keep failing; a warning when the writer's row
    has not been updated although the daemon's run is open (gone, or the file is locked)."""
    writer = recording.writer_status()
    if writer is None:  # a database before schema v3, or no daemon has written one yet
        return
    if writer.state == "retrying":
        since_ms = writer.failing_since_ms or writer.updated_ms
        st.error(
            f"The daemon cannot write to the database since {_utc(since_ms)} "
            f"({(now - since_ms) / 1000:,.0f} s ago): "
            f"{literal(writer.last_error or 'no error recorded')}\n\n"
            f"{writer.queue_depth:,} items wait in its queue; it keeps retrying.",
            icon="🛑",
        )
    age_s = (now - writer.updated_ms) / 1000
    run = recording.latest_run()  # one daemon writes a database, whatever its venues
    if 1000 * age_s > STALE_STATUS_MS and run is not None and run.stopped_ms is None:
        st.warning(
            f"The daemon's status is stale: its writer last reported {age_s:,.0f} s ago "
            f"({_utc(writer.updated_ms)}, state {literal(writer.state)}) while its run "
            f"(pid {run.pid}) is still open. The daemon may have died, or another program "
            "holds the database locked.",
            icon="⏳",
        )
    elif writer.state == "ok":
        st.caption(
            f"Writer: ok, {writer.queue_depth:,} items queued, {writer.trades_stored:,} trades "
            "stored this run."
        )
    if writer.rows_rejected:
        st.warning(
            f"The writer set aside {writer.rows_rejected:,} row(s) it could not store this "
            "run (the daemon's log names each one and why); everything else was committed."
        )


def _utc(ms: int) -> str:
    return utc(ms)


def _true_parameters(ctx: Context, recording: pipeline.Recording, view: View) -> None:
    """For simulated data, the simulator's true parameters beside the estimates."""
    run = recording.latest_run(view.venue)
    if run is None or not run.params:
        return
    label = "Simulator's true parameters" if run.source == "sim" else f"{md(run.source)} parameters"
    with st.expander(f"{label} vs estimates", expanded=run.source == "sim"):
        truth = pipeline.true_pair_params(run.params, view.y, view.x)
        if truth is None:
            if run.source == "sim":
                st.caption(
                    f"{md(view.y)}/{md(view.x)} is not a pair of the simulated model "
                    f"(hedge leg {md(run.params.get('hedge_leg', '?'))}); its parameters:"
                )
            st.json(run.params, expanded=False)
            return
        pair = ctx.pair()
        if pair is None or pair.frame is None:
            st.info(
                f"True hedge ratio (log {md(view.y)} on log {md(view.x)}) "
                f"{truth.hedge_ratio:.6g}, "
                f"half-life {truth.half_life_s:.4g} s; estimates wait for the pair analytics."
            )
        else:
            st.dataframe(_truth_table(truth, pair), hide_index=True, key="true_params")
            st.caption(
                f"True values in the orientation on screen (Y = {md(view.y)} on "
                f"X = {md(view.x)}; {md(truth.how)}). Estimates over the lookback "
                f"({len(pair.frame):,} {view.timeframe} bars): hedge = the {view.method} "
                "hedge at the last bar; "
                "half-life = AR(1) fit of the OLS residual (a Kalman or rolling spread is a "
                "forecast error, not the spread the simulator reverts); inf when the window "
                "shows no significant mean reversion, empty under "
                f"{MIN_TEST_OBS} pairs of adjacent bars (n too small)."
                + (
                    " Both legs carry their own simulated spread noise, so an OLS slope of one "
                    "on the other is biased towards 0 until their common driver has moved "
                    "far more than that noise (errors in variables)."
                    if truth.how.startswith("both driven")
                    else ""
                )
            )
        st.caption("Every parameter the simulator recorded for this run:")
        st.json(run.params, expanded=False)


def _truth_table(truth: pipeline.TrueParams, pair: pipeline.PairData) -> pd.DataFrame:
    """Rows quantity / true / estimate for the pair on screen."""
    view, (closes, frame) = pair.view, pair.fitted()
    hedge_est = pair.latest("hedge_ratio")
    try:
        fit = quant.hedge_ratio(frame["y"], frame["x"], "ols")
    except ValueError:  # a flat X: no OLS residual, no half-life estimate
        half_life_s = math.nan
    else:
        # A fitted (2-leg) residual; inf when the window shows no significant reversion.
        resid = quant.spread(frame["y"], frame["x"], fit.slope, fit.intercept)
        hl = quant.half_life_fit(resid, legs=2)
        small = too_small(hl.nobs, MIN_TEST_OBS)
        half_life_s = math.nan if small else hl.half_life * view.bar_seconds
    rows = []
    if view.log_prices:
        rows.append(("hedge ratio (log Y on log X)", truth.hedge_ratio, hedge_est))
        intercept_est = pair.latest("intercept")
        rows.append(("intercept (log)", truth.intercept, intercept_est))
    else:
        # Raw prices: the model's local slope dY/dX = b * Y / X at the last prices.
        last = closes.iloc[-1]
        local = truth.hedge_ratio * last[view.name_y] / last[view.name_x]
        rows.append(("hedge ratio (log Y on log X)", truth.hedge_ratio, math.nan))
        rows.append(("hedge ratio in prices, b·Y/X at the last bar", local, hedge_est))
    rows.append(("half-life (s)", truth.half_life_s, half_life_s))
    rows.append(
        (
            f"half-life ({view.timeframe} bars)",
            truth.half_life_s / view.bar_seconds,
            half_life_s / view.bar_seconds,
        )
    )
    table = pd.DataFrame(rows, columns=["quantity", "true (simulator)", "estimate"])
    table["estimate / true"] = table["estimate"] / table["true (simulator)"]
    return table
