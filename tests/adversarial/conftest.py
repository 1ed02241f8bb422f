from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from omnia.config import AgentConfig, FacadeConfig, MockScript, ProviderConfig, ScriptedReply

from ..e2e.processes import AgentProcesses

# A reply far larger than the socket buffers, produced as fast as the runtime can.
FLOOD_TEXT = "word " * 400_000

# Short deadlines so that each attack is over in seconds; small caps so that
# a test reaches them with a few dozen sockets.
FACADE = FacadeConfig(
    messages_per_second=10_000,
    message_burst=10_000,
    drain_timeout_seconds=2.0,
    send_timeout_seconds=2.0,
    request_header_timeout_seconds=1.0,
    max_pending_connections=40,
    max_pending_connections_per_address=10,
)


def hostile_config() -> AgentConfig:
    script = MockScript(
        replies=[
            ScriptedReply(match="flood", text=FLOOD_TEXT, chunk_size=200),
            ScriptedReply(text="Hello from the mock model.", chunk_size=4),
        ]
    )
    return AgentConfig(
        name="adversarial",
        provider=ProviderConfig(type="mock", model="mock", mock=script),
        facade=FACADE,
    )


@pytest.fixture(scope="module")
def agent(request, tmp_path_factory):
    """One facade and one runtime for a module's attacks; each test checks they survived.

    Indirectly parametrised, the parameter is ``OMNIA_SPEEDUPS`` (``auto``,
    the default: uvloop and httptools when installed; ``off``: asyncio and h11).
    """
    speedups = getattr(request, "param", "auto")
    # Info lines: some attacks wait for the facade to say it gave up on a client.
    processes = AgentProcesses(
        hostile_config(),
        tmp_path_factory.mktemp("agent"),
        env={"OMNIA_LOG_LEVEL": "info", "OMNIA_SPEEDUPS": speedups},
    )
    try:
        yield processes.start()
    finally:
        processes.stop()


def assert_serves_a_turn(agent: AgentProcesses) -> None:
    """The replica lives: both processes run and a well-behaved client gets a whole turn."""
    assert agent.facade.poll() is None, agent.log("facade")
    assert agent.runtime.poll() is None, agent.log("runtime")
    with connect(agent.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": "still there?"}))
        while (frame := json.loads(ws.recv(timeout=10)))["type"] == "chunk":
            pass
    assert frame["type"] == "done", frame
