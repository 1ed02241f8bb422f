from __future__ import annotations

import pytest

from omnia.agent import Agent
from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply, ToolConfig
from omnia.providers.mock import MockProvider
from omnia.sessions import MemoryStore


@pytest.fixture
def agent() -> Agent:
    script = MockScript(
        replies=[
            ScriptedReply(match="slow", text="s" * 200, chunk_size=1, chunk_delay_ms=5),
            ScriptedReply(match="tool", tool_calls=[{"id": "t1", "name": "confirm"}]),
            ScriptedReply(match="after-tool", text="confirmed"),
        ]
    )
    config = AgentConfig(
        name="helper",
        provider=ProviderConfig(type="mock", mock=script),
        tools=[ToolConfig(name="confirm", type="client")],
    )
    return Agent(config=config, provider=MockProvider(script), store=MemoryStore())
