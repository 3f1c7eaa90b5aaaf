"""Issue 15's chaos test: the real daemon through a minute of random faults, tape exact.

The local server streams trades on two symbols for ``CHAOS_SECONDS`` while a seeded RNG
picks a fault every half second to two seconds: connections dropped, closed or announced
shut down, a silent socket, ranges withheld from the socket (only REST has them), REST
answering 5xx, 400, 429, an HTML page with status 200, resetting or stalling, REST pages
and socket frames with hostile values spliced in, the daemon stopped (SIGSTOP) for a few
seconds, killed with kill -9 or stopped with SIGTERM and started again. Then the stream
stops, a last few trades are published, and the stored tape must equal what the server
published, trade by trade, with nothing the exchange could not have sent.

``CHAOS_SEED=<n>`` replays another fault sequence; a failure prints the seed and the
faults played, with their times.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
from collections.abc import Callable

import orjson
import pytest

from tests.helpers import faults
from tests.helpers.binance_server import RESET, STALL, BinanceServer, make_trade
from tests.helpers.daemon import Daemon, assert_tape_complete, wait_complete

CHAOS_SECONDS = 60.0
SEED = int(os.environ.get("CHAOS_SEED", "15"))
RATE = 40.0  # trades a second, over both symbols
FINAL_WAIT_S = 120.0  # for the last catch-ups and gap fills once the faults stop

# Each fault with its weight.
FAULTS = {
    "drop": 3,
    "close-1001": 2,
    "server-shutdown": 1,
    "withhold": 4,
    "rest-5xx": 2,
    "rest-reset": 1,
    "rest-stall": 1,
    "rest-400": 1,
    "rest-429": 1,
    "silent-socket": 1,
    "rest-html-200": 1,
    "rest-hostile-items": 2,
    "hostile-frame": 4,
    "sigstop": 1,
    "kill-9": 1,
    "sigterm": 1,
}


class Chaos:
    """Plays faults on the server and the daemon; keeps the sequence for the report."""

    def __init__(self, server: BinanceServer, make: Callable[..., Daemon], rng: random.Random):
        self.server = server
        self.make = make
        self.rng = rng
        self.daemon = make(server).start()
        self.played: list[str] = []
        self.started = time.monotonic()
        self._mangles: list[Callable[[list[dict]], bytes]] = []
        server.rest_mangle = self._mangle

    def _mangle(self, items: list[dict]) -> bytes | None:
        """Each queued REST mangle spoils one page (the server's loop calls this)."""
        return self._mangles.pop(0)(items) if self._mangles else None

    def play(self, fault: str) -> None:
        server, rng = self.server, self.rng
        detail = ""
        if fault == "drop":
            server.drop()
        elif fault == "close-1001":
            server.close(1001, "going away")
        elif fault == "server-shutdown":
            server.server_shutdown()
        elif fault == "withhold":
            symbol = rng.choice(server.symbols)
            count = rng.randint(1, 1500)
            server.publish(symbol, count, live=False)
            detail = f"{symbol} {count}"
        elif fault == "rest-5xx":
            status = rng.choice([500, 502, 503])
            server.rest_failures.append(status)
            detail = str(status)
        elif fault == "rest-reset":
            server.rest_failures.append(RESET)
        elif fault == "rest-stall":
            server.rest_failures.append(STALL)
        elif fault == "rest-400":
            server.rest_errors += 1
        elif fault == "rest-429":
            server.rest_429 += 1  # with Retry-After: 1
        elif fault == "silent-socket":
            pause = rng.uniform(2.0, 5.0)  # the watchdog (3 s) may reconnect meanwhile
            server.set_silent(True)
            time.sleep(pause)
            server.set_silent(False)
            detail = f"{pause:.1f} s"
        elif fault == "rest-html-200":
            self._mangles.append(lambda items: b"<html><body>Just a moment...</body></html>")
        elif fault == "rest-hostile-items":
            # Its own RNG: the server's thread runs it whenever the page is asked for, and
            # drawing from the shared one there would make the fault sequence timing-bound.
            page_rng = random.Random(rng.getrandbits(32))
            self._mangles.append(functools.partial(self._hostile_page, page_rng))
        elif fault == "hostile-frame":
            template = make_trade("BTCUSDT", server.next_id["BTCUSDT"] + rng.randint(-5, 5))
            name, frame = rng.choice(sorted(faults.hostile_frames(template).items()))
            server.send_raw(frame)
            detail = name
        elif fault == "sigstop":
            pause = rng.uniform(2.0, 5.0)
            self.daemon.signal(signal.SIGSTOP)
            time.sleep(pause)
            self.daemon.signal(signal.SIGCONT)
            detail = f"{pause:.1f} s"
        elif fault == "kill-9":
            self.daemon.kill9()
            self.daemon = self.make(server).start()
        elif fault == "sigterm":
            code = self.daemon.stop(30)
            detail = f"exit {code}"
            assert code == 0, f"SIGTERM: the daemon exited {code}"
            self.daemon = self.make(server).start()
        self.played.append(f"{time.monotonic() - self.started:6.1f} s  {fault} {detail}")
        ended = self.daemon.process.poll()
        assert ended is None, f"the daemon ended by itself (exit {ended}) after {fault}"

    def _hostile_page(self, rng: random.Random, items: list[dict]) -> bytes:
        body = [orjson.dumps(item) for item in items]
        template = make_trade("BTCUSDT", self.server.next_id["BTCUSDT"] + 10)
        bad = [
            faults.rest_item_text(template, id=str(2**63)),
            faults.rest_item_text(template, price='"1e309"'),
            faults.rest_item_text(template, qty='"0"'),
            faults.rest_item_text(template, time=faults.far_future_ms()[1]),
            faults.rest_item_text(template, price=None),
            "null",
        ]
        for item in rng.sample(bad, 2):
            body.insert(rng.randrange(len(body) + 1), item.encode())
        return b"[" + b",".join(body) + b"]"

    def report(self) -> str:
        tail = "\n".join(self.daemon.log.splitlines()[-25:])
        played = "\n".join(self.played)
        return (
            f"chaos seed {SEED} (CHAOS_SEED={SEED} replays it); faults played:\n{played}\n"
            f"the daemon's log ends:\n{tail}"
        )


@pytest.mark.daemon
@pytest.mark.timeout(CHAOS_SECONDS + FINAL_WAIT_S + 120)
def test_chaos_minute_leaves_the_tape_exact(
    server: BinanceServer, daemon_factory: Callable[..., Daemon]
) -> None:
    rng = random.Random(SEED)
    server.resend_on_connect = 3  # duplicates after each connect, as Binance may send
    server.stall_s = 4.0  # beyond the daemon's 2 s connect/read timeout
    chaos = Chaos(server, daemon_factory, rng)
    names, weights = list(FAULTS), list(FAULTS.values())
    try:
        server.wait_clients(1)
        server.start_stream(RATE)
        while time.monotonic() - chaos.started < CHAOS_SECONDS:
            time.sleep(rng.uniform(0.5, 2.0))
            chaos.play(rng.choices(names, weights)[0])
        server.stop_stream()
        chaos.played.append(f"{time.monotonic() - chaos.started:6.1f} s  faults end")
        server.wait_clients(1, timeout=30)
        for symbol in server.symbols:  # a last live trade closes any withheld range
            server.publish(symbol, 3)
        wait_complete(chaos.daemon.db, server, timeout=FINAL_WAIT_S)
        assert_tape_complete(chaos.daemon.db, server)
        assert faults.bogus_rows(chaos.daemon.db) == []
        assert chaos.daemon.stop(30) == 0
    except (Exception, pytest.fail.Exception) as exc:  # pytest-timeout fails with the latter
        raise AssertionError(f"{exc}\n{chaos.report()}") from exc
    finally:
        server.rest_mangle = None
