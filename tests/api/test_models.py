"""The v1alpha1 models: what a manifest may say and what it means."""

from __future__ import annotations

import datetime

import pytest
import yaml
from pydantic import BaseModel

from omnia.api import v1alpha1
from omnia.api.v1alpha1 import (
    AgentRuntime,
    AgentRuntimeStatus,
    ManifestError,
    PromptPack,
    Provider,
    ProviderSpec,
    ToolRegistry,
    parse_duration,
    parse_manifest,
)
from tests.api.cases import BRIEF_EXAMPLE, InvalidCase, example_documents, invalid_cases, models_below


def test_brief_example_parses_with_percent_and_integer_targets() -> None:
    """The brief's manifest must work unchanged, with both kinds of metric target."""
    agent = parse_manifest(yaml.safe_load(BRIEF_EXAMPLE))

    assert isinstance(agent, AgentRuntime)
    assert agent.metadata.name == "support-agent"
    assert agent.spec.replicas == 3
    assert agent.spec.prompt_pack_ref.name == "support-prompts"
    assert agent.spec.provider_ref is not None and agent.spec.provider_ref.name == "claude-provider"
    assert agent.spec.session.type == "redis"
    autoscaling = agent.spec.autoscaling
    assert autoscaling is not None
    assert (autoscaling.enabled, autoscaling.min_replicas, autoscaling.max_replicas) == (True, 2, 20)
    assert [(m.type, m.name, m.target) for m in autoscaling.metrics] == [
        ("memory", None, "70%"),
        ("custom", "active_connections", 100),
    ]


@pytest.mark.parametrize("document", example_documents())
def test_every_example_manifest_parses(document: dict) -> None:
    """What we show users must be valid."""
    resource = parse_manifest(document)
    assert resource.to_dict()["kind"] == document["kind"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(("spec", "replicas"), 1, id="one-replica"),
        pytest.param(("spec", "session", "type"), "memory", id="memory-sessions"),
        pytest.param(("spec", "session", "ttl"), "24h", id="sessions-kept-a-day"),
        pytest.param(("spec", "facade", "port"), 8080, id="facade-on-8080"),
        pytest.param(("spec", "facade", "auth", "type"), "none", id="no-auth"),
        pytest.param(("spec", "facade", "maxConnections"), 1000, id="thousand-connections"),
    ],
)
def test_minimal_agent_gets_documented_defaults(path: tuple[str, ...], expected: object) -> None:
    """A two-line spec is a complete agent; the defaults are part of the API."""
    agent = parse_manifest(
        {
            "apiVersion": "omnia.altairalabs.ai/v1alpha1",
            "kind": "AgentRuntime",
            "metadata": {"name": "minimal"},
            "spec": {"promptPackRef": {"name": "prompts"}},
        }
    )
    value: object = agent.to_dict()
    for key in path:
        assert isinstance(value, dict)
        value = value[key]
    assert value == expected


def test_autoscaling_defaults_to_hpa_engine() -> None:
    agent = parse_manifest(yaml.safe_load(BRIEF_EXAMPLE))
    assert agent.spec.autoscaling is not None and agent.spec.autoscaling.engine == "hpa"


def test_canary_is_opt_in() -> None:
    pack = PromptPack.model_validate(
        {"metadata": {"name": "p"}, "spec": {"version": "1.0.0", "systemPrompt": "Hi."}}
    )
    assert pack.spec.rollout.strategy == "immediate"
    assert pack.spec.rollout.steps == []


@pytest.mark.parametrize("case", invalid_cases())
def test_invalid_manifest_is_rejected_naming_the_field(case: InvalidCase) -> None:
    """Every rule the API server enforces is also enforced offline, with the field path."""
    with pytest.raises(ManifestError) as raised:
        parse_manifest(case.manifest)
    message = str(raised.value)
    for fragment in case.expect + case.expect_python:
        assert fragment in message


def test_manifest_error_lists_every_problem_with_its_path() -> None:
    document = yaml.safe_load(BRIEF_EXAMPLE)
    document["spec"]["replicsa"] = 2
    document["spec"]["session"]["type"] = "mongodb"

    with pytest.raises(ManifestError) as raised:
        parse_manifest(document)

    assert raised.value.kind == "AgentRuntime"
    assert raised.value.name == "support-agent"
    assert {error.path for error in raised.value.errors} == {"spec.replicsa", "spec.session.type"}
    assert str(raised.value).startswith("AgentRuntime 'support-agent' is invalid:")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        pytest.param(
            {"kind": "AgentRuntime", "apiVersion": "omnia.altairalabs.ai/v1"}, "apiVersion", id="other-version"
        ),
        pytest.param({"kind": "Deployment", "apiVersion": "omnia.altairalabs.ai/v1alpha1"}, "kind", id="foreign-kind"),
        pytest.param({"apiVersion": "omnia.altairalabs.ai/v1alpha1"}, "kind", id="no-kind"),
    ],
)
def test_documents_of_other_kinds_are_rejected(document: dict, path: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest({**document, "metadata": {"name": "x"}})
    assert raised.value.errors[0].path == path


def test_non_mapping_is_rejected() -> None:
    with pytest.raises(ManifestError):
        parse_manifest(["not", "a", "manifest"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(v1alpha1.KINDS))
def test_kind_table_maps_every_kind_to_its_model(kind: str) -> None:
    assert v1alpha1.KINDS[kind].model_fields["kind"].default == kind


def test_python_names_are_snake_case_and_manifests_camel_case() -> None:
    """Code reads as Python, manifests as Kubernetes; baseURL keeps its capitals."""
    provider = Provider(
        metadata={"name": "vllm"},
        spec=ProviderSpec(type="vllm", base_url="http://vllm:8000/v1", model="llama"),
    )
    spec = provider.to_dict()["spec"]
    assert spec["baseURL"] == "http://vllm:8000/v1"
    assert spec["defaults"]["maxTokens"] == 512
    assert "base_url" not in spec


@pytest.mark.parametrize("document", example_documents())
def test_manifest_round_trips_through_the_model(document: dict) -> None:
    """to_dict gives back a manifest that parses to the same object."""
    resource = parse_manifest(document)
    assert parse_manifest(resource.to_dict()) == resource


def test_status_follows_api_conventions() -> None:
    status = AgentRuntimeStatus.model_validate(
        {
            "phase": "Running",
            "observedGeneration": 3,
            "selector": "app.kubernetes.io/instance=support-agent",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReplicasReady",
                    "message": "3 of 3 pods are ready",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "observedGeneration": 3,
                }
            ],
        }
    )
    condition = status.conditions[0]
    assert condition.last_transition_time == datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    assert status.model_dump(mode="json", exclude_none=True)["conditions"][0]["lastTransitionTime"] == (
        "2025-01-01T00:00:00Z"
    )


def test_status_written_by_a_newer_operator_still_reads() -> None:
    """Unknown status fields are ignored, so an upgrade can roll back."""
    status = AgentRuntimeStatus.model_validate({"phase": "Running", "somethingNew": 1})
    assert status.phase == "Running"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30s", 30, id="seconds"),
        pytest.param("5m", 300, id="minutes"),
        pytest.param("1h30m", 5400, id="compound"),
        pytest.param("24h", 86400, id="day"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("1.5h", 5400, id="fraction"),
    ],
)
def test_durations_parse_like_kubernetes_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "five minutes", "1d", "-5m"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


KIND_MODELS = (AgentRuntime, PromptPack, ToolRegistry, Provider)
SPEC_MODELS = sorted(
    set().union(*(models_below(kind.model_fields["spec"].annotation, set()) for kind in KIND_MODELS)),
    key=lambda model: model.__name__,
)
STATUS_MODELS = sorted(
    set().union(*(models_below(kind.model_fields["status"].annotation, set()) for kind in KIND_MODELS)),
    key=lambda model: model.__name__,
)


@pytest.mark.parametrize("model", SPEC_MODELS + STATUS_MODELS, ids=lambda model: model.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    """Descriptions become kubectl explain text and the API reference."""
    undocumented = [name for name, field in model.model_fields.items() if not field.description]
    assert undocumented == []


@pytest.mark.parametrize("model", SPEC_MODELS, ids=lambda model: model.__name__)
def test_spec_models_reject_unknown_fields(model: type[BaseModel]) -> None:
    """A misspelt field is an error, never a setting silently ignored."""
    assert model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("model", STATUS_MODELS, ids=lambda model: model.__name__)
def test_status_models_ignore_unknown_fields(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "ignore"
