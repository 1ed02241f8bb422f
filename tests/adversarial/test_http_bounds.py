"""Classes 1 and 2 over plain HTTP: the open protocols' requests and streams.

``POST /v1/chat/completions`` (and ``/mcp``, ``/a2a``) read a body and may
stream a reply as server-sent events. A client can stop in the middle of
either: send its headers and then only part of the body it announced, or ask
for a stream and never read it. Each must end on the server's clock — a
request that does not arrive in time gets 408, a stream that does not drain
is dropped — so that such connections cannot pile up until nobody else gets
in.

These guards wrap uvicorn's HTTP parser, httptools when the speed extra is
installed and h11 otherwise: every attack runs against both.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from ..e2e.processes import wait_until
from .conftest import FACADE, assert_serves_a_turn
from .hostile import TINY_RECEIVE_BUFFER, RawWebSocket, outcome, peak_rss, raw_socket, rss_kib

# What the facade logs when it drops a response the client does not take.
STALL_LINE = "dropping an HTTP response: nothing sent for"
RSS_RATIO = 1.2
ATTACKER = "127.0.0.9"

pytestmark = pytest.mark.parametrize(
    "agent",
    [pytest.param("auto", id="speedups-if-installed"), pytest.param("off", id="pure-python")],
    indirect=True,
)


def _post(path: str, body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (
        f"POST {path} HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode() + body


def _completion(content: str, *, stream: bool) -> bytes:
    return json.dumps(
        {"model": "adversarial", "stream": stream, "messages": [{"role": "user", "content": content}]}
    ).encode()


def _ended(sock: socket.socket, *, timeout: float) -> bool:
    """Read until the server ends the connection; whether it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_a_body_that_never_finishes_gets_408_and_gives_its_place_back(agent):
    """Headers sent, part of the announced body, then nothing: before, the
    request was served for ever, and ``maxPendingConnectionsPerAddress`` such
    requests locked their address out (more for more addresses, up to
    ``maxPendingConnections``, and then everyone)."""
    limit = FACADE.max_pending_connections_per_address
    partial = _post("/v1/chat/completions", b'{"model": "adv', declared=1000)
    sockets = [raw_socket(agent.port, source=ATTACKER) for _ in range(limit)]
    try:
        for sock in sockets:
            sock.sendall(partial)
        outcomes = [outcome(sock, timeout=FACADE.request_header_timeout_seconds + 10) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert [status for status, _ in outcomes] == ["408"] * limit
    # The address is welcome again: its places were given back.
    RawWebSocket.connect(agent.port, source=ATTACKER).close()
    assert_serves_a_turn(agent)


def test_a_body_sent_a_byte_at_a_time_is_held_no_longer_than_the_deadline(agent):
    """Trickling bytes do not extend the deadline: it runs from the connection."""
    body = _completion("hello", stream=False)
    sock = raw_socket(agent.port, source=ATTACKER)
    try:
        sock.sendall(_post("/v1/chat/completions", b"", declared=len(body)))
        started = time.monotonic()
        answered = None
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except ConnectionError:
                break
            sock.settimeout(0.25)
            try:
                answered = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionError:
                answered = b""
            break
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert answered is not None and answered.startswith(b"HTTP/1.1 408 "), answered
    # A byte every quarter second would have taken the whole body far longer.
    assert elapsed < len(body) * 0.25


def test_a_stream_the_client_never_reads_is_dropped_after_the_send_timeout(agent):
    """``stream: true`` for a long reply, then never a read: the response waits
    on the socket; after ``sendTimeoutSeconds`` without progress the facade
    drops the connection, which cancels the turn. Before, the connection and
    the turn were held for as long as the client liked. Producing the reply
    has its own cost, so the baseline is the peak of the same request read by
    a well-behaved client."""
    request = _post("/v1/chat/completions", _completion("flood", stream=True))
    pids = (agent.facade.pid, agent.runtime.pid)
    with peak_rss(*pids) as reading:
        sock = raw_socket(agent.port)
        try:
            sock.sendall(request)
            assert _ended_with_done(sock)
        finally:
            sock.close()
    stalls = agent.log("facade").count(STALL_LINE)
    sock = raw_socket(agent.port, receive_buffer=TINY_RECEIVE_BUFFER)
    try:
        with peak_rss(*pids) as attacked:
            sock.sendall(request)
            wait_until(
                lambda: agent.log("facade").count(STALL_LINE) > stalls,
                timeout=FACADE.send_timeout_seconds + 60,
                what="the facade to drop the stream nobody reads",
            )
        assert _ended(sock, timeout=10), "the connection is still open after the facade dropped it"
    finally:
        sock.close()
    for pid, before in reading.peak.items():
        assert attacked.peak[pid] < before * RSS_RATIO, f"pid {pid}: {before} KiB → {attacked.peak[pid]} KiB"
    assert_serves_a_turn(agent)


def _ended_with_done(sock: socket.socket) -> bool:
    """Read a whole streamed completion; whether it ended with ``data: [DONE]``."""
    received = bytearray()
    sock.settimeout(60)
    while b"data: [DONE]" not in received:
        data = sock.recv(1 << 16)
        if not data:
            return False
        received += data
    return True


def test_pipelined_requests_from_a_client_that_never_reads_cost_little(agent):
    """HTTP/1.1 lets a client send its next requests before reading an answer.
    A client that sends thousands of them in a row and never reads must not
    make the facade hold a request (and its answer) for each."""
    assert_serves_a_turn(agent)
    pids = (agent.facade.pid, agent.runtime.pid)
    baseline = {pid: rss_kib(pid) for pid in pids}
    request = b"GET /healthz HTTP/1.1\r\nhost: agent\r\n\r\n"
    burst = request * ((1 << 16) // len(request))
    sock = raw_socket(agent.port, source=ATTACKER, receive_buffer=TINY_RECEIVE_BUFFER)
    try:
        with peak_rss(*pids) as rss:
            sock.settimeout(0.2)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    sock.send(burst)
                except TimeoutError:
                    continue
                except ConnectionError:
                    break
    finally:
        sock.close()
    for pid, before in baseline.items():
        assert rss.peak[pid] < before * RSS_RATIO, f"pid {pid}: {before} KiB → {rss.peak[pid]} KiB"
    assert_serves_a_turn(agent)


def test_a_few_pipelined_requests_are_all_answered_in_order(agent):
    """Pipelining itself is HTTP/1.1: a client that sends a handful of requests
    ahead and reads the answers gets every one, in order."""
    paths = ["/healthz", "/v1/models", "/healthz", "/.well-known/agent-card.json", "/healthz"] * 2
    sock = raw_socket(agent.port, source=ATTACKER)
    try:
        sock.sendall(b"".join(f"GET {path} HTTP/1.1\r\nhost: agent\r\n\r\n".encode() for path in paths))
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 200 ") < len(paths) and time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = sock.recv(1 << 16)
            if not data:
                break
            received += data
    finally:
        sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200"] * len(paths), received[:2000]
    assert received.index(b'"object"') < received.index(b'"skills"'), "answers out of order"
