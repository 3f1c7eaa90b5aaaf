"""Stored text made safe for where the page shows it.

Symbols, venues, error messages, rule descriptions and file names come from the database,
an exchange or an upload: anyone who can put a trade in the tape chooses them. Streamlit
renders markdown in ``st.markdown``, captions, alerts, toasts, metric and expander labels,
and Plotly renders a subset of HTML (``<a href>`` included) in titles, legends and tick
labels. Every stored string goes through one of these before it is shown there:

- :func:`md` for markdown: every ASCII punctuation character backslash-escaped (CommonMark
  lets any of them be escaped), so ``![x](http://...)`` is shown as those characters, not
  fetched as an image; links, emphasis, HTML, ``$`` (LaTeX) and ``:color[...]`` alike.
- :func:`literal` for an inline code span (paths, error texts).
- :func:`plot` for Plotly text: ``<``, ``>`` and ``&`` as entities.
"""

from __future__ import annotations

import html
import re
import string
from datetime import UTC, datetime

_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")


def md(value: object) -> str:
    """``value`` as text for Streamlit markdown: shown exactly, never interpreted.

    Line breaks stay line breaks (hard breaks inside one paragraph): with every punctuation
    character escaped, no line can open a heading, list, quote or fence.
    """
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def literal(text: object) -> str:
    """``text`` as an inline code span, so Streamlit's markdown shows it as it is:
    markdown, HTML, ``$`` (LaTeX), ``:emoji:`` and ``:color[...]`` inside stay plain text.

    The fence is one backtick longer than the longest run of backticks in ``text``, and
    the spaces around it are the ones CommonMark strips, so any text fits.
    """
    text = str(text).replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def utc(ms: int | float) -> str:
    """A stored time (milliseconds since 1970) as ``YYYY-MM-DD HH:MM:SS UTC``; one outside
    what a calendar can hold (a bad clock, a corrupt row) is said as such, never raised."""
    try:
        return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC"
    except (OverflowError, OSError, ValueError):
        return f"an out-of-range time ({ms:,.0f} ms since 1970)"


def plot(value: object) -> str:
    """``value`` as Plotly text (titles, trace names, tick labels): no tags, no links."""
    return html.escape(str(value), quote=False)
