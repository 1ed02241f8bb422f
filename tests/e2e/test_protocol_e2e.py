"""The protocol through real processes: a turn's frames, bad input, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.sync.client import connect

from .conftest import mock_config
from .processes import AgentProcesses


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _turn(ws, text: str) -> list[dict]:
    ws.send(json.dumps({"type": "message", "content": text}))
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=30))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def test_turn_frames_are_connected_chunks_then_done_with_usage(mock_agent):
    with connect(mock_agent.ws_url) as ws:
        connected = json.loads(ws.recv(timeout=10))
        frames = _turn(ws, "hi")
    assert connected["type"] == "connected" and connected["session_id"] and connected["agent"] == "e2e"
    assert [f["type"] for f in frames[:-1]] == ["chunk"] * (len(frames) - 1)
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] == 5


def test_resume_by_session_id_continues_the_same_session(mock_agent):
    with connect(mock_agent.ws_url) as ws:
        session_id = json.loads(ws.recv(timeout=10))["session_id"]
        _turn(ws, "first")
    with connect(f"{mock_agent.ws_url}?session_id={session_id}") as ws:
        connected = json.loads(ws.recv(timeout=10))
        assert (connected["session_id"], connected["resumed"]) == (session_id, True)
        assert _turn(ws, "second")[-1]["type"] == "done"


def test_resume_of_an_unknown_session_is_session_not_found(mock_agent):
    with connect(f"{mock_agent.ws_url}?session_id=does-not-exist") as ws:
        frame = json.loads(ws.recv(timeout=10))
    assert (frame["type"], frame["code"]) == ("error", "SESSION_NOT_FOUND")


def test_a_session_is_stored_with_its_first_message_not_at_connect(mock_agent):
    """``connected`` costs the store nothing: an id that never talked resumes nothing."""
    with connect(mock_agent.ws_url) as ws:
        silent = json.loads(ws.recv(timeout=10))["session_id"]
    with connect(f"{mock_agent.ws_url}?session_id={silent}") as ws:
        frame = json.loads(ws.recv(timeout=10))
    assert (frame["type"], frame["code"]) == ("error", "SESSION_NOT_FOUND")
    with connect(mock_agent.ws_url) as ws:
        talked = json.loads(ws.recv(timeout=10))
        assert _turn(ws, "first")[-1]["turn_index"] == 0
    with connect(f"{mock_agent.ws_url}?session_id={talked['session_id']}") as ws:
        resumed = json.loads(ws.recv(timeout=10))
    assert (resumed["resumed"], resumed["turns"], resumed["prompt_version"]) == (
        True, 1, talked["prompt_version"],
    )


BAD_FRAMES = [
    pytest.param("this is not json", "INVALID_MESSAGE", id="non-json"),
    pytest.param(json.dumps({"type": "teleport"}), "INVALID_MESSAGE", id="unknown-type"),
    pytest.param(json.dumps({"type": "message"}), "INVALID_MESSAGE", id="message-without-content"),
    pytest.param(json.dumps({"type": "message", "content": "x" * 70_000}), "MESSAGE_TOO_LARGE", id="oversized"),
    pytest.param(b"\x00\x01binary", "INVALID_MESSAGE", id="binary"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
def test_bad_frame_gets_its_error_and_the_connection_keeps_working(mock_agent, frame, code):
    with connect(mock_agent.ws_url, max_size=None) as ws:
        json.loads(ws.recv(timeout=10))
        ws.send(frame)
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["code"]) == ("error", code)
        assert _turn(ws, "still there?")[-1]["type"] == "done"


def test_thousands_of_bad_frames_crash_nothing_and_do_not_grow_memory(tmp_path):
    """Memory is compared across two equal floods in one run: the second flood
    must not add what the first one did (no per-frame leak)."""
    agent = AgentProcesses(mock_config(messages_per_second=1e9, message_burst=1_000_000), tmp_path).start()
    try:
        frames = [p.values[0] for p in BAD_FRAMES]
        with connect(agent.ws_url, max_size=None) as ws:
            json.loads(ws.recv(timeout=10))

            def flood(count: int) -> None:
                for i in range(count):
                    ws.send(frames[i % len(frames)])
                for _ in range(count):
                    assert json.loads(ws.recv(timeout=30))["type"] == "error"

            flood(2000)
            first = _rss_kib(agent.facade.pid)
            flood(2000)
            second = _rss_kib(agent.facade.pid)
            flood(2000)
            third = _rss_kib(agent.facade.pid)
            assert _turn(ws, "alive?")[-1]["type"] == "done"
        assert agent.facade.poll() is None and agent.runtime.poll() is None
        assert third - first < max(first // 10, 4096), (first, second, third)
    finally:
        agent.stop()
