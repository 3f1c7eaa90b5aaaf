"""The view in the page's address, so a link reopens the same pair and settings.

The page writes the view into the query string whenever it changes
(``?y=binance-spot:ETHUSDT&x=binance-spot:BTCUSDT&timeframe=1m&lookback=24h&window=60&method=ols&log=1&z_entry=2&z_exit=0.5``)
and reads it once, when a session starts, before the sidebar draws. Every parameter is
optional: a link without them (every link from before) opens the defaults.

A link is input from anyone who can send one: each value is checked against what the
sidebar offers (a leg of this database, a timeframe, a lookback, a number within the
widget's range) and a value that is not is refused with a message naming it (shown as
text, never rendered) while the page uses the default in its place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from pairs_monitor.page.settings import (
    HEDGE_METHODS,
    LOOKBACKS,
    MAX_WINDOW_BARS,
    MIN_WINDOW_BARS,
    TIMEFRAMES,
    Leg,
    View,
)
from pairs_monitor.page.text import literal

# Parameter -> what the sidebar calls it, for the messages.
PARAMS: dict[str, str] = {
    "y": "Y leg",
    "x": "X leg",
    "timeframe": "timeframe",
    "lookback": "lookback",
    "window": "rolling window",
    "method": "hedge method",
    "log": "log prices",
    "z_entry": "z entry",
    "z_exit": "z exit",
}
Z_ENTRY_RANGE = (0.1, 10.0)  # the sidebar's number inputs' ranges
Z_EXIT_RANGE = (0.0, 10.0)
MAX_VALUE_CHARS = 200  # longer values are refused before any other check
SHOWN_CHARS = 60  # a refused value is quoted up to this many characters
# Streamlit's own parameters (an embedded page): neither ours nor refused.
STREAMLIT_PARAMS = ("embed", "embed_options")
OPENED_KEY = "link_opened"  # session key: the link was read (once per session)
REFUSED_KEY = "link_refused"  # session key: (messages, the address of the view opened)

_INTEGER = re.compile(r"[0-9]{1,6}")
_DECIMAL = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


def lookback_token(label: str) -> str:
    """``5 min`` -> ``5m``, ``24 h`` -> ``24h``, ``3 days`` -> ``3d``: a lookback as the
    address writes it."""
    number, unit = label.split(" ")
    return number + {"min": "m", "h": "h", "days": "d"}[unit]


LOOKBACK_TOKENS: dict[str, str] = {lookback_token(label): label for label in LOOKBACKS}
METHOD_LABELS: dict[str, str] = {method: label for label, method in HEDGE_METHODS.items()}


def leg_param(leg: Leg) -> str:
    """``binance-spot:BTCUSDT``: a leg as the address writes it."""
    return f"{leg.venue}:{leg.symbol}"


def params_of(view: View) -> dict[str, str]:
    """The address of ``view``: every parameter of :data:`PARAMS` (the lookback only when
    it is one of the sidebar's)."""
    params = {"y": leg_param(view.leg_y), "x": leg_param(view.leg_x)}
    params["timeframe"] = view.timeframe
    lookback = next((label for label, s in LOOKBACKS.items() if s == view.lookback_s), None)
    if lookback is not None:
        params["lookback"] = lookback_token(lookback)
    params["window"] = str(view.window)
    params["method"] = view.method
    params["log"] = "1" if view.log_prices else "0"
    params["z_entry"] = f"{view.z_entry:g}"
    params["z_exit"] = f"{view.z_exit:g}"
    return params


@dataclass
class Opened:
    """What a link asks for: the sidebar's widget values to set (session-state keys of
    ``sidebar.py``) and a message per value refused."""

    state: dict[str, Any] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    @property
    def has_legs(self) -> bool:
        return "y" in self.state or "x" in self.state


def _quoted(value: str) -> str:
    shown = value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
    return literal(shown)


def _number(text: str, pattern: re.Pattern[str], low: float, high: float) -> float | None:
    if not pattern.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) and low <= value <= high else None


def read(params: Mapping[str, str], legs: Sequence[Leg]) -> Opened:
    """Check a link's parameters against what the sidebar offers.

    :param params: the query string (each parameter's last value).
    :param legs: every leg of the database.
    """
    opened = Opened()
    known = set(legs)
    venues = list(dict.fromkeys(leg.venue for leg in sorted(known)))

    def refuse(name: str, value: str, why: str) -> None:
        opened.refused.append(
            f"the link's {PARAMS[name]} {_quoted(value)} was refused ({why}); "
            "the page uses its default instead"
        )

    unknown = [name for name in params if name not in PARAMS and name not in STREAMLIT_PARAMS]
    if unknown:
        names = ", ".join(_quoted(name) for name in sorted(unknown)[:5])
        opened.refused.append(f"the link's parameter(s) {names} are not the page's: ignored")
    for name in PARAMS:
        value = params.get(name)
        if value is None:
            continue
        if len(value) > MAX_VALUE_CHARS:
            refuse(name, value, f"longer than {MAX_VALUE_CHARS} characters")
        elif name in ("y", "x"):
            venue, _, symbol = value.rpartition(":")
            leg = Leg(venue, symbol)
            if leg not in known:
                refuse(name, value, "no such leg in this database; a leg is written `VENUE:SYMBOL`")
            elif (
                name == "x"
                and opened.state.get("y") == symbol
                and opened.state.get("venue") == venue
            ):
                refuse(name, value, "the same leg as Y")
            elif name == "y":
                opened.state["venue"], opened.state["y"] = venue, symbol
            else:
                y_venue = opened.state.get("venue", venues[0] if venues else venue)
                opened.state["venue_x"] = None if venue == y_venue else venue
                opened.state["x"] = symbol
        elif name == "timeframe":
            if value in TIMEFRAMES:
                opened.state["timeframe"] = value
            else:
                refuse(name, value, f"one of {', '.join(TIMEFRAMES)}")
        elif name == "lookback":
            if value in LOOKBACK_TOKENS:
                opened.state["lookback"] = LOOKBACK_TOKENS[value]
            else:
                refuse(name, value, f"one of {', '.join(LOOKBACK_TOKENS)}")
        elif name == "window":
            window = _number(value, _INTEGER, MIN_WINDOW_BARS, MAX_WINDOW_BARS)
            if window is None:
                refuse(name, value, f"a whole number of bars, {MIN_WINDOW_BARS} to "
                       f"{MAX_WINDOW_BARS:,}")  # fmt: skip
            else:
                opened.state["window"] = int(window)
        elif name == "method":
            if value in METHOD_LABELS:
                opened.state["method"] = METHOD_LABELS[value]
            else:
                refuse(name, value, f"one of {', '.join(METHOD_LABELS)}")
        elif name == "log":
            if value in ("0", "1"):
                opened.state["log_prices"] = value == "1"
            else:
                refuse(name, value, "1 or 0")
        else:
            low, high = Z_ENTRY_RANGE if name == "z_entry" else Z_EXIT_RANGE
            z = _number(value, _DECIMAL, low, high)
            if z is None:
                refuse(name, value, f"a number from {low:g} to {high:g}")
            else:
                opened.state[name] = z
    return opened


def open_link(legs: Sequence[Leg]) -> Opened | None:
    """Once per session, before the sidebar draws: set the sidebar's widgets from the
    address. None on every later run (the sidebar's own state rules then)."""
    if st.session_state.get(OPENED_KEY):
        return None
    st.session_state[OPENED_KEY] = True
    params = {name: st.query_params[name] for name in st.query_params}
    opened = read(params, legs)
    for key, value in opened.state.items():
        st.session_state[key] = value
    if opened.refused:
        st.session_state[REFUSED_KEY] = (opened.refused, None)
    return opened


def write(view: View) -> None:
    """Put ``view`` in the address when it differs from what is there; until the view
    changes, say what the link that opened the session had refused."""
    params = params_of(view)
    refused = st.session_state.get(REFUSED_KEY)
    if refused:
        messages, opened_params = refused
        if opened_params is None:  # the first view drawn is the one the link opened
            st.session_state[REFUSED_KEY] = (messages, params)
            opened_params = params
        if opened_params == params:
            st.warning("**Link**: " + "; ".join(messages) + ".", icon="🔗")
        else:
            del st.session_state[REFUSED_KEY]
    current = {name: st.query_params[name] for name in st.query_params}
    if current != params:
        st.query_params.from_dict(params)
