"""What the code relies on in its dependencies beyond their public API.

``LiveWebSocket`` (pairs_monitor/ingest/binance/ws.py) overrides websocket-client's
private ``WebSocket._recv`` so that the socket is read 64 KB at a time instead of three
system calls a frame, and wraps the private ``frame_buffer.recv_length`` to refuse a frame
over ``MAX_FRAME_BYTES`` from its header. Nothing public promises either; pyproject.toml
caps websocket-client below 2, and these tests turn red on a release that stops calling
the hooks, against a real local WebSocket server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import websocket
from websockets.sync.server import ServerConnection, serve

from pairs_monitor.ingest.binance.ws import (
    MAX_FRAME_BYTES,
    AttemptLimiter,
    FrameTooLarge,
    LiveWebSocket,
    StreamConnection,
)

READ_64_KB = 1 << 16


@dataclass
class RawReads:
    """The reads the hook made on the socket: the size asked for and the bytes returned."""

    asked: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)


@pytest.fixture
def raw_reads(monkeypatch: pytest.MonkeyPatch) -> RawReads:
    """Record every call of websocket-client's own ``_recv``, which the hook reads through."""
    reads = RawReads()
    original = websocket.WebSocket._recv

    def recording_recv(self: websocket.WebSocket, bufsize: int) -> bytes:
        data = original(self, bufsize)
        reads.asked.append(bufsize)
        reads.returned.append(len(data))
        return data

    monkeypatch.setattr(websocket.WebSocket, "_recv", recording_recv)
    return reads


@dataclass
class FrameServer:
    """A local WebSocket server that sends ``frames`` to each client, then holds on."""

    frames: list[bytes]
    sent: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def handle(self, connection: ServerConnection) -> None:
        for frame in self.frames:
            connection.send(frame)
        self.sent.set()
        self.release.wait(30)


@pytest.fixture
def frame_server(request: pytest.FixtureRequest) -> Iterator[FrameServer]:
    """Serve the frames given by ``@pytest.mark.parametrize(..., indirect=True)``."""
    server = FrameServer(frames=request.param)
    with serve(server.handle, "127.0.0.1", 0, max_size=None, compression=None) as ws_server:
        port = ws_server.socket.getsockname()[1]
        server.url = f"ws://127.0.0.1:{port}/stream"
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.release.set()
        ws_server.shutdown()
        thread.join(5)


BIG_FRAME = bytes(range(256)) * 1200  # 300 KB, several 64 KB reads


@pytest.mark.parametrize("frame_server", [[BIG_FRAME]], indirect=True)
def test_the_live_connection_receives_through_64_kb_reads(
    frame_server: FrameServer, raw_reads: RawReads
) -> None:
    received: list[bytes] = []
    got_frame = threading.Event()
    stop = threading.Event()

    def on_message(data: bytes) -> None:
        received.append(bytes(data))
        got_frame.set()

    connection = StreamConnection(
        frame_server.url,
        name="hook-test",
        on_message=on_message,
        on_connect=lambda: None,
        on_disconnect=lambda: None,
        stop=stop,
        limiter=AttemptLimiter(),
        connect_timeout=5.0,
    )
    connection.start()
    try:
        assert got_frame.wait(10), "the frame never arrived"
    finally:
        stop.set()
        connection.abort("test over")
        connection.join(5)

    assert received == [BIG_FRAME]
    # The frame came off the socket through the hook (a release that reads the socket
    # another way leaves this empty) and every read asked for 64 KB.
    assert sum(raw_reads.returned) >= len(BIG_FRAME)
    assert set(raw_reads.asked) == {READ_64_KB}
    assert len(raw_reads.asked) < len(BIG_FRAME) // 16384


SMALL_FRAMES = [b'{"e":"trade","t":%d}' % i for i in range(500)]


@pytest.mark.parametrize("frame_server", [SMALL_FRAMES], indirect=True)
def test_hundreds_of_waiting_frames_take_a_handful_of_reads(
    frame_server: FrameServer, raw_reads: RawReads
) -> None:
    ws = websocket.create_connection(
        frame_server.url, timeout=5, class_=LiveWebSocket, skip_utf8_validation=True
    )
    try:
        # All frames are in the socket buffer before the first read.
        assert frame_server.sent.wait(10)
        received = [ws.recv_data_frame(True)[1].data for _ in SMALL_FRAMES]
    finally:
        ws.close(timeout=0.2)

    assert received == SMALL_FRAMES
    # Without the hook websocket-client reads header, length and payload separately:
    # 1,000 system calls and more for these 500 frames.
    assert 1 <= len(raw_reads.asked) <= 5
    assert set(raw_reads.asked) == {READ_64_KB}


OVERSIZED = b"x" * (MAX_FRAME_BYTES + 1)


@pytest.mark.parametrize("frame_server", [[OVERSIZED]], indirect=True)
def test_an_oversized_frame_is_refused_from_its_header(
    frame_server: FrameServer, raw_reads: RawReads
) -> None:
    """``LiveWebSocket`` wraps the private ``frame_buffer.recv_length``: the length is
    checked before the payload is read (a release that parses lengths elsewhere lets the
    frame through, or reads all of it first)."""
    ws = websocket.create_connection(
        frame_server.url, timeout=5, class_=LiveWebSocket, skip_utf8_validation=True
    )
    try:
        assert frame_server.sent.wait(10)
        with pytest.raises(FrameTooLarge, match=f"frame of {MAX_FRAME_BYTES + 1} bytes refused"):
            ws.recv_data_frame(True)
        # One 64 KB read holds the header; the rest of the megabyte was never asked for.
        assert len(raw_reads.asked) == 1
    finally:
        ws.shutdown()
