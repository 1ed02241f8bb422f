from __future__ import annotations

import pytest

from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply

from .processes import AgentProcesses


def mock_config(**facade) -> AgentConfig:
    script = MockScript(
        replies=[
            ScriptedReply(match="slow", text="tick " * 400, chunk_size=5, chunk_delay_ms=20),
            ScriptedReply(text="Hello from the mock model.", chunk_size=4),
        ]
    )
    config = AgentConfig(name="e2e", provider=ProviderConfig(type="mock", model="mock", mock=script))
    if facade:
        config = config.model_copy(update={"facade": config.facade.model_copy(update=facade)})
    return config


@pytest.fixture
def mock_agent(tmp_path):
    agent = AgentProcesses(mock_config(), tmp_path)
    try:
        yield agent.start()
    finally:
        agent.stop()
