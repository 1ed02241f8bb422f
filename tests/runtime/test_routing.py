"""The runtime follows its config file's prompt rollout without a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from omnia.agent import Agent
from omnia.config import AgentConfig, PromptConfig, PromptRollout
from omnia.protocol import sessions
from omnia.providers.mock import MockProvider
from omnia.runtime.routing import ConfigWatcher
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import MemoryStore

V1 = PromptConfig(version="1.0.0", system_prompt="You are helpful.")
V2 = PromptConfig(version="2.0.0", system_prompt="You are very helpful.")


def config(**rollout) -> AgentConfig:
    return AgentConfig(name="helper", prompts=PromptRollout(**rollout))


def write(path: Path, value: AgentConfig | str) -> None:
    path.write_text(value if isinstance(value, str) else value.to_json())


@pytest.fixture
def watched(tmp_path) -> tuple[Agent, ConfigWatcher, Path]:
    path = tmp_path / "agent.json"
    start = config(stable=V1, canary=V2, canary_weight=0)
    write(path, start)
    agent = Agent(config=start, provider=MockProvider(start.provider.mock), store=MemoryStore())
    return agent, ConfigWatcher(agent, path), path


def ids_in_the_canary(weight: int) -> list[str]:
    """Session ids ``choose_version`` puts in the canary at ``weight`` percent, but not at 0."""
    ids = [f"session-{n}" for n in range(200)]
    return [i for i in ids if sessions.canary_bucket(i) < weight]


async def test_a_new_weight_changes_the_version_new_sessions_get(watched):
    agent, watcher, path = watched
    before = await agent.create_session("before")
    assert before.prompt_version == "1.0.0"
    write(path, config(stable=V1, canary=V2, canary_weight=100))
    assert watcher.check()
    assert agent.config.prompts.canary_weight == 100
    assert (await agent.create_session("after")).prompt_version == "2.0.0"
    description = await AgentRuntimeService(agent).Describe(None, None)
    assert (description.canary_version, description.canary_weight) == ("2.0.0", 100)
    # A session keeps the version it started on.
    assert (await agent.store.get("before")).prompt_version == "1.0.0"


async def test_a_weight_step_sends_its_share_of_new_ids_to_the_canary(watched):
    agent, watcher, path = watched
    chosen = ids_in_the_canary(50)
    assert chosen
    write(path, config(stable=V1, canary=V2, canary_weight=50))
    assert watcher.check()
    for session_id in chosen:
        assert (await agent.create_session(session_id)).prompt_version == "2.0.0"


async def test_a_promotion_and_a_rollback_apply_and_an_unchanged_file_does_nothing(watched):
    agent, watcher, path = watched
    assert not watcher.check()
    write(path, config(stable=V2, retained=[V1]))
    assert watcher.check()
    assert (await agent.create_session("x")).prompt_version == "2.0.0"
    write(path, config(stable=V1))
    assert watcher.check()
    assert (await agent.create_session("y")).prompt_version == "1.0.0"


async def test_a_version_the_runtime_does_not_hold_joins_when_it_renders(watched):
    agent, watcher, path = watched
    v3 = PromptConfig(version="3.0.0", system_prompt="Be {{ tone }}.", variables={"tone": "brief"})
    write(path, config(stable=V1, canary=v3, canary_weight=100))
    assert watcher.check()
    assert (await agent.create_session("z")).prompt_version == "3.0.0"


@pytest.mark.parametrize("change, reason", [
    ("{", "invalid agent configuration"),
    (config(stable=V1, canary=V2, canary_weight=100).model_copy(update={"name": "other"}), "settings besides"),
    (config(stable=V1.model_copy(update={"system_prompt": "Edited."})), "content of prompt version 1.0.0 changed"),
    (config(stable=V1, canary=PromptConfig(version="3.0.0", system_prompt="{{ nowhere }}"), canary_weight=50),
     "nowhere"),
])
async def test_anything_but_routing_keeps_the_last_good_config_and_is_logged_once(watched, caplog, change, reason):
    agent, watcher, path = watched
    running = agent.config
    write(path, change)
    with caplog.at_level(logging.WARNING, logger="omnia.runtime.routing"):
        assert not watcher.check()
        assert not watcher.check()
        path.write_text(path.read_text())  # rewritten, same content
        assert not watcher.check()
    assert agent.config is running
    warnings = [r for r in caplog.records if r.name == "omnia.runtime.routing"]
    assert len(warnings) == 1
    assert reason in warnings[0].reason


async def test_after_a_refused_file_a_good_one_applies(watched):
    agent, watcher, path = watched
    write(path, "not json")
    assert not watcher.check()
    write(path, config(stable=V1, canary=V2, canary_weight=100))
    assert watcher.check()
    assert agent.config.prompts.canary_weight == 100


async def test_a_missing_file_keeps_the_config(watched):
    agent, watcher, path = watched
    running = agent.config
    path.unlink()
    assert not watcher.check()
    assert agent.config is running
