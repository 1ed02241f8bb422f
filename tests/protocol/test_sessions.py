"""The new-session choices the facade announces and the runtime stores."""

from __future__ import annotations

import pytest

from omnia.agent.prompts import choose_version
from omnia.config import PromptConfig, PromptRollout
from omnia.protocol import sessions


@pytest.mark.parametrize("weight", [0, 1, 30, 50, 99, 100])
def test_the_facades_choice_is_the_runtimes_choice(weight: int) -> None:
    """``connected`` announces the version before the runtime sees the session: they must agree."""
    rollout = PromptRollout(
        stable=PromptConfig(version="1"), canary=PromptConfig(version="2"), canary_weight=weight
    )
    for n in range(300):
        session_id = sessions.new_id() if n % 2 else f"session-{n}"
        assert sessions.prompt_version(
            session_id, stable="1", canary="2", canary_weight=weight
        ) == choose_version(rollout, session_id=session_id).version


def test_without_a_canary_every_session_gets_stable() -> None:
    assert {
        sessions.prompt_version(sessions.new_id(), stable="1", canary="", canary_weight=100)
        for _ in range(50)
    } == {"1"}


def test_new_ids_are_distinct_hex() -> None:
    ids = {sessions.new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
