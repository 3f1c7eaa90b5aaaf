"""Plotly figures. Each takes frames already computed by ``analytics`` and only draws them.

Stacked panels share their time axis (zoom one, the others follow); every figure keeps
Plotly's zoom, pan and hover. Symbols and every other stored text reach Plotly through
``text.plot`` (Plotly renders ``<a href>`` and other tags in titles, legends and labels).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pairs_monitor.page.text import plot

HEIGHT = 420
_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "hovermode": "x unified",
    "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    # Distinct hues (Plotly's dark template starts with two similar blues).
    "colorway": ["#4fc3f7", "#ffb74d", "#f06292", "#81c784", "#ba68c8", "#fff176"],
}
UP, DOWN = "#26a69a", "#ef5350"


def candles(bars: pd.DataFrame, symbol: str) -> go.Figure:
    """Candlesticks with volume below, on one time axis."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03
    )
    fig.add_trace(
        go.Candlestick(
            x=bars.index,
            open=bars["open"],
            high=bars["high"],
            low=bars["low"],
            close=bars["close"],
            name=plot(symbol),
            increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1,
        col=1,
    )
    colors = [UP if c >= o else DOWN for o, c in zip(bars["open"], bars["close"], strict=True)]
    fig.add_trace(
        go.Bar(x=bars.index, y=bars["volume"], name="volume", marker_color=colors),
        row=2,
        col=1,
    )
    fig.update_layout(
        title=plot(symbol), height=HEIGHT, xaxis_rangeslider_visible=False, showlegend=False
    )
    fig.update_layout(**_LAYOUT)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    return fig


def normalised(closes: pd.DataFrame) -> go.Figure:
    """Both legs rebased to 100 at the first aligned bar, so their paths compare."""
    fig = go.Figure()
    for col in closes.columns:
        s = closes[col]
        fig.add_trace(go.Scatter(x=s.index, y=100 * s / s.iloc[0], name=plot(col), mode="lines"))
    fig.update_layout(title="Both legs, rebased to 100", height=HEIGHT - 80, **_LAYOUT)
    return fig


def pair_panels(
    frame: pd.DataFrame, entry: float, exit_: float, title: str, spread_unit: str = ""
) -> go.Figure:
    """Spread, z-score with entry/exit bands, and rolling correlation on one time axis.

    :param spread_unit: y-axis title of the spread panel (e.g. ``"log price"``).
    """
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.35, 0.4, 0.25],
        vertical_spacing=0.04,
        subplot_titles=("spread", "z-score", "rolling correlation of returns"),
    )
    fig.add_trace(go.Scatter(x=frame.index, y=frame["spread"], name="spread"), row=1, col=1)
    fig.add_trace(go.Scatter(x=frame.index, y=frame["zscore"], name="z-score"), row=2, col=1)
    for level, dash, label in ((entry, "dash", "entry"), (exit_, "dot", "exit")):
        for sign in (1, -1):
            fig.add_hline(
                y=sign * level,
                line_dash=dash,
                line_color="#ef5350" if label == "entry" else "#9e9e9e",
                annotation_text=f"{label} ±{level:g}" if sign > 0 else "",
                row=2,
                col=1,
            )
    fig.add_trace(go.Scatter(x=frame.index, y=frame["corr"], name="corr"), row=3, col=1)
    fig.update_yaxes(range=[-1.05, 1.05], title_text="ρ", row=3, col=1)
    fig.update_yaxes(title_text=plot(spread_unit or "spread"), row=1, col=1)
    fig.update_yaxes(title_text="z (σ)", row=2, col=1)
    fig.update_layout(title=plot(title), height=720, **_LAYOUT)
    return fig


def hedge_paths(
    paths: pd.DataFrame, unit: str = "hedge ratio", truth: float | None = None
) -> go.Figure:
    """Hedge ratio over time by each estimator; ``truth`` (simulated data) as a dotted line.

    Columns whose name contains ``σ`` (``pipeline.KALMAN_BAND``) are a band, drawn as
    thin dotted lines with the space between them shaded.
    """
    fig = go.Figure()
    lines = [c for c in paths.columns if "σ" not in str(c)]
    band = [c for c in paths.columns if "σ" in str(c)]
    for col in lines:
        fig.add_trace(go.Scatter(x=paths.index, y=paths[col], name=plot(col), mode="lines"))
    for i, col in enumerate(band):
        fig.add_trace(
            go.Scatter(
                x=paths.index,
                y=paths[col],
                name=plot(col),
                mode="lines",
                line={"width": 0.5, "dash": "dot", "color": "#9e9e9e"},
                fill="tonexty" if i else None,
                fillcolor="rgba(158,158,158,0.15)",
                showlegend=False,
            )
        )
    if truth is not None:
        fig.add_hline(
            y=truth,
            line_dash="dot",
            line_color="#e0e0e0",
            annotation_text=f"true (simulator) {truth:.4g}",
        )
    fig.update_layout(title="Hedge ratio over time", height=HEIGHT - 60, **_LAYOUT)
    fig.update_yaxes(title_text=plot(unit))
    return fig


def live_z(frame: pd.DataFrame, entry: float) -> go.Figure:
    """A compact z-score trace for the live panel."""
    fig = go.Figure(go.Scatter(x=frame.index, y=frame["zscore"], name="z", mode="lines"))
    for sign in (1, -1):
        fig.add_hline(y=sign * entry, line_dash="dash", line_color="#ef5350")
    fig.add_hline(y=0, line_color="#616161")
    fig.update_layout(height=240, showlegend=False, **{**_LAYOUT, "margin": _LAYOUT["margin"]})
    fig.update_yaxes(title_text="z (σ)")
    return fig


def equity(curve: pd.Series | pd.DataFrame, title: str = "Equity") -> go.Figure:
    """Backtest equity curve."""
    fig = go.Figure()
    frame = curve.to_frame() if isinstance(curve, pd.Series) else curve
    for col in frame.columns:
        fig.add_trace(go.Scatter(x=frame.index, y=frame[col], name=plot(col), mode="lines"))
    fig.update_layout(title=plot(title), height=HEIGHT - 60, **_LAYOUT)
    fig.update_yaxes(title_text="equity")
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
    fig.update_layout(title=plot(title), height=height, margin=_LAYOUT["margin"])
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
        subplot_titles=("basis (perp − spot) / spot", "settled funding rate"),
    )
    fig.add_trace(
        go.Scatter(x=basis_bps.index, y=basis_bps, name="basis", mode="lines"), row=1, col=1
    )
    fig.add_hline(y=0, line_color="#616161", row=1, col=1)
    colors = [UP if r >= 0 else DOWN for r in rates]
    fig.add_trace(
        go.Bar(x=rates.index, y=1e4 * rates, name="funding", marker_color=colors), row=2, col=1
    )
    fig.update_yaxes(title_text="bps", row=1, col=1)
    fig.update_yaxes(title_text="bps", row=2, col=1)
    fig.update_layout(title=plot(title), height=HEIGHT, **_LAYOUT)
    return fig
