"""Data tab: CSV export (bars with every analytic column, statistics table, raw ticks in
view) and the upload of an OHLC CSV to analyse data without the daemon."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from pairs_monitor.page import export, numbers, pipeline, queries, upload
from pairs_monitor.page.settings import (
    MAX_EXPORT_TICKS,
    MAX_UPLOAD_MB,
    MAX_UPLOAD_ROWS,
    PREVIEW_ROWS,
)
from pairs_monitor.page.tabs import Context, literal, md
from pairs_monitor.page.tabs.prices import leg_price_format
from pairs_monitor.page.text import utc


def render(ctx: Context) -> None:
    st.subheader("Export")
    _exports(ctx)
    st.divider()
    st.subheader("Upload an OHLC CSV or Binance's kline files")
    _upload(ctx)


def _exports(ctx: Context) -> None:
    view = ctx.view
    pair = ctx.pair()
    if view is None or pair is None:
        st.info("Nothing to export yet: a pair needs bars of two legs.")
        return
    if not pair.bars:
        st.info(f"Nothing to export yet: {md(pair.waiting)}")
        return
    # The file is built when its button is clicked: a day of 1-second bars is 2 million
    # numbers to write, seconds of work a control change on this tab would otherwise pay.
    preview = export.bars_frame(pair, last=PREVIEW_ROWS)
    index = pd.DatetimeIndex(next(iter(pair.bars.values())).index)
    name = export.file_name("bars", pair, index)
    st.download_button(
        "Download bars + analytics (CSV)",
        data=lambda: export.to_csv(export.bars_frame(pair)),
        file_name=name,
        mime="text/csv",
        key="dl_bars",
        on_click="ignore",
    )
    rows = len(export.bar_times(pair))
    st.caption(f"{literal(name)}: {rows:,} rows × {preview.shape[1]} columns. Last rows:")
    st.dataframe(
        preview,
        hide_index=True,
        key="export_preview",
        placeholder=numbers.DASH,
        column_config=preview_config(pair),
    )
    if pair.frame is not None:
        st.download_button(
            "Download statistics table (CSV)",
            # Built when clicked, as the bars' file is.
            data=lambda: export.to_csv(export.stats_frame(pipeline.stats_table(pair))),
            file_name=export.file_name("stats", pair, index),
            mime="text/csv",
            key="dl_stats",
            on_click="ignore",
        )
    else:
        st.caption(f"Statistics table: waiting ({md(pair.waiting)}).")
    recording = ctx.source.recording
    if recording is not None and pair.end_s is not None and len(index):
        start_us = int(index[0].value // 1000)
        end_us = pair.end_s * 1_000_000

        def ticks_csv() -> bytes:
            # Built only when clicked: up to MAX_EXPORT_TICKS rows per leg.
            frames = [recording.ticks(leg, start_us, end_us, MAX_EXPORT_TICKS) for leg in view.legs]
            ticks = pd.concat(frames).sort_values(["time", "venue", "symbol", "trade_id"])
            return export.to_csv(ticks)

        st.download_button(
            "Download raw ticks in view (CSV)",
            data=ticks_csv,
            file_name=export.file_name("ticks", pair, index),
            mime="text/csv",
            key="dl_ticks",
            on_click="ignore",
        )
        st.caption(
            f"Raw trades of both legs in the lookback, at most {MAX_EXPORT_TICKS:,} per leg; "
            f"columns {', '.join(queries.TICK_COLUMNS)}."
        )
        for name, tape_us in zip(
            view.names, (recording.tape_start_us(leg) for leg in view.legs), strict=True
        ):
            if tape_us is None:
                st.caption(f"{md(name)}: no trade is stored; its bars are from klines only.")
            elif tape_us > start_us:
                st.caption(
                    f"{md(name)}: ticks from {utc(tape_us // 1000)}; before that, bars from "
                    "klines only."
                )


def preview_config(pair: pipeline.PairData) -> dict[str, Any]:
    """Human headers with units for the export's preview; the file keeps its column names
    (``BTCUSDT_close``, ``zscore``: names a program reads)."""
    view = pair.view
    number = st.column_config.NumberColumn
    config: dict[str, Any] = {"time": st.column_config.TextColumn("Bar start (UTC)")}
    for leg, name in zip(view.legs, view.names, strict=True):
        price_format = leg_price_format(pair, leg, name)
        unit = numbers.price_unit(leg.symbol)
        for col, label in (("open", "open"), ("high", "high"), ("low", "low")):
            config[f"{name}_{col}"] = number(f"{name} {label} ({unit})", format=price_format)
        config |= {
            f"{name}_close": number(f"{name} close ({unit})", format=price_format),
            f"{name}_vwap": number(f"{name} VWAP ({unit})", format=price_format),
            f"{name}_volume": number(f"{name} volume (base)", format="localized"),
            f"{name}_trades": number(f"{name} trades", format="localized"),
            f"{name}_empty": st.column_config.CheckboxColumn(
                f"{name} no trade", help="No trade in the bar: its close is carried."
            ),
            f"{name}_from_klines": st.column_config.CheckboxColumn(
                f"{name} from klines", help="Some of the bar came from a Binance kline."
            ),
        }
    fitted = "log price" if view.log_prices else "price"
    config |= {
        "y": number(f"Y fitted ({fitted})", format="%.6g"),
        "x": number(f"X fitted ({fitted})", format="%.6g"),
        "hedge_ratio": number("Hedge ratio", format="%.6g"),
        "intercept": number("Intercept", format="%.6g"),
        "spread": number(f"Spread ({fitted})", format="%.6g"),
        "zscore": number("z-score (σ)", format="%.2f"),
        "corr": number("ρ of returns", format="%.3f"),
    }
    return config


def _upload(ctx: Context) -> None:
    st.file_uploader(
        "OHLC CSV or Binance kline file(s)",
        type=["csv", "zip", "checksum"],
        accept_multiple_files=True,
        key="upload",
        max_upload_size=MAX_UPLOAD_MB,
        help="Columns timestamp, symbol (optional), open, high, low, close, volume (optional); "
        "or data.binance.vision's klines (BTCUSDT-1m-2024-01.zip with its .CHECKSUM).",
    )
    st.caption(
        f"Up to {MAX_UPLOAD_MB} MB per file, {MAX_UPLOAD_ROWS:,} rows in all. "
        "Timestamps ISO-8601 (UTC unless an offset is given) or Unix seconds/ms/µs. "
        "Without a symbol column the file name is the symbol. Binance's kline files "
        "(data.binance.vision, `.zip` or `.csv`, spot or futures) are read as published; "
        "upload a zip's `.CHECKSUM` with it to have its sha256 checked. Example:"
    )
    st.code(upload.EXAMPLE, language="csv")
    if ctx.upload_error:
        st.error(f"Upload rejected: {md(ctx.upload_error)}")
    elif ctx.uploaded is not None:
        up = ctx.uploaded
        read = f"Read {up.rows:,} bars of {md(', '.join(up.frames))} from {md(', '.join(up.files))}"
        if up.interval:
            st.success(
                f"{read}: {up.interval} klines, opened over the whole file (data source "
                "**Uploaded CSV** in the sidebar; **Database** goes back)."
            )
        else:
            st.success(
                f"{read} ({up.bar_seconds} s bars). Choose **Uploaded CSV** as the data source "
                "in the sidebar to analyse it."
            )
        for note in up.notes:
            st.caption(md(note))
