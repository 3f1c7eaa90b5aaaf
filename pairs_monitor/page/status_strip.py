"""The status strip above the tabs: for each leg on screen and for the daemon, whether the
data is live, stale (and since when), being retried, simulated or replayed, in colour.

It rereads three small rows every ``STATUS_REFRESH`` (a fragment of its own), whichever tab
is open, so a daemon stopped under an open page turns its legs stale within seconds. The
Live panel asks :func:`read` the same question to grey its figures when the data stopped.

Sources (docs/schema.md): ``feed_status`` (one row per venue and symbol, rewritten about
every second: ``source`` live/sim/replay, ``connected``, ``updated_ms``), ``writer_status``
(the writer's health) and ``ingest_runs`` (the daemon's starts and clean stops).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import streamlit as st

from pairs_monitor.clock import now_ms
from pairs_monitor.page import cache, queries
from pairs_monitor.page.settings import (
    LIVE_VENUES,
    STALE_STATUS_MS,
    STATUS_REFRESH,
    Leg,
)
from pairs_monitor.page.text import md, utc

# What each state means to a trader, and its colour (Streamlit's markdown badge colours).
COLOURS = {
    "live": "green",
    "running": "green",
    "retrying": "orange",
    "stale": "red",
    "simulated": "violet",
    "replayed": "blue",
    "stopped": "gray",
    "not recorded": "gray",
}


@dataclass(frozen=True)
class Badge:
    """One entry of the strip: what it is about, its state (a key of ``COLOURS``) and the
    detail that goes with it."""

    name: str
    state: str
    detail: str

    @property
    def colour(self) -> str:
        return COLOURS[self.state]

    def markdown(self) -> str:
        """The badge as Streamlit markdown, the name escaped."""
        return f":{self.colour}-badge[{md(self.name)}: {self.state}]"


@dataclass(frozen=True)
class Strip:
    """The strip for the legs on screen.

    :param stopped_s: when a leg on screen is stale, how long ago its newest data is (the
        oldest of the stale legs'); None while the data on screen is current.
    """

    legs: tuple[Badge, ...]
    daemon: Badge
    others: tuple[Badge, ...] = ()  # live venues retried while the simulator stands in
    stopped_s: float | None = None

    @property
    def badges(self) -> tuple[Badge, ...]:
        return (*self.legs, *self.others, self.daemon)


def _seconds(ms: float) -> str:
    return age_text(ms / 1000)


def age_text(seconds: float) -> str:
    """An age as a trader reads it: ``4.2 s``, ``42 s``, ``12 min``, ``5 h``, ``944 days``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:,.0f} days"


def _leg_badge(leg: Leg, row: tuple | None, now: int) -> tuple[Badge, float | None]:
    """A leg's badge, and how long ago its data stopped when it is stale."""
    if row is None:
        replayed = leg.venue not in LIVE_VENUES and leg.venue != "sim"
        if replayed:
            return Badge(leg.label, "replayed", "recorded data, no daemon feeding it now"), None
        return Badge(leg.label, "not recorded", "no daemon has reported this leg"), None
    _venue, _symbol, source, since_ms, connected, trade_us, reconnects, problem, updated_ms = row
    trade_ms = None if trade_us is None else trade_us / 1000
    trade = "no trade yet" if trade_ms is None else f"trade {_seconds(now - trade_ms)} ago"
    if source == "replay" or (leg.venue not in LIVE_VENUES and leg.venue != "sim"):
        return Badge(leg.label, "replayed", f"recorded data replayed; {trade}"), None
    status_age = now - updated_ms
    if status_age > STALE_STATUS_MS:
        stopped_ms = now - (trade_ms if trade_ms is not None else updated_ms)
        detail = (
            f"data stopped {_seconds(stopped_ms)} ago; the daemon last reported "
            f"{_seconds(status_age)} ago"
        )
        return Badge(leg.label, "stale", detail), stopped_ms / 1000
    if leg.venue == "sim":
        return Badge(leg.label, "simulated", f"simulated prices; {trade}"), None
    if source == "sim":
        detail = (
            f"live down since {utc(since_ms)}: the daemon keeps retrying while simulated "
            "prices (venue sim) stand in"
        )
        return Badge(leg.label, "retrying", detail), None
    if not connected:
        return Badge(leg.label, "retrying", f"reconnecting ({reconnects:,} so far); {trade}"), None
    detail = trade if not problem else f"{trade}; {problem}"
    return Badge(leg.label, "live", detail), None


def _daemon_badge(
    run: queries.IngestRun | None,
    writer: queries.WriterStatus | None,
    rows: Sequence[tuple],
    now: int,
) -> Badge:
    if run is None and writer is None:
        return Badge("daemon", "not recorded", "no daemon has written this database")
    if run is not None and run.stopped_ms is not None:
        return Badge("daemon", "stopped", f"stopped cleanly {utc(run.stopped_ms)}")
    pid = f"pid {run.pid}" if run is not None and run.pid is not None else "its process"
    if writer is not None and writer.state == "retrying":
        since = writer.failing_since_ms or writer.updated_ms
        return Badge("daemon", "retrying", f"cannot write to the database since {utc(since)}")
    # Its newest sign of life: the writer's row, else (before schema 3) its feeds' rows.
    reported = [writer.updated_ms] if writer is not None else [r[8] for r in rows]
    if reported and now - max(reported) > STALE_STATUS_MS:
        return Badge(
            "daemon",
            "stale",
            f"{pid} last reported {_seconds(now - max(reported))} ago: stopped, or the "
            "database is locked",
        )
    source = f", --source {run.source}" if run is not None else ""
    started = f", since {utc(run.started_ms)}" if run is not None else ""
    return Badge("daemon", "running", f"{pid}{source}{started}")


def read(
    rows: Sequence[tuple],
    run: queries.IngestRun | None,
    writer: queries.WriterStatus | None,
    legs: Sequence[Leg],
    now: int,
) -> Strip:
    """The strip from what the daemon wrote (no Streamlit, no SQL).

    :param rows: :func:`queries.strip_rows`.
    :param run: the newest ``ingest_runs`` row of any venue.
    :param writer: the ``writer_status`` row.
    :param legs: the legs on screen.
    :param now: this machine's clock, ms.
    """
    by_leg = {Leg(str(r[0]), str(r[1])): r for r in rows}
    badges, stopped = [], []
    for leg in legs:
        badge, stopped_s = _leg_badge(leg, by_leg.get(leg), now)
        badges.append(badge)
        if stopped_s is not None:
            stopped.append(stopped_s)
    on_screen = {leg.venue for leg in legs}
    others = []
    for venue in dict.fromkeys(str(r[0]) for r in rows):
        if venue in on_screen or venue not in LIVE_VENUES:
            continue
        fresh = [r for r in rows if r[0] == venue and now - r[8] <= STALE_STATUS_MS]
        standing_in = [r for r in fresh if r[2] == "sim"]
        if standing_in:
            since = min(r[3] for r in standing_in)
            others.append(
                Badge(
                    venue,
                    "retrying",
                    f"live down since {utc(since)}: the daemon keeps retrying while "
                    "simulated prices (venue sim) stand in",
                )
            )
    return Strip(
        tuple(badges),
        _daemon_badge(run, writer, rows, now),
        tuple(others),
        max(stopped) if stopped else None,
    )


def current(db_path: str, legs: Sequence[Leg]) -> Strip:
    """The strip now, read on the page's read-only connection."""
    db = cache.read_db(db_path)
    rows = db.run(queries.strip_rows)
    run = db.run(queries.latest_run, None)
    writer = db.run(queries.writer_status)
    return read(rows, run, writer, legs, now_ms())


def render(db_path: str, legs: Sequence[Leg]) -> None:
    """The strip, refreshed on its own every ``STATUS_REFRESH``."""
    _strip(db_path, tuple(legs))


@st.fragment(run_every=STATUS_REFRESH)
def _strip(db_path: str, legs: tuple[Leg, ...]) -> None:
    try:
        strip = current(db_path, legs)
    except (sqlite3.Error, psycopg.Error) as exc:
        st.caption(f"Status could not be read this refresh ({md(exc)}); retrying.")
        return
    with st.container(key="status_strip"):
        st.markdown(" ".join(b.markdown() for b in strip.badges))
        # A fixed height: details growing a line (a longer age, a leg going stale) must not
        # move the page below; a longer text scrolls inside.
        with st.container(height=DETAILS_PX, border=False):
            st.caption(" · ".join(f"**{md(b.name)}**: {md(b.detail)}" for b in strip.badges))


DETAILS_PX = 64  # two lines of caption and the container's padding
