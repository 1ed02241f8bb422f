"""Facade memory under hostile clients, with the default limits (issue 11).

    python bench/attacks.py [--seconds N]

One facade and one runtime on loopback (``bench/relay.py``'s ``Pod``), then:

(a) idle: the facade's RSS after one turn — the baseline;
(b) ping flood: 4 WebSocket clients with a 4 KiB receive buffer send 125-byte
    pings as fast as they can and never read, for N seconds (default 20, less
    than the default send timeout, so the buffers are full the whole time);
(c) slow connections: 2,000 sockets from 64 loopback addresses, each sending
    one byte of its request headers every second, for N seconds;
(d) header flood: 4 clients stream header lines as fast as the socket takes
    them, each connecting again whenever the server closes it, for N seconds.

Prints the facade's peak RSS (sampled every 20 ms) and, for (c), the most
descriptors it held (counted a second after each round of the attack). Client and servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from websockets.frames import Opcode
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay import Pod, machine  # noqa: E402

from omnia.config import FacadeConfig  # noqa: E402

from tests.adversarial.hostile import (  # noqa: E402
    TINY_RECEIVE_BUFFER,
    RawWebSocket,
    client_frame,
    open_descriptors,
    peak_rss,
    raw_socket,
    rss_kib,
)

FLOODERS = 4
# The facade's default limits against hostile clients; only the message rate
# is raised, so that the client that checks the pod between attacks is not
# slowed by it.
LIMITS = FacadeConfig(messages_per_second=1e6, message_burst=1_000_000)
SLOW_SOCKETS = 2_000
SLOW_ADDRESSES = 64


def _one_turn(pod: Pod) -> None:
    with connect(pod.ws_url) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "message", "content": "hi"}))
        while json.loads(ws.recv(timeout=10))["type"] != "done":
            pass


def ping_flood(pod: Pod, *, seconds: float) -> int:
    """Peak facade RSS (KiB) while FLOODERS clients ping and never read."""
    ping = client_frame(Opcode.PING, b"p" * 125)
    clients = [RawWebSocket.connect(pod.port, receive_buffer=TINY_RECEIVE_BUFFER) for _ in range(FLOODERS)]
    threads = [threading.Thread(target=client.flood, args=(ping,), kwargs={"seconds": seconds}) for client in clients]
    with peak_rss(pod.facade.pid) as rss:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for client in clients:
        client.close()
    return rss.peak[pod.facade.pid]


def slow_connections(pod: Pod, *, seconds: float) -> tuple[int, int, int]:
    """(peak facade RSS KiB, peak open descriptors, sockets opened) under a slowloris."""
    sockets: list[socket.socket] = []
    most_fds = open_descriptors(pod.facade.pid)
    request = b"GET /ws HTTP/1.1\r\nHost: facade\r\nX-Slow: " + b"a" * 10_000
    with peak_rss(pod.facade.pid) as rss:
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            while len(sockets) < SLOW_SOCKETS:
                try:
                    sock = raw_socket(pod.port, source=f"127.0.3.{len(sockets) % SLOW_ADDRESSES + 1}")
                    sock.setblocking(False)
                except OSError:
                    break
                sockets.append(sock)
            alive = []
            for sock in sockets:
                try:
                    sock.send(request[tick : tick + 1])
                    alive.append(sock)
                except OSError:
                    sock.close()  # refused or timed out: the attacker reconnects
            sockets = alive
            tick += 1
            time.sleep(1.0)
            # Measured a second after each burst: while the event loop
            # accepts a burst, every socket of it is a descriptor until the
            # protocol refuses or displaces it in the same pass.
            most_fds = max(most_fds, open_descriptors(pod.facade.pid))
    for sock in sockets:
        sock.close()
    return rss.peak[pod.facade.pid], most_fds, SLOW_SOCKETS


def header_flood(pod: Pod, *, seconds: float) -> tuple[int, int, int]:
    """(peak facade RSS KiB, header bytes the clients sent, connections) under a header flood.

    What the clients send includes what the kernel buffered for a connection
    before the server closed it; the facade itself reads at most
    ``maxRequestHeaderBytes`` and one read more of each.
    """
    line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    batch = line * 16
    sent = [0] * FLOODERS
    connections = [0] * FLOODERS
    deadline = time.monotonic() + seconds

    def flood(index: int) -> None:
        while time.monotonic() < deadline:
            sock = raw_socket(pod.port, source=f"127.0.4.{index + 1}")
            connections[index] += 1
            try:
                sock.sendall(b"GET /ws HTTP/1.1\r\nHost: facade\r\n")
                while time.monotonic() < deadline:
                    sock.sendall(batch)
                    sent[index] += len(batch)
            except OSError:
                pass  # closed by the server: connect again
            finally:
                sock.close()

    threads = [threading.Thread(target=flood, args=(index,)) for index in range(FLOODERS)]
    with peak_rss(pod.facade.pid) as rss:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return rss.peak[pod.facade.pid], sum(sent), sum(connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each attack")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as workdir:
        pod = Pod(Path(workdir), facade=LIMITS)
        try:
            _one_turn(pod)
            baseline, baseline_fds = rss_kib(pod.facade.pid), open_descriptors(pod.facade.pid)
            print(f"idle:             facade RSS {baseline / 1024:7.1f} MiB, {baseline_fds} descriptors")
            peak = ping_flood(pod, seconds=args.seconds)
            print(f"ping flood:       facade peak RSS {peak / 1024:7.1f} MiB ({FLOODERS} clients, {args.seconds:g} s)")
            _one_turn(pod)
            peak, fds, opened = slow_connections(pod, seconds=args.seconds)
            print(
                f"slow connections: facade peak RSS {peak / 1024:7.1f} MiB, at most {fds} descriptors held"
                f" ({opened} sockets from {SLOW_ADDRESSES} addresses, {args.seconds:g} s)"
            )
            _one_turn(pod)
            peak, sent, connections = header_flood(pod, seconds=args.seconds)
            print(
                f"header flood:     facade peak RSS {peak / 1024:7.1f} MiB, {sent / 2**20:,.0f} MiB of headers sent"
                f" over {connections} connections ({FLOODERS} clients, {args.seconds:g} s)"
            )
            _one_turn(pod)
            print("after the attacks the facade still serves turns")
        finally:
            pod.stop()


if __name__ == "__main__":
    main()
