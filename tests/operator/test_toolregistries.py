"""Static validation of ToolRegistries: what the schema cannot check."""

from __future__ import annotations

import datetime

import pytest

from omnia.api.v1alpha1 import ToolRegistryStatus
from omnia.operator import toolregistries
from tests.operator import manifests
from tests.operator.manifests import model

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def verdicts(*handlers, secrets=None, config_maps=None):
    secrets = secrets or {}
    config_maps = config_maps or {}
    return toolregistries.validate(model(manifests.registry("tools", *handlers)),
                                   secret_keys=lambda name: secrets.get(name),
                                   config_map_keys=lambda name: config_maps.get(name))


HTTP = {"name": "lookup", "type": "http", "http": {"url": "https://orders.example/{{ id }}", "description": "Look up."}}
CLIENT = {"name": "refund", "type": "client", "client": {"parametersSchema": {"type": "object"}}}
MCP = {"name": "kb", "type": "mcp", "mcp": {"url": "http://kb:8000/mcp"}}


def test_http_and_client_handlers_are_tools_mcp_waits_for_discovery():
    found = verdicts(HTTP, CLIENT, MCP)
    assert [(v.name, v.check.status, v.check.reason) for v in found] == [
        ("lookup", "True", "Validated"), ("refund", "True", "Validated"), ("kb", "Unknown", "DiscoveryPending")]
    assert [tool.name for v in found for tool in v.tools] == ["lookup", "refund"]


@pytest.mark.parametrize(
    ("handler", "reason", "fragment"),
    [
        pytest.param({**HTTP, "http": {"url": "orders.example/{{ id }}"}}, "InvalidURL", "http.url", id="relative-url"),
        pytest.param({**HTTP, "http": {"url": "https://x.example", "argumentsSchema": {"type": "string"}}},
                     "InvalidSchema", "type: object", id="arguments-not-an-object"),
        pytest.param({**HTTP, "http": {"url": "https://x.example", "argumentsSchema": {"type": 7}}},
                     "InvalidSchema", "not a valid JSON schema", id="not-a-schema"),
        pytest.param({**HTTP, "http": {"url": "https://x.example", "headers": [
            {"name": "Authorization", "secretRef": {"name": "api", "key": "token"}}]}},
                     "SecretNotFound", "Secret 'api' not found", id="missing-secret"),
        pytest.param({"name": "spec", "type": "openapi", "openapi": {"configMapRef": {"name": "doc", "key": "openapi.yaml"}}},
                     "ConfigMapNotFound", "ConfigMap 'doc' not found", id="missing-configmap"),
    ],
)
def test_invalid_handlers_say_what_is_wrong(handler, reason, fragment):
    (verdict,) = verdicts(handler)
    assert (verdict.check.status, verdict.check.reason) == ("False", reason)
    assert fragment in verdict.check.message


def test_a_secret_without_the_key_is_named():
    handler = {**HTTP, "http": {"url": "https://x.example", "headers": [
        {"name": "Authorization", "secretRef": {"name": "api", "key": "token"}}]}}
    (verdict,) = verdicts(handler, secrets={"api": frozenset({"other"})})
    assert (verdict.check.reason, verdict.check.message) == (
        "SecretKeyNotFound", "http.headers[0].secretRef: Secret 'api' has no key 'token'")


@pytest.mark.parametrize(
    ("handlers", "phase", "ready"),
    [
        pytest.param([HTTP, MCP], "Ready", "True", id="valid"),
        pytest.param([HTTP, {**CLIENT, "client": {"parametersSchema": {"type": "array"}}}], "Degraded", "False", id="some-invalid"),
        pytest.param([{**HTTP, "http": {"url": "nope"}}], "Failed", "False", id="all-invalid"),
    ],
)
def test_registry_status(handlers, phase, ready):
    current = toolregistries.registry_status(ToolRegistryStatus(), verdicts=verdicts(*handlers), generation=2, now=NOW)
    assert (current.phase, current.conditions[0].status, current.observed_generation) == (phase, ready, 2)
    assert [h.name for h in current.handlers] == [h["name"] for h in handlers]
