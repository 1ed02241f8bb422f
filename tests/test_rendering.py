"""Rendering a PromptPack's client inputs into the runtime's config, for omnia run and the operator alike."""

from __future__ import annotations

import pytest

from omnia.api.v1alpha1 import parse_manifest
from omnia.config import BudgetLimit, ClientInputsConfig, ClientVariableConfig, PromptRollout
from omnia.operator import hashing
from omnia.rendering import RenderError, prompt_config, render_agent_config


def _pack(**spec):
    return parse_manifest(
        {
            "apiVersion": "omnia.altairalabs.ai/v1alpha1",
            "kind": "PromptPack",
            "metadata": {"name": "prompts"},
            "spec": {"version": "1.0.0", **spec},
        }
    )


def test_a_pack_without_client_inputs_lets_clients_set_nothing():
    assert prompt_config(_pack(systemPrompt="Hi.").spec).client_inputs == ClientInputsConfig()


def test_declared_inputs_reach_the_config_with_the_omitted_limits_filled_in():
    pack = _pack(
        systemPrompt="Hi.",
        templates={"ask": "Q: {{ message }}"},
        clientInputs={
            "variables": [
                {"name": "note"},
                {"name": "order_id", "pattern": "^[0-9]+$", "maxLength": 12},
                {"name": "locale", "type": "enum", "values": ["en", "fr"]},
                {"name": "count", "type": "integer"},
            ],
            "templates": ["ask"],
        },
    )
    assert prompt_config(pack.spec).client_inputs == ClientInputsConfig(
        variables={
            "note": ClientVariableConfig(max_length=256),
            "order_id": ClientVariableConfig(pattern="^[0-9]+$", max_length=12),
            "locale": ClientVariableConfig(type="enum", values=["en", "fr"]),
            "count": ClientVariableConfig(type="integer"),
        },
        templates=["ask"],
    )


def test_a_pattern_that_does_not_compile_is_reported_with_its_field():
    pack = _pack(systemPrompt="Hi.", clientInputs={"variables": [{"name": "id", "pattern": "[unclosed"}]})
    with pytest.raises(RenderError, match=r"spec\.clientInputs\.variables\[id\]\.pattern"):
        prompt_config(pack.spec)


def test_client_templates_must_exist_in_the_configmap_a_pack_is_sourced_from():
    pack = _pack(
        source={"configMapRef": {"name": "content", "key": "pack.yaml"}},
        clientInputs={"templates": ["ask", "internal"]},
    )
    text = "systemPrompt: Hi.\ntemplates:\n  ask: 'Q: {{ message }}'\n"
    with pytest.raises(RenderError, match=r"spec\.clientInputs\.templates: \['internal'\]"):
        prompt_config(pack.spec, source_text=text)
    pack = _pack(source={"configMapRef": {"name": "content", "key": "pack.yaml"}}, clientInputs={"templates": ["ask"]})
    assert prompt_config(pack.spec, source_text=text).client_inputs.templates == ["ask"]


def test_description_and_skills_are_rendered_and_change_the_content_hash():
    """They are content of the version: the agent card of a session's version shows them."""
    plain = prompt_config(_pack(systemPrompt="Hi.").spec)
    described = prompt_config(
        _pack(
            systemPrompt="Hi.",
            description="Answers billing questions.",
            skills=[{"id": "refunds", "name": "Refunds", "tags": ["billing"], "examples": ["Refund order 7"]}],
        ).spec
    )
    assert described.description == "Answers billing questions."
    assert [(s.id, s.name, s.tags, s.examples) for s in described.skills] == [
        ("refunds", "Refunds", ["billing"], ["Refund order 7"])
    ]
    assert hashing.content_hash(described) != hashing.content_hash(plain)


def test_packs_without_client_inputs_keep_their_snapshot_identity():
    """Snapshots taken before client inputs (or descriptions and skills) existed must not look like edited content."""
    prompt = prompt_config(_pack(systemPrompt="Hi {{ name }}.", variables={"name": "Ada"}).spec)
    before = prompt.model_dump(mode="json", by_alias=True, exclude={"version", "client_inputs", "description", "skills"})
    assert hashing.content_hash(prompt) == hashing.digest(before)
    declared = prompt.model_copy(update={"client_inputs": ClientInputsConfig(templates=[])})
    assert hashing.content_hash(declared) == hashing.content_hash(prompt)
    steerable = prompt.model_copy(
        update={"client_inputs": ClientInputsConfig(variables={"name": ClientVariableConfig()})}
    )
    assert hashing.content_hash(steerable) != hashing.content_hash(prompt)


def _agent(**spec):
    return parse_manifest(
        {
            "apiVersion": "omnia.altairalabs.ai/v1alpha1",
            "kind": "AgentRuntime",
            "metadata": {"name": "support", "namespace": "team-a"},
            "spec": {"promptPackRef": {"name": "prompts"}, **spec},
        }
    )


def test_a_budget_reaches_the_config_with_its_shared_name_and_limits():
    agent = _agent(
        budget={"daily": {"tokens": 100000}, "shared": {"name": "team", "monthly": {"costUSD": 250.5}}}
    )
    config = render_agent_config(agent, prompts=PromptRollout(), provider=None)
    assert config.budget.daily == BudgetLimit(tokens=100000)
    assert config.budget.monthly is None
    assert (config.budget.shared.name, config.budget.shared.monthly.cost_usd) == ("team", 250.5)
    assert config.budget.enforced


def test_an_agent_without_a_budget_enforces_none():
    config = render_agent_config(_agent(), prompts=PromptRollout(), provider=None)
    assert not config.budget.enforced



@pytest.mark.parametrize(
    ("protocols", "expected"),
    [
        pytest.param(None, (True, True, True), id="all-on-by-default"),
        pytest.param({"openai": False}, (False, True, True), id="openai-off"),
        pytest.param({"mcp": False, "a2a": False}, (True, False, False), id="mcp-and-a2a-off"),
    ],
)
def test_facade_protocols_reach_the_config(protocols, expected):
    agent = _agent(facade={"protocols": protocols}) if protocols else _agent()
    rendered = render_agent_config(agent, prompts=PromptRollout(), provider=None).facade.protocols
    assert (rendered.openai, rendered.mcp, rendered.a2a) == expected
