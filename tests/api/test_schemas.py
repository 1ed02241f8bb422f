"""The OpenAPI schemas in the CRDs: structural, defaulted, and faithful to the models."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from omnia.api import crds, schemas
from omnia.api.v1alpha1 import AgentRuntime, PromptPack, Provider, ToolRegistry, parse_manifest
from tests.api.cases import BRIEF_EXAMPLE, example_documents, models_below

SCHEMAS = {
    crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for crd in crds.custom_resource_definitions()
}
KIND_PARAMS = [pytest.param(schema, id=kind) for kind, schema in SCHEMAS.items()]


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        else:
            node = node["properties"][part]
    return node


@pytest.mark.parametrize("schema", KIND_PARAMS)
def test_schema_is_structural(schema: dict[str, Any]) -> None:
    """The API server rejects non-structural schemas: every node typed, nothing by reference."""
    problems = []
    for path, node in _nodes(schema):
        if "$ref" in node or "$defs" in node or "allOf" in node or "oneOf" in node:
            problems.append(f"{path}: reference or combinator")
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: anyOf outside int-or-string")
        if "type" not in node and not (
            node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{path}: no type")
        if "title" in node or node.get("type") == "null":
            problems.append(f"{path}: JSON Schema keyword without OpenAPI v3 meaning")
        if node.get("additionalProperties") is False or (
            "properties" in node and "additionalProperties" in node
        ):
            problems.append(f"{path}: additionalProperties beside properties")
        if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(node["exclusiveMinimum"], bool):
            problems.append(f"{path}: numeric exclusiveMinimum")
        for key in node.get("required", ()):
            if key not in node.get("properties", {}):
                problems.append(f"{path}: requires undeclared {key}")
    assert problems == []


@pytest.mark.parametrize("schema", KIND_PARAMS)
def test_field_names_are_camel_case_as_users_spell_them(schema: dict[str, Any]) -> None:
    """Each property is lower camel case, and no capital follows a digit: the
    camel-case rule turned ``a2a`` into ``a2A``, and the API server then
    pruned the ``a2a: false`` users write, leaving the protocol on."""
    wrong = []
    for path, _ in _nodes(schema):
        name = path.rsplit(".", 1)[-1]
        if name and not name.endswith(("[]", "}")) and (
            not re.fullmatch(r"[a-z][a-zA-Z0-9]*", name) or re.search(r"[0-9][A-Z]", name)
        ):
            wrong.append(path)
    assert wrong == []


@pytest.mark.parametrize("schema", KIND_PARAMS)
def test_every_field_is_described_for_kubectl_explain(schema: dict[str, Any]) -> None:
    undescribed = [
        path for path, node in _nodes(schema) if path.count(".") >= 2 and not path.endswith("[]") and "{}" not in path
        and not node.get("description")
    ]
    assert undescribed == []


@pytest.mark.parametrize("schema", KIND_PARAMS)
def test_metadata_is_left_to_the_api_server(schema: dict[str, Any]) -> None:
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]


@pytest.mark.parametrize("schema", KIND_PARAMS)
def test_list_map_keys_are_required(schema: dict[str, Any]) -> None:
    """The API server refuses map-type lists whose keys may be missing."""
    for path, node in _nodes(schema):
        for key in node.get("x-kubernetes-list-map-keys", ()):
            assert key in node["items"].get("required", ()), f"{path}: {key}"


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        pytest.param("AgentRuntime", "spec.replicas", 1, id="replicas"),
        pytest.param(
            "AgentRuntime",
            "spec.session",
            {"type": "memory", "ttl": "24h", "maxTurns": 1000, "maxBytes": 4194304},
            id="session-object",
        ),
        pytest.param("AgentRuntime", "spec.session.type", "memory", id="session-type"),
        pytest.param("AgentRuntime", "spec.session.ttl", "24h", id="session-ttl"),
        pytest.param("AgentRuntime", "spec.facade.auth", {"type": "none"}, id="auth-object"),
        pytest.param("AgentRuntime", "spec.facade.port", 8080, id="facade-port"),
        pytest.param("AgentRuntime", "spec.facade.auth.type", "none", id="auth-type"),
        pytest.param("AgentRuntime", "spec.autoscaling.engine", "hpa", id="autoscaling-engine"),
        pytest.param("AgentRuntime", "spec.autoscaling.enabled", False, id="autoscaling-off"),
        pytest.param("PromptPack", "spec.rollout", {"strategy": "immediate"}, id="rollout-object"),
        pytest.param("PromptPack", "spec.rollout.strategy", "immediate", id="rollout-strategy"),
        pytest.param("Provider", "spec.defaults.maxRetries", 2, id="max-retries"),
        pytest.param("ToolRegistry", "spec.handlers[].requireApproval", False, id="no-approval"),
        pytest.param("ToolRegistry", "spec.handlers[].mcp.transport", "streamable-http", id="mcp-transport"),
    ],
)
def test_defaults_are_in_the_schema(kind: str, path: str, default: object) -> None:
    assert _at(SCHEMAS[kind], path)["default"] == default


@pytest.mark.parametrize(
    ("kind", "path", "values"),
    [
        pytest.param(
            "Provider",
            "spec.type",
            ["claude", "openai", "gemini", "ollama", "vllm", "mock", "local"],
            id="provider-type",
        ),
        pytest.param("PromptPack", "spec.rollout.strategy", ["immediate", "canary"], id="rollout-strategy"),
        pytest.param("ToolRegistry", "spec.handlers[].type", ["http", "mcp", "openapi", "client"], id="handler-type"),
        pytest.param(
            "ToolRegistry", "spec.handlers[].mcp.transport", ["streamable-http", "sse", "stdio"], id="mcp-transport"
        ),
        pytest.param("AgentRuntime", "spec.session.type", ["memory", "redis", "postgres"], id="session-type"),
        pytest.param("AgentRuntime", "spec.facade.auth.type", ["none", "apiKey", "jwt"], id="auth-type"),
        pytest.param("AgentRuntime", "spec.autoscaling.engine", ["hpa", "keda"], id="autoscaling-engine"),
        pytest.param("AgentRuntime", "spec.autoscaling.metrics[].type", ["memory", "cpu", "custom"], id="metric-type"),
    ],
)
def test_closed_sets_are_enums(kind: str, path: str, values: list[str]) -> None:
    assert _at(SCHEMAS[kind], path)["enum"] == values


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        pytest.param("Provider", "spec.baseURL", id="provider-base-url"),
        pytest.param("Provider", "spec.credentials.secretRef.key", id="provider-secret-key"),
        pytest.param("Provider", "spec.defaults.temperature", id="temperature"),
        pytest.param("Provider", "spec.defaults.maxTokens", id="max-tokens"),
        pytest.param("Provider", "spec.defaults.timeoutSeconds", id="timeout"),
        pytest.param("Provider", "spec.pricing.inputPerMillion", id="input-price"),
        pytest.param("Provider", "spec.pricing.outputPerMillion", id="output-price"),
        pytest.param("PromptPack", "spec.version", id="version"),
        pytest.param("PromptPack", "spec.systemPrompt", id="system-prompt"),
        pytest.param("PromptPack", "spec.templates", id="templates"),
        pytest.param("PromptPack", "spec.variables", id="variables"),
        pytest.param("PromptPack", "spec.source.configMapRef.key", id="configmap-key"),
        pytest.param("PromptPack", "spec.rollout.steps[].weight", id="step-weight"),
        pytest.param("PromptPack", "spec.rollout.steps[].pause", id="step-pause"),
        pytest.param("ToolRegistry", "spec.handlers[].requireApproval", id="require-approval"),
        pytest.param("ToolRegistry", "spec.handlers[].http", id="http-block"),
        pytest.param("ToolRegistry", "spec.handlers[].openapi", id="openapi-block"),
        pytest.param("ToolRegistry", "spec.handlers[].client", id="client-block"),
        pytest.param("AgentRuntime", "spec.toolRegistryRef.name", id="tool-registry-ref"),
        pytest.param("AgentRuntime", "spec.session.secretRef", id="session-secret"),
        pytest.param("AgentRuntime", "spec.facade.maxConnections", id="max-connections"),
        pytest.param("AgentRuntime", "spec.facade.auth", id="auth"),
        pytest.param("AgentRuntime", "status.selector", id="scale-selector"),
        pytest.param("AgentRuntime", "status.observedGeneration", id="observed-generation"),
        pytest.param("PromptPack", "status.canaryWeight", id="canary-weight"),
        pytest.param("ToolRegistry", "status.discoveredTools", id="discovered-tools"),
    ],
)
def test_fixed_field_paths_exist(kind: str, path: str) -> None:
    """The product contract fixes these paths; renaming one breaks users."""
    assert _at(SCHEMAS[kind], path)["description"]


def test_metric_targets_are_int_or_string() -> None:
    """The brief writes both `target: 70%` and `target: 100`."""
    target = _at(SCHEMAS["AgentRuntime"], "spec.autoscaling.metrics[].target")
    assert target["x-kubernetes-int-or-string"] is True
    assert "type" not in target


def test_free_form_json_schemas_are_preserved() -> None:
    node = _at(SCHEMAS["ToolRegistry"], "spec.handlers[].http.argumentsSchema")
    assert node == {**node, "type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_optional_fields_are_nullable_not_any_of_null() -> None:
    node = _at(SCHEMAS["Provider"], "spec.model")
    assert node["type"] == "string" and node["nullable"] is True


def test_conditions_are_a_map_keyed_by_type() -> None:
    conditions = _at(SCHEMAS["AgentRuntime"], "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def _rules(schema: dict[str, Any]) -> list[str]:
    return [rule["rule"] for _, node in _nodes(schema) for rule in node.get("x-kubernetes-validations", ())]


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        pytest.param("AgentRuntime", AgentRuntime, id="AgentRuntime"),
        pytest.param("PromptPack", PromptPack, id="PromptPack"),
        pytest.param("ToolRegistry", ToolRegistry, id="ToolRegistry"),
        pytest.param("Provider", Provider, id="Provider"),
    ],
)
def test_every_python_rule_is_a_cel_rule_in_the_crd(kind: str, model: type[BaseModel]) -> None:
    """One declaration, two enforcers: nothing checked offline is unchecked by the server."""
    declared = {rule.cel for inner in models_below(model) for rule in getattr(inner, "validation_rules", ())}
    assert declared and declared <= set(_rules(SCHEMAS[kind]))


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Defaulting as the API server does it: fill missing fields, then descend."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [_apply_defaults(schema["items"], item) for item in value]
    return value


@pytest.mark.parametrize("document", [pytest.param(yaml.safe_load(BRIEF_EXAMPLE), id="brief"), *example_documents()])
def test_server_defaults_match_python_defaults(document: dict[str, Any]) -> None:
    """An object read back from the cluster equals the one omnia run builds from the file."""
    server_side = _apply_defaults(SCHEMAS[document["kind"]], copy.deepcopy(document))
    python_side = parse_manifest(document).to_dict()
    python_side.pop("status")
    assert _without_empty(server_side) == _without_empty(python_side)


def _without_empty(value: Any) -> Any:
    """An empty list or map means the same as an absent one."""
    if isinstance(value, dict):
        return {key: _without_empty(item) for key, item in value.items() if item not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(item) for item in value]
    return value


def test_unions_without_a_structural_form_are_refused() -> None:
    class Ambiguous(BaseModel):
        value: int | list[str]

    with pytest.raises(schemas.SchemaError, match="Ambiguous.value"):
        schemas.structural_schema(Ambiguous)


def test_free_form_dicts_must_be_declared_as_json() -> None:
    class Untyped(BaseModel):
        value: dict[str, object]

    with pytest.raises(schemas.SchemaError, match="JSONObject"):
        schemas.structural_schema(Untyped)
