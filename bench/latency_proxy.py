#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that adds a round-trip time to every HTTP exchange through it.

Usage:

    python bench/latency_proxy.py --target 127.0.0.1:PORT --latency-ms 40
    python bench/latency_proxy.py --self-test [--latency-ms 40]

The first form prints `port N` once it listens, then relays until killed; a line on its
stdin with a number sets a new latency in ms (so a benchmark can fill a bucket at full speed
and measure through the same endpoint, which ass3's state cache is keyed by).

Why this model: on a real link every change of who is talking costs half a round trip.
The proxy holds the first bytes of each turn, a request starting after the previous
response or a response starting after its request, for half of --latency-ms and then
streams the rest of the turn at full speed. So one request on a kept-alive connection costs
one round trip more, a new connection one more for its TCP handshake, a request with
`Expect: 100-continue` two, and bandwidth is unlimited. Bytes are relayed unchanged; no
parsing of HTTP is needed because HTTP/1.1 clients do not pipeline. netem would do this in
the kernel, but needs privileges and a module this machine does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import http.server
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BUFFER = 256 * 1024
_RELAYS: set[asyncio.Task[None] | None] = set()


@dataclass
class Link:
    """The one setting every connection reads: the round-trip time to add, in seconds."""

    rtt: float


@dataclass
class Conversation:
    """Who spoke last on one connection, so a change of speaker can be charged."""

    speaker: str = ""


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    side: str,
    conversation: Conversation,
    link: Link,
) -> None:
    """Copy one direction; hold the first bytes of each new turn for half the RTT."""
    try:
        while data := await reader.read(BUFFER):
            if conversation.speaker != side:
                # A new connection's first request also waits for the TCP handshake.
                handshake = link.rtt if not conversation.speaker else 0.0
                conversation.speaker = side
                if link.rtt:
                    await asyncio.sleep(link.rtt / 2 + handshake)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    link: Link,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    conversation = Conversation()
    # asyncio drops its own reference to this task when the client's side is lost.
    this = asyncio.current_task()
    _RELAYS.add(this)
    try:
        await asyncio.gather(
            _pump(client_reader, server_writer, "client", conversation, link),
            _pump(server_reader, client_writer, "server", conversation, link),
        )
    finally:
        for writer in (client_writer, server_writer):
            writer.close()
        _RELAYS.discard(this)


def _follow_stdin(link: Link) -> None:
    """Each line on stdin with a number is the new latency in ms."""
    for line in sys.stdin:
        try:
            link.rtt = max(0.0, float(line)) / 1000
        except ValueError:
            continue


async def serve(target: tuple[str, int], link: Link) -> None:
    """Listen on a free loopback port, say which, relay until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _relay(r, w, target, link), "127.0.0.1", 0, backlog=512
    )
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    async with server:
        await server.serve_forever()


class LatencyProxy:
    """The proxy in a child process of its own, so its CPU is neither the server's nor
    a tool's (RUSAGE_CHILDREN counts it only once it is reaped, after every measurement)."""

    def __init__(self, target: str, latency_ms: float) -> None:
        script = str(Path(__file__).resolve())
        self.process = subprocess.Popen(
            [sys.executable, script, "--target", target, "--latency-ms", str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "port":
            self.close()
            raise RuntimeError("the latency proxy did not start")
        self.endpoint = f"http://127.0.0.1:{ready[1]}"
        self.latency_ms = latency_ms

    def set_latency(self, latency_ms: float) -> None:
        """Takes effect for the next turn of every connection."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{latency_ms}\n")
        self.process.stdin.flush()
        self.latency_ms = latency_ms
        time.sleep(0.05)  # let the proxy's stdin thread read it

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


# ---------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: reads any body, answers with as many bytes as ?size= asks."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a delayed ACK stalls each direct answer 40 ms

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        size = int(self.path.partition("size=")[2] or 2)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"x" * size)

    do_GET = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def _time_requests(port: int, count: int, body: bytes = b"", size: int = 2) -> float:
    """Seconds for `count` sequential requests on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/?size=2")  # the TCP handshake is not counted here
    connection.getresponse().read()
    started = time.perf_counter()
    for _ in range(count):
        connection.request("PUT" if body else "GET", f"/?size={size}", body=body or None)
        response = connection.getresponse()
        if len(response.read()) != size:
            raise RuntimeError("short response through the proxy")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def _time_new_connection(port: int) -> float:
    """Seconds for connecting and one request."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/?size=2")
    connection.getresponse().read()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def self_test(latency_ms: float) -> bool:
    """Compare requests sent directly and through the proxy; print and judge the extra time."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    direct_port = server.server_address[1]
    proxy = LatencyProxy(f"127.0.0.1:{direct_port}", latency_ms)
    proxy_port = int(proxy.endpoint.rsplit(":", 1)[1])
    rtt = latency_ms / 1000
    checks = []
    try:
        cases = [
            ("one request", 1, b"", 2, rtt),
            ("100 sequential requests on one connection", 100, b"", 2, 100 * rtt),
            ("one 4 MiB upload", 1, b"u" * (4 << 20), 2, rtt),
            ("one 4 MiB download", 1, b"", 4 << 20, rtt),
        ]
        for name, count, body, size, expected in cases:
            direct = min(_time_requests(direct_port, count, body, size) for _ in range(3))
            proxied = min(_time_requests(proxy_port, count, body, size) for _ in range(3))
            checks.append((name, proxied - direct, expected))
        direct = min(_time_new_connection(direct_port) for _ in range(3))
        proxied = min(_time_new_connection(proxy_port) for _ in range(3))
        checks.append(("a new connection and one request", proxied - direct, 2 * rtt))
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()
    passed = True
    for name, extra, expected in checks:
        # Timers overshoot a little and a busy machine adds more; never undershoot.
        ok = expected * 0.95 <= extra <= expected * 1.3 + 0.005 * max(1, expected / rtt or 1)
        passed &= ok
        verdict = "ok" if ok else "OUT OF RANGE"
        print(f"{name}: {extra * 1000:.1f} ms more (expected {expected * 1000:.0f}) {verdict}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", help="HOST:PORT to relay to")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="round trip to add")
    parser.add_argument("--self-test", action="store_true", help="measure the proxy, then exit")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be 0 or more")
    if args.self_test:
        return 0 if self_test(args.latency_ms) else 1
    if not args.target or ":" not in args.target:
        parser.error("--target HOST:PORT is required")
    host, _, port = args.target.rpartition(":")
    link = Link(args.latency_ms / 1000)
    threading.Thread(target=_follow_stdin, args=(link,), daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((host, int(port)), link))
    return 0


if __name__ == "__main__":
    sys.exit(main())
