"""Prompt rendering, what clients may set in it, and the choice of prompt version for new sessions."""

from __future__ import annotations

import re

import pytest

from omnia.agent import PromptError, PromptRenderer, choose_version, find_version
from omnia.agent.prompts import ClientChoice, InputError, check_sources, client_choice
from omnia.config import ClientInputsConfig, PromptConfig, PromptRollout


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


def test_check_renders_templates_with_an_empty_message():
    """A template for the user's turn uses {{ message }}; start-up must not call that undefined."""
    prompt = PromptConfig(version="1.0.0", templates={"ask": "Question: {{ message }}"})
    PromptRenderer(prompt).check()


def test_a_failure_inside_a_template_is_a_prompt_error_whatever_its_kind():
    """Values a client may set can still break arithmetic in a template; that is no crash."""
    prompt = PromptConfig(version="1.0.0", templates={"split": "{{ 10 // parts }}"}, variables={"parts": "2"})
    with pytest.raises(PromptError, match="split"):
        PromptRenderer(prompt).template("split", {"parts": 0})


# --- client inputs ------------------------------------------------------------

INPUTS = ClientInputsConfig.model_validate(
    {
        "variables": {
            "locale": {"type": "enum", "values": ["en", "fr"]},
            "order_id": {"pattern": "[A-Z]{2}-[0-9]{4}"},
            "note": {"maxLength": 5},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "urgent": {"type": "boolean"},
        },
        "templates": ["ask"],
    }
)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({}, ClientChoice(), id="nothing"),
        pytest.param({"channel": "web", "tags": [1, {"x": 2}]}, ClientChoice(), id="annotations-only"),
        pytest.param({"variables": None, "template": None}, ClientChoice(), id="explicit-nulls"),
        pytest.param(
            {"variables": {"locale": "fr", "order_id": "AB-1234", "note": "hello"}, "template": "ask"},
            ClientChoice({"locale": "fr", "order_id": "AB-1234", "note": "hello"}, "ask"),
            id="strings-enum-and-template",
        ),
        pytest.param(
            {"variables": {"count": -3, "ratio": 0.5, "urgent": False}},
            ClientChoice({"count": -3, "ratio": 0.5, "urgent": False}),
            id="integer-number-boolean",
        ),
        pytest.param({"variables": {"ratio": 2}}, ClientChoice({"ratio": 2}), id="number-given-an-integer"),
    ],
)
def test_declared_inputs_of_the_declared_type_are_accepted(metadata, expected):
    assert client_choice(INPUTS, metadata) == expected


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        pytest.param({"variables": {"persona": "x"}}, "'persona' is not a variable clients may set", id="undeclared"),
        pytest.param({"variables": {"message": "x"}}, "'message' is not a variable", id="message-is-reserved"),
        pytest.param({"variables": {"x" * 500: 1}}, "…' is not a variable", id="long-name-is-cut-short"),
        pytest.param({"variables": ["locale", "fr"]}, "must be a JSON object", id="variables-a-list"),
        pytest.param({"template": "internal"}, "'internal' is not a template clients may pick", id="template"),
        pytest.param({"template": {"name": "ask"}}, "must be a string", id="template-an-object"),
        pytest.param({"variables": {"locale": "de"}}, "one of 'en', 'fr'", id="enum"),
        pytest.param({"variables": {"locale": ["en"]}}, "one of", id="enum-a-list"),
        pytest.param({"variables": {"order_id": "AB-1234x"}}, "does not match", id="pattern-is-anchored"),
        pytest.param({"variables": {"order_id": "AB-1234\n"}}, "does not match", id="pattern-no-trailing-newline"),
        pytest.param({"variables": {"note": "toolong"}}, "longer than 5", id="max-length"),
        pytest.param({"variables": {"note": 5}}, "must be a string", id="string-given-a-number"),
        pytest.param({"variables": {"note": None}}, "must be a string", id="string-given-null"),
        pytest.param({"variables": {"note": {"a": "b"}}}, "must be a string", id="string-given-an-object"),
        pytest.param({"variables": {"count": True}}, "integer", id="integer-given-a-boolean"),
        pytest.param({"variables": {"count": 2.0}}, "integer", id="integer-given-a-float"),
        pytest.param({"variables": {"count": 2**60}}, "integer", id="integer-beyond-json-safety"),
        pytest.param({"variables": {"ratio": "0.5"}}, "finite number", id="number-given-a-string"),
        pytest.param({"variables": {"ratio": float("inf")}}, "finite number", id="number-infinite"),
        pytest.param({"variables": {"ratio": 10**400}}, "finite number", id="number-beyond-a-float"),
        pytest.param({"variables": {"ratio": True}}, "finite number", id="number-given-a-boolean"),
        pytest.param({"variables": {"urgent": 1}}, "true or false", id="boolean-given-an-integer"),
    ],
)
def test_anything_else_is_an_input_error_that_names_only_the_clients_own_key(metadata, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)):
        client_choice(INPUTS, metadata)


def test_a_string_variable_without_max_length_accepts_256_characters():
    inputs = ClientInputsConfig.model_validate({"variables": {"note": {}}})
    assert client_choice(inputs, {"variables": {"note": "x" * 256}}).variables == {"note": "x" * 256}
    with pytest.raises(InputError, match="longer than 256"):
        client_choice(inputs, {"variables": {"note": "x" * 257}})


def test_nothing_is_client_settable_without_a_declaration():
    with pytest.raises(InputError):
        client_choice(ClientInputsConfig(), {"variables": {"name": "Ada"}})
    with pytest.raises(InputError):
        client_choice(ClientInputsConfig(), {"template": "ask"})


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        pytest.param({"templates": ["missing"]}, "client templates ['missing'] do not exist", id="unknown-template"),
        pytest.param({"variables": {"id": {"pattern": "[unclosed"}}}, "client variable id", id="bad-pattern"),
    ],
)
def test_a_declaration_that_cannot_work_fails_at_start_up(inputs, fragment):
    prompt = PromptConfig(version="1.0.0", client_inputs=ClientInputsConfig.model_validate(inputs))
    with pytest.raises(PromptError, match=re.escape(fragment)):
        PromptRenderer(prompt)


@pytest.mark.parametrize(
    ("system_prompt", "templates", "expected"),
    [
        pytest.param("Hi {{ oops", {}, "systemPrompt, line 1:", id="system-prompt-does-not-compile"),
        pytest.param("hi", {"t": "{% if %}"}, "templates.t, line 1:", id="template-does-not-compile"),
        pytest.param("Hi {{ nmae }}", {}, "systemPrompt: 'nmae' is not defined", id="undefined-variable"),
        pytest.param(
            "{% if name %}{{ tone }}{% endif %}", {}, "'tone' is not defined", id="undefined-in-untaken-branch"
        ),
        pytest.param("Hi {{ message }}", {}, "'message' is not defined", id="message-only-in-named-templates"),
    ],
)
def test_check_sources_names_the_field_of_a_broken_template(system_prompt, templates, expected):
    """Mistakes are found by reading the templates, before any message renders them."""
    prompt = PromptConfig(version="1", system_prompt=system_prompt, templates=templates, variables={"name": "A"})
    with pytest.raises(PromptError, match=re.escape(expected)):
        check_sources(prompt)


def test_check_sources_accepts_declared_builtin_and_local_names():
    """Pack variables, client inputs, `message` in named templates, Jinja globals and loop names are defined."""
    prompt = PromptConfig(
        version="1",
        system_prompt="{% for i in range(2) %}{{ i }}{{ loop.index }}{% endfor %}{{ name }}{{ tone }}"
        "{% set x = 1 %}{{ x }}",
        templates={"t": "{{ message }} {{ name }}"},
        variables={"name": "A"},
        client_inputs=ClientInputsConfig(variables={"tone": {"type": "string"}}),
    )
    check_sources(prompt)
