"""The facade outlives its runtime: clear errors while it is gone, recovery when it is back."""

from __future__ import annotations

import json

from websockets.sync.client import connect

from .processes import readyz, wait_until


def _frames_until(ws, kinds: set[str], *, timeout: float = 30.0) -> list[dict]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=timeout))
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


def test_runtime_killed_mid_turn_gives_runtime_unavailable_then_recovers(mock_agent):
    """SIGKILL of the runtime mid-reply: the client gets a retryable RUNTIME_UNAVAILABLE,
    /readyz turns 503, and once the runtime is back the same facade serves new turns."""
    with connect(mock_agent.ws_url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": "slow please"}))
        _frames_until(ws, {"chunk"})
        mock_agent.kill_runtime()
        frames = _frames_until(ws, {"error", "done"})
    error = frames[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "RUNTIME_UNAVAILABLE", True)

    wait_until(lambda: readyz(mock_agent.url) == 503, timeout=15, what="/readyz 503")

    mock_agent.start_runtime()
    mock_agent.wait_ready(timeout=60)
    with connect(mock_agent.ws_url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": "hello again"}))
        frames = _frames_until(ws, {"done", "error"})
    assert frames[-1]["type"] == "done"
    assert "".join(f["content"] for f in frames if f["type"] == "chunk") == "Hello from the mock model."
    assert mock_agent.facade.poll() is None
