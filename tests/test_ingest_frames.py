"""The live feed's own WebSocket frame decoder (ws.FrameDecoder) and its receive loop.

Frames are encoded by websocket-client's ``ABNF`` (an encoder the decoder does not share)
and fed in pieces cut at random points; what comes out must be the messages sent, in order,
however the bytes were split. Refusals follow RFC 6455's rules for a client. The receive
loop is run against a real local server sending fragmented messages and pings.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
import websocket
from websocket import ABNF
from websockets.sync.server import ServerConnection, serve

from pairs_monitor.ingest.binance.ws import (
    MAX_FRAME_BYTES,
    AttemptLimiter,
    FrameDecoder,
    FrameTooLarge,
    StreamConnection,
)

TEXT, BINARY, CONT = ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT
CLOSE, PING, PONG = ABNF.OPCODE_CLOSE, ABNF.OPCODE_PING, ABNF.OPCODE_PONG


def encoded(payload: bytes, opcode: int = TEXT, fin: bool = True, rsv1: int = 0) -> bytes:
    """One unmasked server frame, as websocket-client's ABNF writes it."""
    return ABNF(1 if fin else 0, rsv1, 0, 0, opcode, 0, payload).format()


def fed_in_pieces(stream: bytes, rng: random.Random) -> list[tuple[int, bytes]]:
    """Feed ``stream`` to a fresh decoder in pieces of 1 byte to 70 KB; all it returned."""
    decoder = FrameDecoder()
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(stream):
        size = rng.choice((1, 2, 3, 7, 100, 4096, 65536, 70_000))
        out += decoder.feed(stream[pos : pos + size])
        pos += size
    return out


def test_messages_of_every_length_class_come_out_whole_however_the_bytes_are_split() -> None:
    rng = random.Random(10)
    # 7-bit, 16-bit and 64-bit lengths, at and around their edges
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 70_000] + [rng.randrange(300) for _ in range(300)]
    sent = [(TEXT if k % 3 else BINARY, rng.randbytes(n)) for k, n in enumerate(sizes)]
    stream = b"".join(encoded(payload, opcode) for opcode, payload in sent)
    for _ in range(5):
        assert fed_in_pieces(stream, rng) == sent


def test_a_fragmented_message_comes_whole_with_control_frames_between_its_fragments() -> None:
    stream = (
        encoded(b'{"a":', TEXT, fin=False)
        + encoded(b"ping-1", PING)  # control frames may come between fragments
        + encoded(b"1", CONT, fin=False)
        + encoded(b"", PONG)
        + encoded(b"}", CONT)
        + encoded(b"whole")
        + encoded(b"\x03\xe9going away", CLOSE)
    )
    expected = [
        (PING, b"ping-1"),
        (PONG, b""),
        (TEXT, b'{"a":1}'),
        (TEXT, b"whole"),
        (CLOSE, b"\x03\xe9going away"),
    ]
    rng = random.Random(3)
    for _ in range(20):
        assert fed_in_pieces(stream, rng) == expected


REFUSED = {
    # name: (stream, what the refusal says)
    "masked": (bytes((0x81, 0x80 | 1)) + b"\x01\x02\x03\x04" + b"x", "masked frame"),
    "reserved bits": (encoded(b"x", rsv1=1), "reserved bits"),
    # ABNF refuses to write an unknown opcode: these two by hand
    "opcode 3": (bytes((0x80 | 3, 1)) + b"x", "unknown opcode 3"),
    "opcode 11": (bytes((0x80 | 11, 1)) + b"x", "invalid control frame"),
    "fragmented ping": (encoded(b"p", PING, fin=False), "invalid control frame"),
    "126-byte ping": (encoded(b"p" * 126, PING), "invalid control frame"),
    "lone continuation": (encoded(b"x", CONT), "continuation frame without a start"),
    "message in a message": (
        encoded(b"a", TEXT, fin=False) + encoded(b"b"),
        "new message inside a fragmented",
    ),
}


@pytest.mark.parametrize(("stream", "refused"), REFUSED.values(), ids=REFUSED.keys())
def test_frames_a_client_must_refuse_are_refused(stream: bytes, refused: str) -> None:
    with pytest.raises(websocket.WebSocketProtocolException, match=refused):
        FrameDecoder().feed(stream)


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = encoded(b"x" * (MAX_FRAME_BYTES + 1))[:10]  # 64-bit length, no payload yet
    with pytest.raises(FrameTooLarge, match=f"frame of {MAX_FRAME_BYTES + 1} bytes refused"):
        FrameDecoder().feed(header)


def test_a_fragmented_message_over_the_limit_is_refused() -> None:
    decoder = FrameDecoder()
    half = b"x" * (MAX_FRAME_BYTES // 2 + 1)
    decoder.feed(encoded(half, TEXT, fin=False))
    with pytest.raises(FrameTooLarge):
        decoder.feed(encoded(half, CONT, fin=False))


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    """Sends a message in three fragments, pings, a whole message; records the pongs."""
    pongs: list[bytes] = []
    done = threading.Event()

    def handle(connection: ServerConnection) -> None:
        connection.send([b'{"part":', b"1", b"}"])  # text, in three frames
        connection.ping(b"are-you-there").wait(5)
        pongs.append(b"are-you-there")
        connection.send(b'{"whole":2}', text=True)
        done.wait(10)

    with serve(handle, "127.0.0.1", 0, compression=None) as ws_server:
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        yield f"ws://127.0.0.1:{ws_server.socket.getsockname()[1]}/stream", pongs
        done.set()
        ws_server.shutdown()
        thread.join(5)


def test_the_receive_loop_joins_fragments_and_answers_pings(
    server: tuple[str, list[bytes]],
) -> None:
    url, pongs = server
    received: list[bytes] = []
    got_both = threading.Event()
    stop = threading.Event()

    def on_message(data: bytes) -> None:
        received.append(data)
        if len(received) == 2:
            got_both.set()

    connection = StreamConnection(
        url,
        name="frames-test",
        on_message=on_message,
        on_connect=lambda: None,
        on_disconnect=lambda: None,
        stop=stop,
        limiter=AttemptLimiter(),
        connect_timeout=5.0,
    )
    connection.start()
    try:
        assert got_both.wait(10), f"received only {received}"
    finally:
        stop.set()
        connection.abort("test over")
        connection.join(5)
    # the second message is sent only once the server's ping was answered
    assert received == [b'{"part":1}', b'{"whole":2}']
    assert pongs == [b"are-you-there"]
    assert connection.frames == 2
