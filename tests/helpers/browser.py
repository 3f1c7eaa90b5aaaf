"""The real page in headless Chromium: processes started on free ports and stopped whatever
happens, Debian's Chromium launched through Playwright, and the reads a browser test makes
of the page (a tab drawn, a metric's value, a select box picked)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository: where app.py and ingest.py are
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = ROOT / "test-output" / "browser"  # screenshots and downloads, kept after the run
SYMBOLS = ("BTCUSDT", "ETHUSDT")
VIEWPORT = {"width": 1500, "height": 1100}

# Apply to a browser test: it is skipped, not failed, where Chromium is not installed.
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(cmd: Sequence[str], log: Path) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group; stop that group on exit, always.

    :param cmd: the command, run from the repository.
    :param log: the file its stdout and stderr go to.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to ``proc``'s process group (the daemon's orderly stop), SIGKILL if it is
    still running 10 s later; nothing if it has already exited."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen, log: Path
) -> None:
    """Poll ``check`` until it is true; fail (with the log's tail) on a timeout or when
    ``proc`` exits first, and skip when it exited saying something is not implemented.

    :param what: named in the failure.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "not implemented" in log.read_text():
                pytest.skip(f"{what}: {log.read_text().strip().splitlines()[-1]}")
            pytest.fail(f"{what}: process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def page_up(port: int) -> bool:
    """True once Streamlit on ``port`` answers its health check."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
        return r.status == 200


def streamlit_cmd(port: int, db: Path) -> list[str]:
    """``streamlit run app.py`` on ``port`` over the database ``db``, headless."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--",
        "--db",
        str(db),
    ]


def daemon_cmd(db: Path, symbols: Sequence[str] = SYMBOLS, *extra: str) -> list[str]:
    """``ingest.py --source sim`` recording ``symbols`` into ``db``, with ``extra``
    arguments after them."""
    return [
        sys.executable,
        str(ROOT / "ingest.py"),
        "--source",
        "sim",
        "--symbols",
        *(s.lower() for s in symbols),
        "--db",
        str(db),
        *extra,
    ]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# What each tab draws once it has rendered (a text, or a CSS selector after "css="): the
# tests wait for it in the visible tab panel instead of sleeping a fixed time.
TAB_MARKERS = {
    "Watchlist": "Pair scan",
    "Live": "Feed health",
    "Prices": 'css=[data-testid="stPlotlyChart"]',
    "Pair": "Static fit",
    "Statistics": "Run the tests",
    "Backtest": "Total return",
    "Correlation": "Pair scanner",
    "Alerts": "New rule",
    "Data": "Download bars + analytics (CSV)",
}


def wait_for_tab(page: Any, name: str) -> bool:
    """True once the visible tab panel shows the tab's marker (within 20 s)."""
    panel = page.get_by_role("tabpanel")  # hidden panels are not in the accessibility tree
    marker = TAB_MARKERS[name]
    if marker.startswith("css="):
        target = panel.locator(marker[4:]).first
    else:
        target = panel.get_by_text(marker, exact=False).first
    try:
        target.wait_for(state="visible", timeout=20_000)
    except Exception:
        return False
    return True


def metric_value(page: Any, label: str) -> str:
    """The value shown by the first ``st.metric`` whose text holds ``label``."""
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=10_000).strip()


def choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    page.get_by_role("combobox", name=re.compile(re.escape(label))).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
