"""The daemon judges alert rules with no page open and delivers them (issue 11, item 1 and 2).

``ingest.py --source sim --notify json://...`` runs as a process; a rule is inserted with
plain SQL while it runs; the local webhook must receive the firing, and the database hold it
once. The ``alerts`` subcommand of ``ingest.py`` lists the rule with its state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.alerts_env import Webhook, wait_for
from tests.helpers.either_store import add_rule, rows

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.daemon


def _start(db: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "ingest.py", "--source", "sim", "--symbols", "btcusdt", "ethusdt"]
    cmd += ["--db", str(db), "--log-file", str(log), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _last_close(db: Path, symbol: str) -> float | None:
    if not db.exists():
        return None
    try:
        found = rows(
            db,
            "SELECT close FROM bars_1s WHERE venue = 'sim' AND symbol = ? "
            "ORDER BY bar_time_s DESC LIMIT 1",
            (symbol,),
        )
    except Exception:  # the schema is not there yet
        return None
    return found[0][0] if found else None


def test_the_daemon_alone_fires_a_rule_written_while_it_runs_and_delivers_it(tmp_path: Path):
    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    with Webhook(refuse=1) as hook:
        # A URL may carry a secret (here a basic-auth password): it must never be logged.
        url = hook.url.replace("json://", "json://trader:s3cret-pw@")
        proc = _start(db, log, "--notify", url)
        try:
            price = wait_for(lambda: _last_close(db, "ETHUSDT"), 30, "simulated bars")
            # Already past its threshold: the first judgement fires it.
            rule_id = add_rule(db, "price_above", "ETHUSDT", price * 0.5, price * 0.4)
            wait_for(hook.accepted, 20, "a delivery after one refusal")
            assert [status for status, _ in hook.received][:2] == [500, 200]
            message = hook.accepted()[0]["message"]
            assert f"Rule {rule_id}, ETHUSDT on sim: price above" in message
            ((count, value),) = rows(db, "SELECT count(*), max(value) FROM alert_events")
            assert count == 1 and value > price * 0.5
            wait_for(
                lambda: rows(db, "SELECT status FROM alert_deliveries") == [("sent",)],
                10,
                "the delivery recorded as sent",
            )
            listed = subprocess.run(
                [sys.executable, "ingest.py", "alerts", "--db", str(db), "list"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert listed.returncode == 0, listed.stderr
            (line,) = [ln for ln in listed.stdout.splitlines() if ln.split()[0] == str(rule_id)]
            assert "price above" in line and "ETHUSDT on sim" in line and "fired" in line
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-2000:] + log.read_text()[-2000:]
    assert "alerts are delivered to" in log.read_text()
    assert "s3cret-pw" not in log.read_text() and "s3cret-pw" not in out.decode()


def test_a_notify_url_apprise_does_not_understand_is_a_usage_error(tmp_path: Path):
    proc = _start(tmp_path / "ticks.db", tmp_path / "ingest.log", "--notify", "nosuch://x")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--notify: Apprise does not understand a URL of scheme 'nosuch'" in out.decode()
    assert not (tmp_path / "ticks.db").exists()  # refused before anything started
