"""Hostile uploads: each is refused with a message naming the problem, cheaply, and the
rest of the page (every tab, the uploader itself) keeps drawing."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import upload
from pairs_monitor.page.settings import MAX_UPLOAD_SYMBOLS
from pairs_monitor.page.tabs import TAB_NAMES
from tests.helpers.page_db import build_pair_db

APP = str(Path(__file__).resolve().parent.parent / "app.py")
GOOD_ROW = "1714521600,BTCUSDT,1,1,1,1"


def refused(files: list[tuple[str, bytes]]) -> str:
    with pytest.raises(upload.UploadError) as info:
        upload.parse_files(files)
    return str(info.value)


@pytest.mark.parametrize(
    "header",
    ["timestamp,symbol,open,Open,high,low,close", "timestamp,symbol,open,open,high,low,close"],
)
def test_a_column_given_twice_is_named(header):
    content = f"{header}\n1714521600,BTCUSDT,1,1,1,1,1\n".encode()
    assert refused([("twice.csv", content)]) == (
        "twice.csv: column(s) open appear more than once (headers are case-insensitive); "
        "keep one of each"
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_an_infinite_timestamp_is_named_with_its_line(value):
    content = f"timestamp,symbol,open,high,low,close\n{GOOD_ROW}\n{value},ETHUSDT,1,1,1,1\n"
    message = refused([("inf.csv", content.encode())])
    assert message.startswith("inf.csv: 1 infinite timestamp(s), first at line(s) 3")


@pytest.mark.soak  # 2 s of building and reading 11 MB: out of the fast loop
def test_too_many_symbols_are_refused_before_any_per_row_work():
    rows = [f"{1714521600 + i},S{i},1,1,1,1" for i in range(500_000)]
    content = ("timestamp,symbol,open,high,low,close\n" + "\n".join(rows) + "\n").encode()
    assert len(content) > 11_000_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refused([("many.csv", content)])
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.startswith(f"many.csv: 500,000 symbols; at most {MAX_UPLOAD_SYMBOLS}")
    # Was 115 s and 2.1 GB (a frame per symbol, then the count); now read, count, refuse.
    assert seconds < 15, seconds
    assert peak < 400e6, peak


def test_the_symbol_limit_counts_over_every_file():
    def file(first: int, n: int) -> bytes:
        rows = [f"{1714521600 + i},S{first + i},1,1,1,1" for i in range(n)]
        return ("timestamp,symbol,open,high,low,close\n" + "\n".join(rows) + "\n").encode()

    half = MAX_UPLOAD_SYMBOLS // 2 + 1
    message = refused([("a.csv", file(0, half)), ("b.csv", file(half, half))])
    assert message.startswith(f"b.csv: {half} symbols; at most {MAX_UPLOAD_SYMBOLS}")


def error_texts(at: AppTest) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in at.error)


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("upload") / "ticks.db")


def assert_every_tab_drew(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.tabs] == list(TAB_NAMES)
    assert any(m.label == "z-score" for m in at.metric)  # the Live tab drew from the database
    assert at.file_uploader(key="upload") is not None


@pytest.mark.apptest
def test_a_broken_upload_leaves_every_tab_and_the_uploader_working(monkeypatch, pair_db):
    monkeypatch.setenv("TICKS_DB", str(pair_db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    content = b"timestamp,symbol,open,Open,high,low,close\n1714521600,BTCUSDT,1,1,1,1,1\n"
    at.file_uploader(key="upload").set_value(("twice.csv", content, "text/csv"))
    at.run()
    assert_every_tab_drew(at)
    assert "Upload rejected: twice.csv: column(s) open appear more than once" in error_texts(at)
    at.file_uploader(key="upload").set_value(None)  # the user clears it
    at.run()
    assert_every_tab_drew(at)
    assert "Upload rejected" not in error_texts(at)


@pytest.mark.apptest
def test_an_unforeseen_parser_failure_is_a_message_not_a_dead_page(monkeypatch, pair_db):
    """Whatever pandas trips on in a file, the page says so and draws on. (Nothing real
    fails this way once the known cases are checked, so the parser is made to fail.)"""

    def broken(files):
        raise TypeError("arg must be a list, tuple, 1-d array, or Series")

    monkeypatch.setattr(upload, "parse_files", broken)
    monkeypatch.setenv("TICKS_DB", str(pair_db))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.file_uploader(key="upload").set_value(("odd.csv", b"timestamp\n1\n", "text/csv"))
    at.run()
    assert_every_tab_drew(at)
    assert (
        "Upload rejected: the file could not be read (TypeError: arg must be a list"
        in error_texts(at)
    )
