"""``make run``'s script when its terminal closes: SIGHUP to the whole process group.

The page is stood in for by ``sleep`` (``BIN`` points at a folder holding ``python``, the
project's venv, and a ``streamlit`` that sleeps); the daemon is the real one, simulating.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.daemon import ROOT, query, wait_for

pytestmark = pytest.mark.daemon


def fake_bin(folder: Path) -> Path:
    folder.mkdir()
    (folder / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (folder / "streamlit").write_text("#!/bin/sh\nexec sleep 600\n")
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


def trades(db: Path) -> int:
    try:
        return query(db, "SELECT count(*) FROM trades")[0][0]
    except Exception:
        return 0


def test_closing_the_terminal_flushes_the_daemon_and_waits_for_it(tmp_path):
    db = tmp_path / "data" / "ticks.db"
    env = {
        **os.environ,
        "BIN": str(fake_bin(tmp_path / "bin")),
        "DB": str(db),
        "SOURCE": "sim",
    }
    out = (tmp_path / "out.txt").open("w")
    script = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's session has
        # SIGHUP at its default, as in a terminal (a suite run under nohup passes it on
        # ignored, and bash and the daemon then leave it ignored).
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: trades(db) > 0, 30, "the daemon's first trades")
        os.killpg(script.pid, signal.SIGHUP)  # the terminal closed
        try:
            status = script.wait(30)
        except subprocess.TimeoutExpired:
            daemon_log = db.parent / "ingest.log"
            pytest.fail(
                f"run.sh did not exit 30 s after SIGHUP; it printed:\n"
                f"{(tmp_path / 'out.txt').read_text()}\nthe daemon's log:\n"
                f"{daemon_log.read_text() if daemon_log.exists() else '(none)'}"
            )
        assert status == 129
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        out.close()
    printed = (tmp_path / "out.txt").read_text()
    assert "ingest daemon exited with status 0" in printed, printed
    log = (tmp_path / "data" / "ingest.log").read_text()
    assert "SIGHUP received: stopping" in log
    stored = int(log.split("stopped cleanly: ")[1].split(" trades")[0])
    assert stored == trades(db) > 0  # everything the run counted is in the file
