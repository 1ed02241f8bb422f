"""Class 4: frames shaped to make the facade hold what no message limit counts.

A WebSocket message may come in any number of fragments, and the parser
keeps each one until the last arrives. The size bound (``maxMessageBytes``)
counts their bytes, not their number: a client that opens a message and
then sends empty continuation frames, six bytes each on the wire, made the
facade keep a list entry per fragment, for as long as it kept sending. And
bytes that are not UTF-8 in a text message are the client's mistake, to be
refused with a close code, not logged as a server error.
"""

from __future__ import annotations

import json

import pytest
from websockets.frames import Opcode

from .conftest import FACADE, assert_serves_a_turn
from .hostile import RawWebSocket, client_frame, peak_rss, rss_kib

RSS_RATIO = 1.2
MESSAGE_TOO_BIG = 1009
INVALID_DATA = 1007
ATTACK_SECONDS = 4.0


def _close_code_after(agent, frames: bytes, *, repeat: bytes = b"", seconds: float = 0.0):
    """Send ``frames``, then ``repeat`` over and over for ``seconds``; (close code, baseline, peak RSS)."""
    assert_serves_a_turn(agent)
    pids = (agent.facade.pid, agent.runtime.pid)
    baseline = {pid: rss_kib(pid) for pid in pids}
    ws = RawWebSocket.connect(agent.port)
    try:
        with peak_rss(*pids) as rss:
            ws.sock.sendall(frames)
            if repeat:
                ws.flood(repeat, seconds=seconds)
            code = ws.close_code(timeout=FACADE.send_timeout_seconds + 10)
    finally:
        ws.close()
    return code, baseline, rss.peak


@pytest.mark.parametrize(
    "fragment",
    [
        pytest.param(b"", id="empty: counted at 64 bytes each"),
        pytest.param(b" " * 100, id="small: counted by their bytes"),
    ],
)
def test_a_message_of_endless_fragments_is_refused_and_costs_little(agent, fragment):
    code, baseline, peak = _close_code_after(
        agent,
        client_frame(Opcode.TEXT, b'{"type": "message", ', fin=False),
        repeat=client_frame(Opcode.CONT, fragment, fin=False),
        seconds=ATTACK_SECONDS,
    )
    assert code == MESSAGE_TOO_BIG
    for pid, before in baseline.items():
        assert peak[pid] < before * RSS_RATIO, f"pid {pid}: {before} KiB → {peak[pid]} KiB"
    assert_serves_a_turn(agent)


def test_a_message_in_a_few_fragments_is_served(agent):
    """Fragments are legal: a message in a handful of them is a message."""
    content = json.dumps({"type": "message", "content": "in pieces"}).encode()
    pieces = [content[i : i + 8] for i in range(0, len(content), 8)]
    frames = client_frame(Opcode.TEXT, pieces[0], fin=False) + b"".join(
        client_frame(Opcode.CONT, piece, fin=index == len(pieces) - 1)
        for index, piece in enumerate(pieces[1:], start=1)
    )
    ws = RawWebSocket.connect(agent.port)
    try:
        ws.sock.sendall(frames)
        kinds = ws.frame_types(until="done", timeout=10)
    finally:
        ws.close()
    assert kinds[0] == "connected" and kinds[-1] == "done", kinds
    assert "error" not in kinds, kinds


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(client_frame(Opcode.TEXT, b'{"type": "message", "content": "\xff\xfe"}'), id="whole"),
        pytest.param(
            client_frame(Opcode.TEXT, b'{"type": "message", "content": "\xc3', fin=False)
            + client_frame(Opcode.CONT, b'("}'),
            id="split-in-a-character",
        ),
    ],
)
def test_text_that_is_not_utf8_is_refused_without_a_server_error(agent, frames):
    errors_before = agent.log("facade").count("Traceback")
    code, _baseline, _peak = _close_code_after(agent, frames)
    assert code == INVALID_DATA
    assert agent.log("facade").count("Traceback") == errors_before, agent.log("facade")[-3000:]
    assert_serves_a_turn(agent)


def test_a_binary_message_gets_an_error_frame(agent):
    """The protocol is JSON text; a binary message is the client's mistake, answered."""
    ws = RawWebSocket.connect(agent.port)
    try:
        ws.sock.sendall(client_frame(Opcode.BINARY, b'{"type": "ping"}'))
        frames = ws.frames(count=2, timeout=10)
    finally:
        ws.close()
    assert frames[0]["type"] == "connected"
    assert frames[1]["type"] == "error" and frames[1]["code"] == "INVALID_MESSAGE", frames
    assert_serves_a_turn(agent)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(rb'{"type": "message", "content": "hi \ud800"}', id="content"),
        pytest.param(rb'{"type": "message", "content": "hi", "id": "\udfff"}', id="id"),
        pytest.param(rb'{"type": "message", "content": "hi", "metadata": {"\ud800": "\udc00x"}}', id="metadata"),
    ],
)
def test_a_lone_surrogate_escaped_in_json_is_the_clients_error(agent, frame):
    """JSON may escape half of a surrogate pair, which no UTF-8 text can hold:
    the frame is valid UTF-8 and valid JSON, and its string is not text. The
    client gets an error frame; its connection and the replica go on."""
    ws = RawWebSocket.connect(agent.port)
    try:
        ws.sock.sendall(client_frame(Opcode.TEXT, frame))
        frames = ws.frames(count=2, timeout=10)
    finally:
        ws.close()
    assert frames[1]["type"] == "error" and frames[1]["code"] == "INVALID_MESSAGE", frames
    assert "Traceback" not in agent.log("facade")
    assert_serves_a_turn(agent)
