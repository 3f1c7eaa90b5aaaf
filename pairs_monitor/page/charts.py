"""Plotly figures. Each takes frames already computed by ``analytics`` and only draws them.

Stacked panels share their time axis (zoom one, the others follow); every figure keeps
Plotly's zoom, pan and hover. Symbols and every other stored text reach Plotly through
``text.plot`` (Plotly renders ``<a href>`` and other tags in titles, legends and labels).

Gaps are drawn as gaps: a bar with no trade has no candle, a line breaks where the data
has no row for longer than a price may be carried (:func:`with_breaks`), and the feed's
outages from the ``gaps`` table are shaded (:func:`outage_spans`). Price and spread axes
print plain decimals (``exponentformat="none"``), never SI prefixes such as ``55µ``.

A line of more rows than a chart has pixels is drawn from each pixel's lowest and highest
value (:func:`decimated`): every spike and every break is drawn, and Plotly writes a few
thousand points instead of a day of 1-second bars.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pairs_monitor.page import numbers
from pairs_monitor.page.settings import MAX_STALE_BARS
from pairs_monitor.page.text import plot

HEIGHT = 420
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}
_LAYOUT: dict[str, Any] = {
    "margin": _MARGIN,
    "hovermode": "x unified",
    "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    # Distinct hues (Plotly's dark template starts with two similar blues).
    "colorway": ["#4fc3f7", "#ffb74d", "#f06292", "#81c784", "#ba68c8", "#fff176"],
}
UP, DOWN = "#26a69a", "#ef5350"
OUTAGE_FILL = {"open": "rgba(239,83,80,0.18)", "abandoned": "rgba(239,83,80,0.18)"}
"""Shading of an outage by its status: red while trades are missing for good or still
missing; grey where klines stand in for them (``_KLINES_FILL``)."""
_KLINES_FILL = "rgba(158,158,158,0.16)"
LABEL_MARGIN = 86
"""Right margin (px) of a chart whose bands are labelled there: wide enough for
"entry −2.5", so no label sits on the data."""


@dataclass(frozen=True)
class Outage:
    """A span in which a leg's feed had no trades stored (a row of the ``gaps`` table)."""

    start: pd.Timestamp
    end: pd.Timestamp
    label: str  # what the shading says on hover, e.g. "BTCUSDT: gap open"
    status: str  # the gap's status: open, abandoned, or filled (covered by klines)
    leg: str = ""  # the name of the leg whose feed it was (``View.names``)


def outage_spans(
    gaps: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, name: str = ""
) -> list[Outage]:
    """The gaps of a leg (``queries.gaps`` rows) as time spans clipped to ``[start, end]``.

    A gap runs from the last stored trade before it (``after_us``) to the first after it
    (``before_us``); one still open with no trade after it yet runs to ``end``. A gap
    with no stored trade before it has no known start and is left out.

    :param name: the leg's name: each span's ``leg``, and put in front of its label.
    """
    spans = []
    for row in gaps.to_dict("records"):
        after_us: Any = row.get("after_us")
        before_us: Any = row.get("before_us")
        if numbers.missing(after_us):
            continue
        first = max(pd.Timestamp(int(after_us), unit="us", tz="UTC"), start)
        last = end
        if not numbers.missing(before_us):
            last = min(pd.Timestamp(int(before_us), unit="us", tz="UTC"), end)
        if last <= first:
            continue
        status, covered = str(row.get("status")), row.get("covered_by")
        what = f"gap {status}" + ("" if numbers.missing(covered) else f", bars from {covered}")
        spans.append(Outage(first, last, f"{name}: {what}" if name else what, status, name))
    return spans


@overload
def with_breaks(
    data: pd.Series, bar: pd.Timedelta | None = None, max_bars: int = 1
) -> pd.Series: ...


@overload
def with_breaks(
    data: pd.DataFrame, bar: pd.Timedelta | None = None, max_bars: int = 1
) -> pd.DataFrame: ...


def with_breaks(
    data: pd.DataFrame | pd.Series, bar: pd.Timedelta | None = None, max_bars: int = 1
) -> pd.DataFrame | pd.Series:
    """``data`` with a NaN row one bar after every row followed by a gap: Plotly then
    breaks the line there (``connectgaps`` is off) instead of drawing a straight line
    across a time with no data as if the market had moved along it.

    :param bar: the bar length; None: the median spacing of the index.
    :param max_bars: a step of up to this many bars is drawn joined (the pair analytics
        carry a leg's price over ``settings.MAX_STALE_BARS`` bars); a longer one breaks.
    """
    if len(data) < 2:
        return data
    index = pd.DatetimeIndex(data.index).as_unit("ns")
    steps = np.diff(index.asi8)
    step_ns = int(np.median(steps)) if bar is None else int(bar.value)
    if step_ns <= 0:
        return data
    before_gap = np.flatnonzero(steps > max_bars * step_ns)
    if not len(before_gap):
        return data
    breaks = index[before_gap] + pd.Timedelta(step_ns, unit="ns")
    if isinstance(data, pd.Series):
        filler: pd.DataFrame | pd.Series = pd.Series(np.nan, index=breaks, name=data.name)
    else:
        filler = pd.DataFrame(np.nan, index=breaks, columns=data.columns)
    return pd.concat([data, filler]).sort_index(kind="stable")


MAX_BUCKETS = 1_500
"""A line drawn from more rows than this many buckets holds is thinned to each bucket's
lowest and highest value (:func:`decimated`): about one bucket per pixel of a wide chart."""


@overload
def decimated(data: pd.Series, buckets: int = MAX_BUCKETS) -> pd.Series: ...


@overload
def decimated(data: pd.DataFrame, buckets: int = MAX_BUCKETS) -> pd.DataFrame: ...


def decimated(
    data: pd.DataFrame | pd.Series, buckets: int = MAX_BUCKETS
) -> pd.DataFrame | pd.Series:
    """The rows of ``data`` a line chart needs to look as it would with every row: the rows
    are cut into ``buckets`` runs of consecutive rows, and of each run only the rows holding
    a column's lowest and highest value and its first missing value are kept (with the
    first and last row). A spike of one bar is still drawn to its full height, and a break
    (a NaN row, :func:`with_breaks`) still breaks the line; Plotly then writes a few
    thousand points per trace instead of 86,400 (a day of 1-second bars), which cost most
    of a control change. The numbers shown elsewhere are computed on every row.

    Columns are thinned together (a row any of them needs is kept for all), so traces
    drawn from one call share their times.
    """
    rows = len(data)
    if rows <= 3 * buckets:
        return data
    values = data.to_numpy(dtype=float).reshape(rows, -1)
    bucket = np.arange(rows) * buckets // rows
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    keep = np.zeros(rows, dtype=bool)
    keep[[0, -1]] = True
    for column in values.T:
        missing = np.isnan(column)
        keep[_first_per_bucket(np.flatnonzero(missing), bucket)] = True
        for fill, extreme in ((np.inf, np.minimum), (-np.inf, np.maximum)):
            filled = np.where(missing, fill, column)
            reached = extreme.reduceat(filled, starts)
            hits = np.flatnonzero(filled == reached[bucket])
            keep[_first_per_bucket(hits, bucket)] = True
    return data[keep]


def _first_per_bucket(rows: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """The first of ``rows`` (ascending positions) in each bucket they fall in."""
    if not len(rows):
        return rows
    of_rows = bucket[rows]
    return rows[np.r_[True, of_rows[1:] != of_rows[:-1]]]


@overload
def _times(stamps: pd.Index) -> np.ndarray: ...


@overload
def _times(stamps: pd.Timestamp) -> pd.Timestamp: ...


def _times(stamps: pd.Index | pd.Timestamp) -> np.ndarray | pd.Timestamp:
    """Times as Plotly takes them fastest: naive UTC (``datetime64``). A tz-aware index
    reaches Plotly as an array of Timestamp objects that it deep-copies and writes one by
    one, about a second per trace of 86,400 bars; naive ones are copied whole."""
    if isinstance(stamps, pd.Timestamp):
        return stamps.tz_convert("UTC").tz_localize(None) if stamps.tz else stamps
    if isinstance(stamps, pd.DatetimeIndex) and stamps.tz is not None:
        return stamps.tz_convert("UTC").tz_localize(None).to_numpy()
    return np.asarray(stamps)


def _shade(fig: go.Figure, outages: Sequence[Outage], row: int | str | None = None) -> None:
    """Shade each outage across the figure (or one subplot row), under the traces."""
    for outage in outages:
        fill = OUTAGE_FILL.get(outage.status, _KLINES_FILL)
        kwargs = {} if row is None else {"row": row, "col": 1}
        fig.add_vrect(
            x0=_times(outage.start),
            x1=_times(outage.end),
            fillcolor=fill,
            line_width=0,
            layer="below",
            name=plot(outage.label),
            **kwargs,
        )


def _plain(fig: go.Figure, decimals: int | None = None, **selector: int) -> None:
    """Plain decimals on y axes (no SI prefix); ``decimals`` for the hover values."""
    hover = {} if decimals is None else {"hoverformat": numbers.d3(decimals)}
    fig.update_yaxes(exponentformat="none", separatethousands=True, **hover, **selector)


def candles(
    bars: pd.DataFrame,
    symbol: str,
    decimals: int | None = None,
    outages: Sequence[Outage] = (),
    unit: str | None = None,
) -> go.Figure:
    """Candlesticks with volume below, on one time axis. A bar with no trade has no
    candle (its close is only carried from the last trade); outages are shaded.

    :param decimals: the price's decimals (``numbers.price_decimals``); None: read off
        the bars.
    :param unit: what the price is quoted in; None: read off ``symbol``.
    """
    traded = ~bars["empty"].to_numpy(dtype=bool) if "empty" in bars else np.ones(len(bars), bool)
    prices = bars[["open", "high", "low", "close"]].where(
        pd.Series(traded, index=bars.index), axis=0
    )
    if decimals is None:
        decimals = numbers.price_decimals(prices.to_numpy().ravel())
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03
    )
    fig.add_trace(
        go.Candlestick(
            x=_times(bars.index),
            open=prices["open"],
            high=prices["high"],
            low=prices["low"],
            close=prices["close"],
            name=plot(symbol),
            increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1,
        col=1,
    )
    # One bar trace per colour: a list of 86,400 colours costs Plotly's validation ~5 s.
    rising = (bars["close"] >= bars["open"]).to_numpy()
    for picked, color in ((rising, UP), (~rising, DOWN)):
        fig.add_trace(
            go.Bar(
                x=_times(bars.index[picked]),
                y=bars["volume"].to_numpy()[picked],
                name="volume",
                marker_color=color,
            ),
            row=2,
            col=1,
        )
    _shade(fig, outages, row="all")
    fig.update_layout(
        title=plot(symbol), height=HEIGHT, xaxis_rangeslider_visible=False, showlegend=False
    )
    fig.update_layout(**_LAYOUT)
    unit = unit or numbers.price_unit(symbol)
    fig.update_yaxes(title_text=plot(f"price ({unit})"), row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    _plain(fig, decimals, row=1)
    return fig


def normalised(
    closes: pd.DataFrame, outages: Sequence[Outage] = (), max_bars: int = MAX_STALE_BARS
) -> go.Figure:
    """Both legs rebased to 100 at the first aligned bar, so their paths compare; the
    lines break where the closes have no row for more than ``max_bars`` bars."""
    fig = go.Figure()
    drawn = with_breaks(closes, max_bars=max_bars)
    for col in closes.columns:
        s = decimated(drawn[col])
        fig.add_trace(
            go.Scatter(
                x=_times(s.index), y=100 * s / closes[col].iloc[0], name=plot(col), mode="lines"
            )
        )
    _shade(fig, outages)
    fig.update_layout(title="Both legs, rebased to 100", height=HEIGHT - 80, **_LAYOUT)
    _plain(fig, 3)
    return fig


ENTRY_COLOR, EXIT_COLOR, MEAN_COLOR = "#ef5350", "#9e9e9e", "#616161"


def _level_lines(levels: Sequence[tuple[float, str | None, str]], axis: str = "") -> list[dict]:
    """Horizontal lines across a panel, one per ``(level, dash, colour)``, as layout shapes
    (``axis``: the panel's axis number, "" for the first). Put in with one layout update:
    ``add_hline`` validates and copies the layout's shapes on every call, about 6 ms each."""
    return [
        {
            "type": "line",
            "xref": f"x{axis} domain",
            "x0": 0,
            "x1": 1,
            "yref": f"y{axis}",
            "y0": level,
            "y1": level,
            "line": {"color": color, "dash": dash},
        }
        for level, dash, color in levels
    ]


def _band_labels(bands: Sequence[tuple[str, float, str]], axis: str = "") -> list[dict]:
    """Labels ``name ±level`` of each ``(name, level, colour)`` band in the right margin,
    beside the axis, where no data is drawn (a label inside the plot sits on the newest
    values); as layout annotations, for one update."""
    return [
        {
            "x": 1,
            "xref": "paper",
            "xanchor": "left",
            "xshift": 4,
            "y": sign * level,
            "yref": f"y{axis}",
            "text": f"{name} {sign * level:+g}".replace("-", "−"),
            "showarrow": False,
            "font": {"size": 11, "color": color},
        }
        for name, level, color in bands
        for sign in (1, -1)
    ]


def pair_panels(
    frame: pd.DataFrame,
    entry: float,
    exit_: float,
    title: str,
    spread_unit: str = "",
    spread_scale: float = 1.0,
    outages: Sequence[Outage] = (),
    max_bars: int = MAX_STALE_BARS,
) -> go.Figure:
    """Spread, z-score with entry/exit bands, and rolling correlation on one time axis.

    Each panel is named by its y-axis title (subplot titles sat on the lines below them);
    the bands are labelled in the right margin; lines break where the frame has no row
    for more than ``max_bars`` bars, and outages are shaded.

    :param spread_unit: y-axis title of the spread panel (e.g. ``"bps of log price"``).
    :param spread_scale: the spread is drawn times this (``1e4`` for a log spread in bps).
    """
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.35, 0.4, 0.25],
        vertical_spacing=0.04,
    )
    drawn = with_breaks(frame[["spread", "zscore", "corr"]], max_bars=max_bars)
    spread = decimated(drawn["spread"] * spread_scale)
    zscore, corr = decimated(drawn["zscore"]), decimated(drawn["corr"])
    fig.add_trace(go.Scatter(x=_times(spread.index), y=spread, name="spread"), row=1, col=1)
    fig.add_trace(go.Scatter(x=_times(zscore.index), y=zscore, name="z-score"), row=2, col=1)
    fig.add_trace(go.Scatter(x=_times(corr.index), y=corr, name="corr"), row=3, col=1)
    lines = [
        (sign * level, dash, color)
        for level, dash, color in ((entry, "dash", ENTRY_COLOR), (exit_, "dot", EXIT_COLOR))
        for sign in (1, -1)
    ]
    fig.update_layout(
        shapes=_level_lines(lines, "2"),
        annotations=_band_labels([("entry", entry, ENTRY_COLOR), ("exit", exit_, EXIT_COLOR)], "2"),
    )
    _shade(fig, outages, row="all")
    fig.update_yaxes(range=[-1.05, 1.05], title_text="ρ of returns", row=3, col=1)
    fig.update_yaxes(title_text=plot(f"spread ({spread_unit or 'price'})"), row=1, col=1)
    fig.update_yaxes(title_text="z-score (σ)", row=2, col=1)
    fig.update_layout(title=plot(title), height=720, **_LAYOUT)
    fig.update_layout(margin={**_MARGIN, "r": LABEL_MARGIN})
    _plain(fig, _spread_decimals(spread, spread_scale), row=1)
    _plain(fig, 2, row=2)
    return fig


def _spread_decimals(spread: pd.Series, scale: float) -> int | None:
    """Hover decimals of a spread: 2 in bps; else 4 significant digits of its largest
    size (a spread of a few 1e-7 BTC needs 10 decimals, one of 50 USDT two)."""
    if scale != 1.0:
        return 2
    largest = float(spread.abs().max()) if spread.notna().any() else float("nan")
    return numbers.significant_decimals(largest, 4) if largest == largest else None


def hedge_paths(
    paths: pd.DataFrame, unit: str = "hedge ratio", truth: float | None = None
) -> go.Figure:
    """Hedge ratio over time by each estimator; ``truth`` (simulated data) as a dotted line.

    Columns whose name contains ``σ`` (``pipeline.KALMAN_BAND``) are a band, drawn as
    thin dotted lines with the space between them shaded. Lines break where the pair has
    no row for more than ``settings.MAX_STALE_BARS`` bars.
    """
    fig = go.Figure()
    lines = [c for c in paths.columns if "σ" not in str(c)]
    band = [c for c in paths.columns if "σ" in str(c)]
    drawn = with_breaks(paths, max_bars=MAX_STALE_BARS)
    for col in lines:
        line = decimated(drawn[col])
        fig.add_trace(go.Scatter(x=_times(line.index), y=line, name=plot(col), mode="lines"))
    # The band's edges thinned together: the shading between them needs the same times.
    edges = decimated(drawn[band])
    for i, col in enumerate(band):
        fig.add_trace(
            go.Scatter(
                x=_times(edges.index),
                y=edges[col],
                name=plot(col),
                mode="lines",
                line={"width": 0.5, "dash": "dot", "color": "#9e9e9e"},
                fill="tonexty" if i else None,
                fillcolor="rgba(158,158,158,0.15)",
                showlegend=False,
            )
        )
    if truth is not None and len(paths):
        # A legend entry, not a label on the line: a label sat on the newest estimates.
        fig.add_trace(
            go.Scatter(
                x=_times(paths.index[[0, -1]]),
                y=[truth, truth],
                name=f"true (simulator) {truth:.4g}",
                mode="lines",
                line={"dash": "dot", "color": "#e0e0e0"},
                hoverinfo="skip",
            )
        )
    fig.update_layout(title="Hedge ratio over time", height=HEIGHT - 60, **_LAYOUT)
    fig.update_yaxes(title_text=plot(unit))
    _plain(fig)
    return fig


def live_z(
    frame: pd.DataFrame,
    entry: float,
    max_bars: int = MAX_STALE_BARS,
    outages: Sequence[Outage] = (),
) -> go.Figure:
    """A compact z-score trace for the live panel: the ±entry bands labelled in the right
    margin, the line broken where the frame has no row for more than ``max_bars`` bars,
    ``outages`` shaded.

    Drawn each second while a page is open, so only the trace is new each time: the layout
    is built (and validated by Plotly) once per entry level and outages, and the figure is
    put together from it unvalidated. Validating a whole new figure cost 6.7 ms of CPU a
    refresh, about an eighth of what a Live page costs its server."""
    z = decimated(with_breaks(frame["zscore"], max_bars=max_bars))
    trace = {
        "type": "scatter",
        "x": _times(z.index),
        "y": z.to_numpy(dtype=float),
        "name": "z",
        "mode": "lines",
    }
    # Plotly copies the layout it is given: the kept one never takes on a figure's changes.
    layout = _live_z_layout(entry, tuple(outages))
    return go.Figure({"data": [trace], "layout": layout}, _validate=False)


@functools.lru_cache(maxsize=16)
def _live_z_layout(entry: float, outages: tuple[Outage, ...]) -> dict[str, Any]:
    """The live z chart's layout as Plotly writes it (validated), for :func:`live_z`."""
    fig = go.Figure(go.Scatter(x=[], y=[], name="z", mode="lines"))
    fig.update_layout(
        height=240,
        showlegend=False,
        shapes=_level_lines(
            [(entry, "dash", ENTRY_COLOR), (-entry, "dash", ENTRY_COLOR), (0.0, None, MEAN_COLOR)]
        ),
        annotations=_band_labels([("entry", entry, ENTRY_COLOR)]),
        **{**_LAYOUT, "margin": {**_MARGIN, "r": LABEL_MARGIN}},
    )
    _shade(fig, outages)
    fig.update_yaxes(title_text="z (σ)")
    _plain(fig, 2)
    return fig.to_dict()["layout"]


def equity(curve: pd.Series | pd.DataFrame, title: str = "Equity") -> go.Figure:
    """Backtest equity curve, broken where the pair has no bar for more than
    ``settings.MAX_STALE_BARS`` bars."""
    fig = go.Figure()
    frame = with_breaks(
        curve.to_frame() if isinstance(curve, pd.Series) else curve, max_bars=MAX_STALE_BARS
    )
    for col in frame.columns:
        line = decimated(frame[col])
        fig.add_trace(go.Scatter(x=_times(line.index), y=line, name=plot(col), mode="lines"))
    fig.update_layout(title=plot(title), height=HEIGHT - 60, **_LAYOUT)
    fig.update_yaxes(title_text="equity")
    _plain(fig, 4)
    return fig


def heatmap(matrix: pd.DataFrame, title: str) -> go.Figure:
    """Correlation heatmap on a fixed -1..1 scale."""
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=[plot(c) for c in matrix.columns],
            y=[plot(i) for i in matrix.index],
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=matrix.round(2).to_numpy(),
            texttemplate="%{text}",
        )
    )
    height = max(320, 60 * len(matrix) + 120)
    fig.update_layout(title=plot(title), height=height, margin=_MARGIN)
    fig.update_yaxes(autorange="reversed")  # read like a matrix: first symbol on top
    return fig


def basis(basis_bps: pd.Series, rates: pd.Series, title: str) -> go.Figure:
    """A spot-perpetual pair: the basis per bar (bps) above the settled funding rates
    (bps, one bar each at its funding time), on one time axis."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.06,
    )
    basis_bps = decimated(with_breaks(basis_bps, max_bars=MAX_STALE_BARS))
    fig.add_trace(
        go.Scatter(x=_times(basis_bps.index), y=basis_bps, name="basis", mode="lines"), row=1, col=1
    )
    fig.update_layout(shapes=_level_lines([(0.0, None, MEAN_COLOR)]))
    colors = [UP if r >= 0 else DOWN for r in rates]
    fig.add_trace(
        go.Bar(x=_times(rates.index), y=1e4 * rates, name="funding", marker_color=colors),
        row=2,
        col=1,
    )
    # Axis titles name the panels: subplot titles sat on the lines of the panel below.
    fig.update_yaxes(title_text="basis (bps)", row=1, col=1)
    fig.update_yaxes(title_text="funding (bps)", row=2, col=1)
    fig.update_layout(title=plot(title), height=HEIGHT, **_LAYOUT)
    _plain(fig, 2)
    return fig
