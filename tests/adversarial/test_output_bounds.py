"""Class 1: a client that makes the server write and never reads.

Every way a client can make the facade write — WebSocket pongs, error frames,
pong frames, reply chunks — must stay within a per-connection bound: the
client's kernel buffer fills after a few kilobytes, and everything after that
waits in the facade's memory. Past the bound the connection is closed 1008;
the replica and every other connection live on.
"""

from __future__ import annotations

import json
import time

import pytest
from websockets.frames import Opcode
from websockets.sync.client import connect

from ..e2e.processes import wait_until
from .conftest import FACADE, assert_serves_a_turn
from .hostile import TINY_RECEIVE_BUFFER, RawWebSocket, client_frame, peak_rss, rss_kib

# The attack may cost a bounded amount (output buffers, parser state), never
# a multiple of the process: a fifth on top of the baseline of the same test.
RSS_RATIO = 1.2
POLICY_VIOLATION = 1008
# Long enough for the facade to give up on the client (it closes 1008), short
# enough that the client reads the close frame before it would be dropped.
ATTACK_SECONDS = FACADE.send_timeout_seconds + 0.5
# What the facade logs when it closes a connection that took nothing for its
# send timeout.
STALL_LINE = "closing a WebSocket: nothing sent for"


def _attack(
    agent,
    flood,
    *,
    baseline: dict[int, int] | None = None,
    read=lambda ws: ws.close_code(timeout=FACADE.send_timeout_seconds + 10),
) -> tuple[int | None, dict[int, int], dict[int, int]]:
    """Run ``flood`` on a non-reading connection; (close code, baseline RSS, peak RSS).

    Once the facade has given up on the client, ``read`` reads what it sent
    and returns the close code. The baseline is the processes' RSS after a
    normal turn unless given.
    """
    assert_serves_a_turn(agent)
    pids = (agent.facade.pid, agent.runtime.pid)
    if baseline is None:
        baseline = {pid: rss_kib(pid) for pid in pids}
    stalls = agent.log("facade").count(STALL_LINE)
    ws = RawWebSocket.connect(agent.port, receive_buffer=TINY_RECEIVE_BUFFER)
    try:
        with peak_rss(*pids) as rss:
            flood(ws)
            # Still not reading: the facade gives up on its own clock. Reading
            # before it has would let it go on answering the backlog the flood
            # left in the kernel's buffers, for as long as that backlog lasts
            # on a loaded machine.
            # From then on it has a send timeout to start reading.
            wait_until(
                lambda: agent.log("facade").count(STALL_LINE) > stalls,
                timeout=60,
                interval=0.01,
                what="the facade to close the connection that does not read",
            )
            code = read(ws)
    finally:
        ws.close()
    return code, baseline, rss.peak


def _assert_bounded(baseline: dict[int, int], peak: dict[int, int]) -> None:
    for pid, before in baseline.items():
        assert peak[pid] < before * RSS_RATIO, f"pid {pid}: {before} KiB → {peak[pid]} KiB"


def test_ping_flood_from_a_client_that_never_reads_is_closed_and_costs_little(agent):
    """Pongs are written by the WebSocket layer itself, without waiting for the
    socket: a client that pings and never reads made the facade buffer pongs
    without bound (hundreds of MB in seconds) until the pod was OOM-killed."""
    ping = client_frame(Opcode.PING, b"p" * 125)
    code, baseline, peak = _attack(agent, lambda ws: ws.flood(ping, seconds=ATTACK_SECONDS))
    assert code == POLICY_VIOLATION
    _assert_bounded(baseline, peak)
    assert_serves_a_turn(agent)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("not json", id="error-frames"),
        pytest.param(json.dumps({"type": "ping", "id": "p" * 200}), id="protocol-pongs"),
    ],
)
def test_frames_answered_to_a_client_that_never_reads_are_bounded_and_it_is_closed(
    agent, payload
):
    """Each bad frame gets an error frame and each ``ping`` a ``pong``: the
    facade waits for the socket before writing them, so memory is bounded,
    but a client that never reads must not hold its connection forever."""
    frame = client_frame(Opcode.TEXT, payload.encode())
    code, baseline, peak = _attack(agent, lambda ws: ws.flood(frame, seconds=ATTACK_SECONDS))
    assert code == POLICY_VIOLATION
    _assert_bounded(baseline, peak)
    assert_serves_a_turn(agent)


def test_a_slow_reader_closed_for_not_reading_still_gets_its_close_frame(agent):
    """After the close frame the facade drops a client that takes nothing for
    ``sendTimeoutSeconds``, not one still reading its backlog: a client on a
    slow link (here 4 KiB every 50 ms for one and a half send timeouts, then
    at full speed) reads every frame up to the close. The test above found
    it: on a loaded machine its reader lost the close frame now and then."""
    frame = client_frame(Opcode.TEXT, b"not json")
    code, _baseline, _peak = _attack(
        agent,
        lambda ws: ws.flood(frame, seconds=ATTACK_SECONDS),
        read=lambda ws: ws.close_code(timeout=60, slow_for=1.5 * FACADE.send_timeout_seconds),
    )
    assert code == POLICY_VIOLATION
    assert_serves_a_turn(agent)


def test_a_reply_to_a_client_that_never_reads_is_cut_after_the_send_timeout(agent):
    """A long reply to a client that stopped reading waits for the socket; after
    ``sendTimeoutSeconds`` without progress the connection is closed, which
    cancels the turn in the runtime rather than holding it for the turn timeout.
    Producing the reply has its own cost, so the baseline is the peak of the
    same turn read by a well-behaved client: not reading must cost no more."""
    content = json.dumps({"type": "message", "content": "flood"})
    with peak_rss(agent.facade.pid, agent.runtime.pid) as reading:
        with connect(agent.ws_url, max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(content)
            while json.loads(ws.recv(timeout=30))["type"] == "chunk":
                pass
    message = client_frame(Opcode.TEXT, content.encode())

    def flood(ws: RawWebSocket) -> None:
        ws.sock.sendall(message)
        time.sleep(ATTACK_SECONDS)

    code, baseline, peak = _attack(agent, flood, baseline=reading.peak)
    assert code == POLICY_VIOLATION
    _assert_bounded(baseline, peak)
    assert_serves_a_turn(agent)


def test_a_client_that_never_reads_even_the_close_frame_is_dropped(agent):
    """Closing a socket waits until its buffer is written, which for a client
    that never reads is never: the facade drops it a send timeout after the
    close frame, and with it the memory and the descriptor."""
    ping = client_frame(Opcode.PING, b"p" * 125)
    code, baseline, peak = _attack(
        agent, lambda ws: ws.flood(ping, seconds=3 * FACADE.send_timeout_seconds)
    )
    assert code is None
    _assert_bounded(baseline, peak)
    assert_serves_a_turn(agent)
