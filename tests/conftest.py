"""Fixtures shared by the tests; helpers live in ``tests/helpers/``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import SYMBOLS, Daemon
from tests.helpers.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures: registered by being imported here


@pytest.fixture(autouse=True)
def _every_tab_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page computes only the open tab by default; most AppTests read several tabs from
    one run, so they run the page with every tab computed. The tests of the default set
    PAIRS_PAGE_TABS=open themselves (test_page_status, test_browser_page)."""
    monkeypatch.setenv("PAIRS_PAGE_TABS", "all")


@pytest.fixture
def server() -> Iterator[BinanceServer]:
    """The local Binance stand-in, listing the two symbols the daemon tests record."""
    srv = BinanceServer(SYMBOLS).start()
    yield srv
    srv.stop()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons on one database; any still running at the end are killed."""
    made: list[Daemon] = []

    def make(server: BinanceServer, *extra: str) -> Daemon:
        daemon = Daemon(tmp_path / "ticks.db", server, tmp_path / "ingest.log", list(extra))
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    if os.environ.get("INGEST_TEST_LOGS") and made:
        print(made[0].log)
