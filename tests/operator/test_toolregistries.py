"""Static validation of ToolRegistries: what the schema cannot check."""

from __future__ import annotations

import datetime

import pytest

from omnia.api.v1alpha1 import ToolRegistryStatus
from omnia.config import ToolConfig
from omnia.operator import toolregistries
from omnia.tools import Discovery, HandlerResult
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
    current = toolregistries.registry_status(ToolRegistryStatus(), verdicts=verdicts(*handlers), discovery=None,
                                             generation=2, now=NOW)
    assert (current.phase, current.conditions[0].status, current.observed_generation) == (phase, ready, 2)
    assert [h.name for h in current.handlers] == [h["name"] for h in handlers]


def mcp_tool(name: str, *, schema: dict | None = None) -> ToolConfig:
    return ToolConfig(name=name, type="mcp", description=f"{name} things",
                      parameters=schema or {"type": "object", "properties": {}}, handler={})


def discovered(*results: HandlerResult) -> Discovery:
    return Discovery(handlers=results)


def status_after(previous: ToolRegistryStatus, discovery: Discovery, *, generation: int = 1) -> ToolRegistryStatus:
    return toolregistries.registry_status(previous, verdicts=verdicts(HTTP, MCP), discovery=discovery,
                                          generation=generation, now=NOW)


LOOKUP = HandlerResult("lookup", "True", "Reachable", "the server answers", (mcp_tool("lookup"),))


def test_discovered_mcp_tools_are_published_with_a_tools_hash():
    """An MCP handler's tools join the static ones; only discovered handlers carry a toolsHash."""
    current = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "True", "Discovered", "2 tools", (mcp_tool("search"), mcp_tool("fetch")))))
    assert [(t.name, t.handler) for t in current.discovered_tools] == [
        ("lookup", "lookup"), ("search", "kb"), ("fetch", "kb")]
    assert [(h.name, h.tool_count, h.tools_hash is not None) for h in current.handlers] == [
        ("lookup", 1, False), ("kb", 2, True)]
    assert (current.phase, current.conditions[0].reason) == ("Ready", "Discovered")


def test_a_changed_input_schema_changes_the_tools_hash():
    """The runtime would offer the model another schema: the agents must roll, so the digest differs."""
    before = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (mcp_tool("search"),))))
    after = status_after(before, discovered(LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (
        mcp_tool("search", schema={"type": "object", "properties": {"q": {"type": "string"}}}),))))
    assert toolregistries.tools_digest(before) != toolregistries.tools_digest(after)
    assert [t.name for t in after.discovered_tools] == [t.name for t in before.discovered_tools]


def test_an_unreachable_server_keeps_its_last_tools_while_the_spec_is_unchanged():
    """An outage degrades the handler but must not roll the agents: same tools, same hash."""
    before = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (mcp_tool("search"),))))
    down = discovered(LOOKUP, HandlerResult("kb", "False", "Unreachable", "connection refused"))
    after = status_after(before, down)
    kb = after.handlers[1]
    assert (kb.conditions[0].status, kb.conditions[0].reason, kb.tool_count) == ("False", "Unreachable", 1)
    assert (after.phase, after.conditions[0].reason) == ("Degraded", "Unreachable")
    assert toolregistries.tools_digest(after) == toolregistries.tools_digest(before)
    edited = status_after(before, down, generation=2)
    assert (edited.handlers[1].tool_count, toolregistries.tools_digest(edited)) == (0, None)


def _many_tools(count: int) -> HandlerResult:
    tools = tuple(
        ToolConfig(name=f"t{i}", type="mcp", description="d" * 4000, parameters={"type": "object"}, handler={})
        for i in range(count)
    )
    return HandlerResult("kb", "True", "Discovered", f"{count} tools", tools)


def test_a_server_with_thousands_of_tools_gets_a_status_the_api_server_takes():
    """Every discovered tool was listed with its whole description: a server
    offering 5,000 tools of 4 kB each made a 20 MB status, which the API
    server refuses (its request bound is 3 MiB, etcd's 1.5 MiB), so the
    registry's status never changed again. The status lists the first 100
    tools of a handler, descriptions cut to 200 characters, and counts all."""
    current = status_after(ToolRegistryStatus(), discovered(LOOKUP, _many_tools(5000)))
    size = len(current.model_dump_json(by_alias=True, exclude_none=True))
    assert size < 64 * 1024, size
    kb = current.handlers[1]
    assert kb.tool_count == 5000 and kb.tools_hash is not None
    listed = [t for t in current.discovered_tools if t.handler == "kb"]
    assert len(listed) == 100 and all(len(t.description or "") <= 200 for t in listed)
    assert "5001 tools" in current.conditions[0].message
    # The hash covers every tool, listed or not.
    fewer = status_after(ToolRegistryStatus(), discovered(LOOKUP, _many_tools(4999)))
    assert toolregistries.tools_digest(fewer) != toolregistries.tools_digest(current)
    # An outage keeps the count, not just the listed tools.
    down = status_after(current, discovered(LOOKUP, HandlerResult("kb", "False", "Unreachable", "refused")))
    assert down.handlers[1].tool_count == 5000


def test_a_condition_keeps_its_transition_time_when_discovery_finds_the_same():
    first = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (mcp_tool("search"),))))
    later = toolregistries.registry_status(
        first, verdicts=verdicts(HTTP, MCP), generation=1, now=NOW + datetime.timedelta(minutes=5),
        discovery=discovered(LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (mcp_tool("search"),))))
    assert later.handlers[1].conditions[0].last_transition_time == first.handlers[1].conditions[0].last_transition_time
    assert later.conditions[0].last_transition_time == first.conditions[0].last_transition_time


def test_stdio_servers_are_left_to_the_runtime():
    """The operator does not run commands from manifests; the handler is not a failure either."""
    current = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "Unknown", "DiscoveredByRuntime", "runs in the runtime container")))
    assert (current.phase, current.conditions[0].status) == ("Ready", "True")
    assert "kb (DiscoveredByRuntime)" in current.conditions[0].message


def test_a_static_problem_wins_over_discovery():
    handler = {**HTTP, "http": {"url": "nope"}}
    current = toolregistries.registry_status(
        ToolRegistryStatus(), verdicts=verdicts(handler), generation=1, now=NOW,
        discovery=discovered(HandlerResult("lookup", "True", "Reachable", "fine", (mcp_tool("lookup"),))))
    assert (current.handlers[0].conditions[0].reason, current.discovered_tools) == ("InvalidURL", [])


def test_handler_events_name_the_handler_and_come_only_on_change():
    before = status_after(ToolRegistryStatus(), discovered(
        LOOKUP, HandlerResult("kb", "True", "Discovered", "1 tool", (mcp_tool("search"),))))
    down = status_after(before, discovered(LOOKUP, HandlerResult("kb", "False", "Unreachable", "refused")))
    assert toolregistries.handler_events(before, down) == [("Warning", "Unreachable", "handler 'kb': refused")]
    assert toolregistries.handler_events(down, down) == []
