"""The live ingest path end to end, against a bare websocket-client loop on the same server.

    .venv/bin/python -m bench.bench_ingest [--messages 400000] [--pairs 5]
        [--latency-seconds 20] [--memory-messages 1000000] [--markets spot|spot+usdm]

(from the repository root).

A local server (its own process) speaks Binance's combined-stream protocol: the
``websockets`` package does the handshake, then trade frames for two symbols are written
straight to the transport, pre-framed, so that the server costs little CPU next to the
client. The WebSocket URL's path picks what it does: ``/blast/N`` sends N trades as fast
as the client takes them (TCP backpressure), ``/rate/R/S`` sends R trades a second for S
seconds with the send time (ms) as the trade time ``T``. Either starts ``--warmup`` seconds
(3) after the handshake, so the daemon is timed in its steady state, past its start-up. A
path holding ``market`` (the USD-M route, ``/market/stream``) gets USD-M trade frames
(``X`` and no ``M``).

With ``--markets spot+usdm`` the daemon records ``btcusdt ethusdt usdm:btcusdt
usdm:ethusdt``: two connections (one per market, each with its own URL flags) share the
blast, half each, and the stored trades of both venues are counted; the bare loop still
reads the whole blast on one connection.

1. Throughput, paired runs (each pair: the bare loop, then the daemon): the bare loop is
   ``create_connection`` (UTF-8 check skipped) + ``recv`` + ``orjson.loads``, timed by
   itself. The daemon (``ingest.py --source live``, a fresh database) is timed by polling
   the database (two index lookups every 10 ms). Both over the same ``WINDOW`` of the
   run. Reported: both rates and the median ratio, and the CPU time (user + system, all
   threads) each spent per message over that window: on a machine shared with other
   work the rates move with the load, the CPU per trade much less.
2. Latency at 2,000 msg/s: the daemon's database is polled every 2 ms; a trade's latency
   is the time it became visible minus its send time: an upper bound of
   receive-to-commit (adds the local socket and up to one poll interval).
3. Memory: the daemon's RSS (``/proc/PID/status``) sampled every 0.5 s while it stores
   ``--memory-messages`` trades.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bench.stamp import stamped

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# The server and the bare loop run as this module in processes of their own.
THIS_MODULE = [PY, "-m", "bench.bench_ingest"]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
# Both sides are timed over the same stretch of the run, from 30% to 80% of the trades:
# past start-up and the burst of what the socket buffered meanwhile, and before the end,
# where the daemon's writer works off its (bounded) backlog without the socket.
WINDOW = (0.3, 0.8)
TRADE = (
    '{"stream":"%s@trade","data":{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.2f",'
    '"q":"%.5f","T":%d,"m":%s,"M":true}}'
)
TRADE_USDM = (
    '{"stream":"%s@trade","data":{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%.2f",'
    '"q":"%.5f","X":"MARKET","m":%s,"st":1}}'
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's unit of CPU time
VENUES = {"spot": ("binance-spot",), "spot+usdm": ("binance-spot", "binance-usdm")}


# -- the server process ------------------------------------------------------------------


def frame(text: str) -> bytes:
    """An unmasked server-to-client text frame."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data


def trade_frame(i: int, t_ms: int, usdm: bool = False) -> bytes:
    """Trade number ``i`` of the run: symbols alternate, ids consecutive per symbol."""
    symbol = SYMBOLS[i % 2]
    trade_id = i // 2 + 1
    price = 50_000 + (i % 1000) / 100
    maker = "true" if i % 3 else "false"
    if usdm:
        qty = 0.001 + (i % 7) / 1000
        return frame(TRADE_USDM % (symbol.lower(), t_ms, t_ms, symbol, trade_id, price, qty, maker))
    return frame(
        TRADE
        % (
            symbol.lower(),
            t_ms,
            symbol,
            trade_id,
            price,
            0.001 + (i % 7) / 1000,
            t_ms,
            "true" if i % 3 else "false",
        )
    )


async def _serve(warmup_s: float) -> None:
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def rest(connection, request):
        if request.path.split("?")[0].endswith("/stream"):
            return None
        if "exchangeInfo" in request.path:
            body = (
                b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING"},'
                b'{"symbol":"ETHUSDT","status":"TRADING"}]}'
            )
        else:
            body = b"[]"  # a fresh database never needs history here
        headers = Headers(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "Connection": "close",
            }
        )
        return Response(200, "OK", headers, body)

    async def handler(connection):
        parts = connection.request.path.split("?")[0].strip("/").split("/")
        transport = connection.transport
        base_ms = 1_767_225_600_000
        usdm = "market" in parts
        if parts[0] == "blast":
            total = int(parts[1])
            await asyncio.sleep(warmup_s)
            for start in range(0, total, 2000):
                chunk = b"".join(
                    trade_frame(i, base_ms + i // 4, usdm)
                    for i in range(start, min(total, start + 2000))
                )
                transport.write(chunk)
                while transport.get_write_buffer_size() > 1 << 20:
                    await asyncio.sleep(0.0005)
        elif parts[0] == "rate":
            rate, seconds = int(parts[1]), float(parts[2])
            await asyncio.sleep(warmup_s)
            sent, started = 0, time.monotonic()
            total = int(rate * seconds)
            while sent < total:
                await asyncio.sleep(0.001)
                due = min(total, int((time.monotonic() - started) * rate))
                now_ms = time.time_ns() // 1_000_000
                if due > sent:
                    transport.write(b"".join(trade_frame(i, now_ms) for i in range(sent, due)))
                    sent = due
        await connection.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, process_request=rest, ping_interval=None, compression=None
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


# -- the bare loop (its own process) ---------------------------------------------------


def _baseline(url: str, n: int) -> None:
    import orjson
    import websocket

    ws = websocket.create_connection(url, skip_utf8_validation=True)
    loads, recv = orjson.loads, ws.recv
    start, end = int(n * WINDOW[0]), int(n * WINDOW[1])
    for _ in range(start):
        loads(recv())
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(end - start):
        loads(recv())
    cpu = time.process_time() - cpu_started
    print((end - start) / (time.perf_counter() - started), cpu / (end - start), flush=True)
    for _ in range(n - end):
        loads(recv())


# -- the bench -------------------------------------------------------------------------


class Server:
    def __init__(self, warmup_s: float) -> None:
        self.proc = subprocess.Popen(
            [*THIS_MODULE, "serve", str(warmup_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        self.port = int(self.proc.stdout.readline())

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_daemon(server: Server, path: str, db: Path, markets: str = "spot") -> subprocess.Popen:
    rest = f"http://127.0.0.1:{server.port}"
    if markets == "spot":
        where = ["--symbols", *SYMBOLS, "--ws-url", server.url(path), "--rest-url", rest]
    else:  # each market's connection gets half of the blast
        half = path.replace(path.split("/")[1], str(int(path.split("/")[1]) // 2), 1)
        where = ["--symbols", *SYMBOLS, *(f"usdm:{s}" for s in SYMBOLS),
                 "--spot-ws-url", server.url(half), "--spot-rest-url", rest,
                 "--usdm-ws-url", server.url(half), "--usdm-rest-url", rest]  # fmt: skip
    return subprocess.Popen(
        [PY, str(ROOT / "ingest.py"), "--source", "live", *where,
         "--db", str(db), "--log-level", "WARNING", "--history", "0"],
        cwd=ROOT,
    )  # fmt: skip


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(30) != 0:
        raise SystemExit(f"the daemon exited with {proc.returncode}")


def count(db: Path, venues: tuple[str, ...] = VENUES["spot"]) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            # Ids run from 1 per symbol and commits keep their order, so the sum of the
            # largest ids is the count: two index lookups, where count(*) would scan the
            # table (and steal CPU from the daemon) every poll.
            return sum(
                conn.execute(
                    "SELECT coalesce(max(trade_id), 0) FROM trades WHERE venue = ? AND symbol = ?",
                    (venue, symbol),
                ).fetchone()[0]
                for venue in venues
                for symbol in SYMBOLS
            )
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class DaemonRun(NamedTuple):
    """One daemon run over a blast: its rate, its CPU per trade, its RSS samples."""

    rate: float  # stored trades/s over the window
    cpu_per_trade: float  # CPU seconds per trade stored over the window
    rss: list[tuple[float, int, int]]  # (time, stored, kB), when asked for


def daemon_rate(
    server: Server, n: int, folder: Path, sample_rss: bool = False, markets: str = "spot"
) -> DaemonRun:
    """Stored trades/s and CPU per trade of the daemon for a blast of ``n``; optionally
    RSS samples (kB)."""
    db = folder / f"ingest-{time.monotonic_ns()}.db"
    proc = start_daemon(server, f"blast/{n}", db, markets)
    venues = VENUES[markets]
    marks: list[tuple[float, int, float]] = []  # (time, stored, CPU) at the window's edges
    rss: list[tuple[float, int, int]] = []
    next_rss = 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        stored = count(db, venues)
        now = time.perf_counter()
        while len(marks) < 2 and stored >= n * WINDOW[len(marks)]:
            marks.append((now, stored, cpu_seconds(proc.pid)))
        # The last sample is taken when everything is stored, however short the run.
        if sample_rss and (time.monotonic() >= next_rss or stored >= n):
            rss.append((time.monotonic(), stored, rss_kb(proc.pid)))
            next_rss = time.monotonic() + 0.5
        if stored >= n:
            break
        time.sleep(0.01)
    else:
        raise SystemExit(f"the daemon stored {count(db, venues)} of {n} in 600 s")
    stop_daemon(proc)
    (t0, n0, cpu0), (t1, n1, cpu1) = marks
    if t1 == t0:
        raise SystemExit(
            f"{n:,} messages were stored within one poll: too few to time; give more --messages"
        )
    return DaemonRun((n1 - n0) / (t1 - t0), (cpu1 - cpu0) / (n1 - n0), rss)


def baseline_rate(server: Server, n: int) -> tuple[float, float]:
    """The bare loop's messages/s and CPU seconds per message over the window."""
    url = server.url(f"blast/{n}/stream?streams=btcusdt@trade/ethusdt@trade")
    out = subprocess.run(
        [*THIS_MODULE, "baseline", url, str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rate, cpu = out.stdout.split()
    return float(rate), float(cpu)


def latency(server: Server, rate: int, seconds: float, folder: Path) -> list[float]:
    """Visible-minus-sent times (ms) of every trade of a steady ``rate`` run."""
    db = folder / f"latency-{time.monotonic_ns()}.db"
    proc = start_daemon(server, f"rate/{rate}/{seconds}", db)
    total = int(rate * seconds)
    seen: list[float] = []
    last_key = (0, 0)
    while not db.exists() or count(db) == 0:
        time.sleep(0.01)
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    deadline = time.monotonic() + seconds + 60
    while len(seen) < total and time.monotonic() < deadline:
        rows = conn.execute(
            "SELECT symbol, trade_id, trade_time_us FROM trades WHERE (trade_id, symbol) > (?, ?)"
            " ORDER BY trade_id, symbol",
            (last_key[0], last_key[1] or ""),
        ).fetchall()
        now_ms = time.time_ns() / 1e6
        for symbol, trade_id, t_us in rows:
            seen.append(now_ms - t_us / 1000)
            last_key = (trade_id, symbol)
        time.sleep(0.002)
    conn.close()
    stop_daemon(proc)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--latency-rate", type=int, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="the blast starts this long after the handshake: the daemon's start-up (its alert "
        "service imports the statistics, about 2 s of the interpreter) is not the steady "
        "state; 0 measures it in",
    )
    parser.add_argument(
        "--markets",
        choices=sorted(VENUES),
        default="spot",
        help="spot+usdm: one daemon records both markets, half the blast each",
    )
    args = parser.parse_args()
    with stamped("bench_ingest"):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    """Run the paired throughput runs, then the latency and memory runs, printing each."""
    server = Server(args.warmup)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            ratios, bare_cpu, daemon_cpu = [], [], []
            for pair in range(args.pairs):
                bare, bare_cpu_each = baseline_rate(server, args.messages)
                ours = daemon_rate(server, args.messages, folder, markets=args.markets)
                ratios.append(ours.rate / bare)
                bare_cpu.append(bare_cpu_each * 1e6)
                daemon_cpu.append(ours.cpu_per_trade * 1e6)
                print(
                    f"pair {pair + 1}: bare loop {bare:,.0f} msg/s ({bare_cpu[-1]:.2f} µs CPU a "
                    f"message), daemon stored {ours.rate:,.0f} trades/s "
                    f"({daemon_cpu[-1]:.2f} µs CPU a trade), ratio {ours.rate / bare:.3f}",
                    flush=True,
                )
            print(
                f"throughput: median ratio {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f}) over {args.pairs} pairs, "
                f"markets {args.markets}"
            )
            print(
                f"cpu: the daemon {statistics.median(daemon_cpu):.2f} µs a stored trade (min "
                f"{min(daemon_cpu):.2f}, max {max(daemon_cpu):.2f}), the bare loop "
                f"{statistics.median(bare_cpu):.2f} µs a message (median)"
            )

            if args.latency_seconds > 0:
                lat = sorted(latency(server, args.latency_rate, args.latency_seconds, folder))
                print(
                    f"latency at {args.latency_rate} msg/s over {len(lat)} trades: median "
                    f"{statistics.median(lat):.1f} ms, p90 {lat[int(len(lat) * 0.9)]:.1f} "
                    f"ms, p99 {lat[int(len(lat) * 0.99)]:.1f} ms, max {lat[-1]:.1f} ms"
                )

            if args.memory_messages > 0:
                rate, _, rss = daemon_rate(server, args.memory_messages, folder, sample_rss=True)
                # Start-up (imports, first batches) is not the steady state: judge the
                # samples taken after the first 5% of the trades.
                steady = [kb / 1024 for _, n, kb in rss if n >= args.memory_messages // 20]
                print(
                    f"memory over {args.memory_messages:,} trades ({rate:,.0f}/s): RSS after "
                    f"5% {steady[0]:.1f} MB, at the end {steady[-1]:.1f} MB, min "
                    f"{min(steady):.1f} MB, max {max(steady):.1f} MB ({len(steady)} samples)"
                )
                print(
                    "rss samples (stored trades: MB): "
                    + ", ".join(
                        f"{n}: {kb / 1024:.0f}" for _, n, kb in rss[:: max(1, len(rss) // 12)]
                    )
                )
    finally:
        server.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(_serve(float(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "baseline":
        _baseline(sys.argv[2], int(sys.argv[3]))
    else:
        main()
