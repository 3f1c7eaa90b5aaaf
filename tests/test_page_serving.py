"""Where the page listens: this machine only, unless the user says otherwise.

The page has no authentication, so the default bind is the loopback interface; the
project's ``.streamlit/config.toml``, ``make run`` (``scripts/run.sh``) and the README's
two-terminal command must all keep it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_browser import free_port

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def configured_address(home: Path) -> str | None:
    """``server.address`` as Streamlit reads it when started from the project folder
    (a fresh interpreter, a HOME without a user config)."""
    code = (
        "from streamlit import config\n"
        "config.get_config_options(force_reparse=True)\n"
        "print(config.get_option('server.address') or '')\n"
    )
    env = {**os.environ, "HOME": str(home)}
    env = {k: v for k, v in env.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None


def test_project_config_binds_to_loopback(tmp_path):
    assert configured_address(tmp_path) in LOOPBACK


def test_make_run_and_the_readme_keep_the_loopback_bind():
    run_sh = (ROOT / "scripts" / "run.sh").read_text()
    command = run_sh[run_sh.index('"$BIN/streamlit" run') :]
    addresses = re.findall(r"--server\.address[ =](\S+)", command)
    assert addresses and all(a.strip("\"'") in LOOPBACK for a in addresses), addresses
    for doc in ("README.md", "docs/page.md"):
        for line in (ROOT / doc).read_text().splitlines():
            if "streamlit run" in line and "--server.address" in line:
                value = re.search(r"--server\.address[ =](\S+)", line)
                assert value and value.group(1) in LOOPBACK, f"{doc}: {line}"


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A" and len(addr) == width:
                found.add(addr)
    return found


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}


@pytest.mark.daemon
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_streamlit_started_as_the_readme_says_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["HOME"] = str(tmp_path)
    log = tmp_path / "page.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--",
                "--db",
                str(tmp_path / "none.db"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        found: set[str] = set()
        while time.monotonic() < deadline and not found:
            assert proc.poll() is None, log.read_text()
            found = listening_addresses(port)
            time.sleep(0.2)
        assert found, f"nothing listens on {port}:\n{log.read_text()}"
        assert found <= LOOPBACK_HEX, found
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
