"""Tools through real runtime and facade processes, seen by a WebSocket client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply, ScriptedToolCall

from ..e2e.processes import AgentProcesses, free_port, readyz
from .conftest import http_tool, mcp_source
from .serving import mcp_service

REPO = Path(__file__).resolve().parents[2]


def scripted(*turns: tuple[str, str, dict]) -> MockScript:
    """For each (word, tool, arguments): a message containing ``word`` makes the model call ``tool``."""
    replies = []
    for word, tool, arguments in turns:
        replies.append(ScriptedReply(match=word, tool_calls=[ScriptedToolCall(name=tool, arguments=arguments)]))
        replies.append(ScriptedReply(match=f"(after {tool})", text=f"Used {tool}."))
    return MockScript(replies=replies)


def turn(ws, text: str, *, answer_client_tools: str | None = None) -> list[dict]:
    ws.send(json.dumps({"type": "message", "content": text}))
    frames = []
    while not frames or frames[-1]["type"] not in ("done", "error"):
        frame = json.loads(ws.recv(timeout=30))
        frames.append(frame)
        if frame["type"] == "tool_call" and frame["client_side"] and answer_client_tools is not None:
            ws.send(json.dumps({"type": "tool_result", "id": frame["id"], "content": answer_client_tools}))
    return frames


def of_type(frames: list[dict], kind: str) -> list[dict]:
    return [frame for frame in frames if frame["type"] == kind]


def test_tool_calls_and_results_reach_the_websocket_client(tmp_path, http_server, mcp_server):
    tools = [
        http_tool(
            "whoami", http_server.url + "/whoami",
            headers=[{"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_WHOAMI_AUTHORIZATION"}],
        ),
        mcp_source("calc", url=mcp_server.url + "/mcp", tools=["add"]),
    ]
    config = AgentConfig(
        name="tools-e2e",
        provider=ProviderConfig(
            type="mock", mock=scripted(("who", "whoami", {}), ("sum", "add", {"a": 40, "b": 2}))
        ),
        tools=tools,
    )
    agent = AgentProcesses(config, tmp_path, env={"OMNIA_TOOL_WHOAMI_AUTHORIZATION": "Bearer e2e"}).start()
    try:
        with connect(agent.ws_url) as ws:
            json.loads(ws.recv(timeout=10))
            who = turn(ws, "who am I?")
            added = turn(ws, "sum please")
    finally:
        agent.stop()
    (call,) = of_type(who, "tool_call")
    assert (call["name"], call["arguments"], call["client_side"]) == ("whoami", {}, False)
    (result,) = of_type(who, "tool_result")
    assert (result["id"], result["content"], result["is_error"]) == (call["id"], "Bearer e2e", False)
    assert who[-1]["type"] == "done"
    assert [f["type"] for f in added if f["type"] != "chunk"] == ["tool_call", "tool_result", "done"]
    assert of_type(added, "tool_result")[0]["content"] == "42"
    assert "Bearer e2e" not in agent.config_path.read_text()


def test_the_runtime_starts_without_its_mcp_server_and_offers_its_tools_once_it_is_up(tmp_path):
    service = mcp_service()
    config = AgentConfig(
        name="late-tools",
        provider=ProviderConfig(type="mock", mock=scripted(("sum", "add", {"a": 2, "b": 3}))),
        tools=[mcp_source("calc", url=service.url + "/mcp", tools=["add"])],
    )
    agent = AgentProcesses(config, tmp_path)
    try:
        agent.start(timeout=60)
        with connect(agent.ws_url) as ws:
            json.loads(ws.recv(timeout=10))
            before = of_type(turn(ws, "sum"), "tool_result")[0]
            assert (before["content"], before["is_error"]) == ("unknown tool 'add'", True)
            service.start()
            deadline = time.monotonic() + 40
            while True:
                after = of_type(turn(ws, "sum"), "tool_result")[0]
                if not after["is_error"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        assert (after["content"], after["is_error"]) == ("5", False)
        assert agent.runtime.poll() is None
    finally:
        agent.stop()
        service.stop()


def test_the_tools_example_runs_under_omnia_run(spawned):
    """examples/tools: an MCP stdio server beside the manifests and a client tool, on the mock model."""
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = spawned(
        [sys.executable, "-m", "omnia", "run", str(REPO / "examples/tools"), "--port", str(port)],
        stop_signal=signal.SIGINT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        printed = []
        for line in run.stdout:
            printed.append(line)
            if "Press Ctrl-C" in line:
                break
        assert readyz(f"http://127.0.0.1:{port}") == 200, "".join(printed)
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            json.loads(ws.recv(timeout=10))
            converted = turn(ws, "convert 21 degrees")
            located = turn(ws, "where am I?", answer_client_tools="Lisbon, PT")
    finally:
        run.send_signal(signal.SIGINT)
        output = "".join(printed) + run.communicate(timeout=60)[0]
    call = of_type(converted, "tool_call")[0]
    assert (call["name"], call["arguments"], call["client_side"]) == ("celsius_to_fahrenheit", {"celsius": 21}, False)
    assert of_type(converted, "tool_result")[0]["content"] == "21 °C is 69.8 °F"
    client_call = of_type(located, "tool_call")[0]
    assert (client_call["name"], client_call["client_side"]) == ("get_location", True)
    assert located[-1]["type"] == "done", output
    assert run.returncode == 0, output
