"""A canary weight step reaches running processes through their config file, without a restart."""

from __future__ import annotations

import json
import os

from websockets.sync.client import connect

from omnia.config import PromptConfig, PromptRollout

from .conftest import mock_config
from .processes import AgentProcesses, wait_until

V1 = PromptConfig(version="1.0.0", system_prompt="You are helpful.")
V2 = PromptConfig(version="2.0.0", system_prompt="You are very helpful.")


def rollout(weight: int):
    return mock_config().model_copy(update={"prompts": PromptRollout(stable=V1, canary=V2, canary_weight=weight)})


def new_session_version(agent: AgentProcesses) -> tuple[str, str]:
    """A new session's id and version, after one turn (so that it is stored)."""
    with connect(agent.ws_url) as ws:
        connected = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "message", "content": "hi"}))
        while json.loads(ws.recv(timeout=30))["type"] not in ("done", "error"):
            pass
    return connected["session_id"], connected["prompt_version"]


def resumed_version(agent: AgentProcesses, session_id: str) -> str:
    with connect(f"{agent.ws_url}?session_id={session_id}") as ws:
        return json.loads(ws.recv(timeout=10))["prompt_version"]


def replace(agent: AgentProcesses, text: str) -> None:
    """Swap the file in one step, as the kubelet swaps a mounted ConfigMap."""
    staged = agent.config_path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, agent.config_path)


def test_new_sessions_follow_a_new_weight_without_a_restart(tmp_path):
    agent = AgentProcesses(rollout(0), tmp_path).start()
    try:
        runtime_pid, facade_pid = agent.runtime.pid, agent.facade.pid
        before, version = new_session_version(agent)
        assert version == "1.0.0"

        replace(agent, rollout(100).to_json())
        wait_until(lambda: new_session_version(agent)[1] == "2.0.0", timeout=30, what="new sessions on the canary")
        after, version = new_session_version(agent)
        assert version == "2.0.0"
        assert resumed_version(agent, after) == "2.0.0"
        assert resumed_version(agent, before) == "1.0.0"  # a session keeps its version

        # A file the runtime cannot use leaves it serving as it was.
        replace(agent, "{ not json")
        wait_until(lambda: "serving as before" in agent.log("runtime"), timeout=30, what="the runtime to refuse it")
        assert new_session_version(agent)[1] == "2.0.0"
        assert (agent.runtime.pid, agent.facade.pid) == (runtime_pid, facade_pid)
        assert agent.runtime.poll() is None and agent.facade.poll() is None
    finally:
        agent.stop()
