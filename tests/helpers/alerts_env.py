"""Real parts for the alert tests: a webhook, an SMTP server, rules and trades in a file.

- :class:`Webhook`: a local HTTP server that takes Apprise's ``json://`` posts, records
  each, and answers the first ``refuse`` of them with HTTP 500.
- :class:`Mailbox`: a local aiosmtpd SMTP server for ``mailto://``, keeping each message.
- :func:`add_rule`: a rule written as any client writes one (plain SQL).
- :func:`trades`: trades of one symbol through the real ``TradeWriter``, one a second.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from pairs_monitor.store.writer import TradeWriter


class Webhook:
    """``json://127.0.0.1:<port>/hook``: every post is kept in ``received`` (accepted or
    not, in order, as ``(status, payload)``); the first ``refuse`` get HTTP 500."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.received: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook._lock:
                    status = 500 if hook.refuse > 0 else 200
                    hook.refuse -= status == 500
                    hook.received.append((status, json.loads(body or b"{}")))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads ``received``

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for status, payload in self.received if status == 200]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """``mailto://127.0.0.1:<port>?...``: a local SMTP server keeping what it is sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                box.messages.append(message)
                return "250 Message accepted for delivery"

        # aiosmtpd checks its server by connecting to the port it was given: not 0.
        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?from=monitor@example.com&to=trader@example.com"
            "&mode=insecure"
        )

    def __enter__(self) -> Mailbox:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Tape:
    """Trades of symbols on venue ``sim``, written through ``writer``, one id after another."""

    def __init__(self, writer: TradeWriter) -> None:
        self.writer = writer
        self.next_id: dict[str, int] = {}

    def trade(self, symbol: str, price: float, qty: float = 0.1, at_s: float | None = None) -> None:
        """One trade now (or at ``at_s``), committed before returning."""
        trade_id = self.next_id.get(symbol, 1)
        self.next_id[symbol] = trade_id + 1
        when_us = int((time.time() if at_s is None else at_s) * 1_000_000)
        self.writer.put_trades([("sim", symbol, trade_id, when_us, price, qty, 0)])
        self.writer.flush(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)
