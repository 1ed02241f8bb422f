"""Class 2: connections that never finish their request.

Before the WebSocket upgrade a connection is plain HTTP, and a socket that
never sends a request, or sends its headers a byte at a time, used to be held
forever without counting against ``maxConnections``: enough of them exhaust
descriptors and memory. The facade now closes a request whose headers are not
complete within ``requestHeaderTimeoutSeconds`` (408), caps the connections
not yet upgraded (``maxPendingConnections``: the oldest one still waiting for
its headers makes room for a new one) and the share of one client address
(``maxPendingConnectionsPerAddress``: 503).

These guards wrap uvicorn's HTTP parser, which is httptools when the speed
extra is installed and h11 otherwise: every attack runs against both.
"""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest

from .conftest import FACADE, assert_serves_a_turn
from .hostile import open_descriptors, outcome, peak_rss, raw_socket, rss_kib

HEADER_TIMEOUT = FACADE.request_header_timeout_seconds
PER_ADDRESS = FACADE.max_pending_connections_per_address
PENDING = FACADE.max_pending_connections
# Scheduling on a loaded machine; the deadline itself is a second.
SLACK = 1.5
RSS_RATIO = 1.2

BURST = 50

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: facade\r\n\r\n"

pytestmark = pytest.mark.parametrize(
    "agent",
    [pytest.param("auto", id="speedups-if-installed"), pytest.param("off", id="pure-python")],
    indirect=True,
)


def _response(sock: socket.socket) -> bytes:
    """One whole response to ``HEALTHZ`` (its body is one small JSON object)."""
    sock.settimeout(5)
    data = b""
    while not data.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _drip(sock: socket.socket, data: bytes, *, interval: float, timeout: float) -> tuple[str, float]:
    """Send ``data`` a byte every ``interval`` seconds until the server answers or closes."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except ConnectionError:
            return "closed", time.monotonic() - started
        result, _ = outcome(sock, timeout=interval)
        if result != "open":
            return result, time.monotonic() - started
        if time.monotonic() - started > timeout:
            break
    return "open", time.monotonic() - started


@pytest.mark.parametrize(
    ("before", "slowly"),
    [
        pytest.param(b"", b"", id="never-sends-a-request"),
        pytest.param(b"", b"GET /ws HTTP/1.1\r\nHost: facade\r\nX-Pad: " + b"a" * 100, id="headers-a-byte-at-a-time"),
        pytest.param(HEALTHZ, b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 100, id="next-request-a-byte-at-a-time"),
    ],
)
def test_a_request_whose_headers_are_not_complete_in_time_is_closed(agent, before, slowly):
    """The deadline runs from the moment the server waits for a request (the
    connection, or the end of the previous response) to the end of its
    headers; bytes trickling in do not extend it."""
    sock = raw_socket(agent.port, source="127.0.0.3")
    try:
        if before:
            sock.sendall(before)
            assert _response(sock).startswith(b"HTTP/1.1 200 ")
        if slowly:
            result, elapsed = _drip(sock, slowly, interval=0.1, timeout=HEADER_TIMEOUT + 5)
        else:
            result, elapsed = outcome(sock, timeout=HEADER_TIMEOUT + 5)
    finally:
        sock.close()
    assert result in ("408", "closed")
    assert HEADER_TIMEOUT - 0.2 < elapsed < HEADER_TIMEOUT + SLACK
    assert_serves_a_turn(agent)


def test_one_address_holds_at_most_its_share_of_pending_connections(agent):
    """Connections over the per-address cap are refused at once with 503;
    other addresses are served meanwhile."""
    held = [raw_socket(agent.port, source="127.0.0.4") for _ in range(PER_ADDRESS)]
    extra = [raw_socket(agent.port, source="127.0.0.4") for _ in range(3)]
    try:
        assert [outcome(sock, timeout=0.5)[0] for sock in extra] == ["503"] * 3
        assert_serves_a_turn(agent)
        assert outcome(held[-1], timeout=HEADER_TIMEOUT + SLACK)[0] in ("408", "closed")
    finally:
        for sock in held + extra:
            sock.close()


def test_at_the_pending_cap_the_oldest_idle_connection_makes_room(agent):
    """Silent sockets from many addresses fill the pending table; a client that
    sends its request at once (a probe, a real user) still gets in, and the
    oldest silent socket is the one closed."""
    sources = [f"127.0.1.{n}" for n in range(PENDING // PER_ADDRESS)]
    held = [raw_socket(agent.port, source=source) for source in sources for _ in range(PER_ADDRESS)]
    try:
        time.sleep(0.1)
        assert httpx.get(f"{agent.url}/healthz", timeout=2).status_code == 200
        assert outcome(held[0], timeout=0.5)[0] in ("408", "closed")
        assert outcome(held[-1], timeout=0.05)[0] == "open"
        assert_serves_a_turn(agent)
    finally:
        for sock in held:
            sock.close()


def test_a_slow_connection_flood_keeps_memory_and_descriptors_bounded(agent):
    """Hundreds of sockets from many addresses, each dripping header bytes:
    the facade holds at most ``maxPendingConnections`` of them at a time, and
    its memory and descriptor count stay near where they were."""
    assert_serves_a_turn(agent)
    facade = agent.facade.pid
    baseline_rss, baseline_fds = rss_kib(facade), open_descriptors(facade)
    most_fds = baseline_fds
    sockets: list[socket.socket] = []
    with peak_rss(facade) as rss:
        deadline = time.monotonic() + 3 * HEADER_TIMEOUT
        n = 0
        while time.monotonic() < deadline:
            for _ in range(BURST):
                try:
                    sock = raw_socket(agent.port, source=f"127.0.2.{n % 50}")
                    sock.setblocking(False)
                    sock.send(b"G")
                    sockets.append(sock)
                except OSError:
                    pass
                n += 1
            for sock in sockets:
                try:
                    sock.send(b"E")
                except OSError:
                    pass
            most_fds = max(most_fds, open_descriptors(facade))
            time.sleep(0.05)
    for sock in sockets:
        sock.close()
    assert len(sockets) > 3 * PENDING
    # The event loop accepts a burst of connections before it hands them to
    # the protocol that counts them; those over the cap are closed in the
    # same pass.
    assert most_fds <= baseline_fds + PENDING + BURST + 5
    assert rss.peak[facade] < baseline_rss * RSS_RATIO
    assert_serves_a_turn(agent)


@pytest.mark.parametrize(
    "endless",
    [
        pytest.param(b"x-pad: " + b"a" * 8000 + b"\r\n", id="header-lines"),
        pytest.param(b"a" * 8000, id="one-header-value"),
    ],
)
def test_headers_that_never_end_are_cut_at_the_size_bound_not_held_in_memory(agent, endless):
    """Headers streamed as fast as the socket takes them: httptools kept every
    byte (1.6 GB in five seconds, the facade's RSS with it) until the header
    deadline. Past ``maxRequestHeaderBytes`` the facade now answers and closes,
    and its memory stays put. (The answer itself may be lost to the reset that
    closing on unread bytes causes; the next test reads it.)"""
    pids = (agent.facade.pid,)
    baseline = {pid: rss_kib(pid) for pid in pids}
    sock = raw_socket(agent.port)
    sent = 0
    try:
        with peak_rss(*pids) as rss:
            sock.sendall(b"GET /ws HTTP/1.1\r\nhost: facade\r\nx-first: ")
            batch = endless * 32
            with contextlib.suppress(OSError):
                # Until the server closes (the header deadline, a second here, would end it too).
                while sent < 1 << 30:
                    sock.sendall(batch)
                    sent += len(batch)
            status, _ = outcome(sock, timeout=5)
    finally:
        sock.close()
    assert status in ("431", "closed"), f"after {sent} bytes: {status}"
    assert sent < 64 * FACADE.max_request_header_bytes, f"the facade took {sent} bytes of headers"
    for pid, before in baseline.items():
        assert rss.peak[pid] < before * RSS_RATIO, f"pid {pid}: {before} KiB → {rss.peak[pid]} KiB"
    assert_serves_a_turn(agent)


def test_headers_over_the_bound_get_431(agent):
    """One send of headers just over the bound, then the client waits: both
    parsers answer 431 (h11 said 400 at its own 16 KiB, httptools nothing)."""
    padding = b"x-pad: " + b"a" * (FACADE.max_request_header_bytes + 1024) + b"\r\n"
    with raw_socket(agent.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: facade\r\n" + padding)
        status, _ = outcome(sock, timeout=5)
    assert status == "431"


def test_headers_within_the_bound_are_served(agent):
    """A request whose headers are large but within the bound (a long JWT, many cookies)."""
    padding = "".join(f"x-pad-{n}: {'a' * 4000}\r\n" for n in range(FACADE.max_request_header_bytes // 4100 - 1))
    with raw_socket(agent.port) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nhost: facade\r\n{padding}\r\n".encode())
        assert _response(sock).startswith(b"HTTP/1.1 200 ")
