"""Prompt rendering and the choice of prompt version for new sessions."""

from __future__ import annotations

import pytest

from omnia.agent import PromptError, PromptRenderer, choose_version, find_version
from omnia.config import PromptConfig, PromptRollout


def test_system_prompt_renders_defaults_and_session_overrides():
    prompt = PromptConfig(
        version="1.0.0",
        system_prompt="You are {{ name }} for {{ team }}.",
        variables={"name": "Ada", "team": "billing"},
    )
    renderer = PromptRenderer(prompt)
    assert renderer.system() == "You are Ada for billing."
    assert renderer.system({"team": "support"}) == "You are Ada for support."


def test_named_templates_can_be_included_and_rendered_alone():
    prompt = PromptConfig(
        version="1.0.0",
        system_prompt="{% include 'rules' %} Be brief.",
        templates={"rules": "Never share secrets.", "ask": "Question: {{ message }}"},
    )
    renderer = PromptRenderer(prompt)
    assert renderer.system() == "Never share secrets. Be brief."
    assert renderer.template("ask", {"message": "why?"}) == "Question: why?"


@pytest.mark.parametrize(
    ("system_prompt", "fragment"),
    [
        pytest.param("Hello {{ missing }}", "missing", id="undefined-variable"),
        pytest.param("{{ ''.__class__.__mro__ }}", "unsafe", id="sandbox-blocks-dunder-access"),
        pytest.param("{% for %}", "prompt 9.9.9", id="syntax-error"),
    ],
)
def test_bad_templates_fail_loudly_instead_of_rendering_something(system_prompt, fragment):
    """A prompt that silently renders empty is worse than one that fails at start-up."""
    with pytest.raises(PromptError, match=fragment):
        PromptRenderer(PromptConfig(version="9.9.9", system_prompt=system_prompt)).check()


def test_unknown_template_name_is_an_error():
    with pytest.raises(PromptError, match="no template 'nope'"):
        PromptRenderer(PromptConfig()).template("nope")


def _rollout(weight: int) -> PromptRollout:
    return PromptRollout(
        stable=PromptConfig(version="1.0.0"),
        canary=PromptConfig(version="2.0.0"),
        canary_weight=weight,
    )


def test_canary_share_of_new_sessions_matches_its_weight():
    rollout = _rollout(20)
    chosen = [choose_version(rollout, session_id=f"session-{i}").version for i in range(2000)]
    share = chosen.count("2.0.0") / len(chosen)
    assert 0.17 < share < 0.23


@pytest.mark.parametrize(("weight", "expected"), [pytest.param(0, "1.0.0", id="zero"), pytest.param(100, "2.0.0", id="full")])
def test_canary_weight_bounds_send_everyone_one_way(weight, expected):
    rollout = _rollout(weight)
    assert {choose_version(rollout, session_id=str(i)).version for i in range(200)} == {expected}


def test_version_choice_is_sticky_for_a_session_id():
    rollout = _rollout(50)
    assert len({choose_version(rollout, session_id="abc").version for _ in range(20)}) == 1


def test_resumed_session_keeps_a_retained_version_and_falls_back_to_stable_when_retired():
    rollout = PromptRollout(
        stable=PromptConfig(version="2.0.0"), retained=[PromptConfig(version="1.0.0")]
    )
    assert find_version(rollout, "1.0.0").version == "1.0.0"
    assert find_version(rollout, "0.1.0").version == "2.0.0"
