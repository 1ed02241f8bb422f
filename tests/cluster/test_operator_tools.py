"""ToolRegistry discovery on a real control plane, against real tool servers on loopback.

The operator runs as a process of this machine (under deploy/rbac's
ServiceAccount), so it reaches the test MCP server and the OpenAPI service
on 127.0.0.1 as an in-cluster operator would reach a Service. Discovery runs
every two seconds here instead of every five minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import get, wait_for  # noqa: E402
from tests.tools import mcp_tools  # noqa: E402
from tests.tools.serving import HttpState, http_service, mcp_service  # noqa: E402

pytestmark = pytest.mark.cluster

API = "omnia.altairalabs.ai/v1alpha1"
MCP_TOOLS = {"add", "shout", "sleep", "explode", "refuse", "big", "secret_env"}
OPERATIONS = {"getWeather", "createOrder", "getFlaky"}


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture
def operator(control_plane, crds, namespace, tmp_path):
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    process = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace],
                                      log_file=tmp_path / "operator.log", extra_args=["--discovery-interval=2"])
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


@pytest.fixture
def mcp_server():
    service = mcp_service().start()
    yield service
    service.stop()


@pytest.fixture
def openapi_server():
    service = http_service(HttpState()).start()
    yield service
    service.stop()


def with_echo():
    """The test MCP server with one more tool: what a server upgrade looks like."""
    server = mcp_tools.build()

    @server.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        return text

    return server.streamable_http_app()


def registry_status(plane, namespace: str) -> dict:
    return (get(plane, "toolregistry/tools", namespace) or {}).get("status") or {}


def tool_names(plane, namespace: str) -> set[str]:
    return {tool["name"] for tool in registry_status(plane, namespace).get("discoveredTools") or []}


def handler_ready(plane, namespace: str, name: str) -> dict:
    for handler in registry_status(plane, namespace).get("handlers") or []:
        if handler["name"] == name:
            return next((c for c in handler.get("conditions") or [] if c["type"] == "Ready"), {})
    return {}


def config_hash(plane, namespace: str) -> str | None:
    return ((get(plane, "agentruntime/agent", namespace) or {}).get("status") or {}).get("configHash")


def test_discovered_tools_are_published_degrade_with_their_server_and_roll_the_agent_when_they_change(
    control_plane, namespace, operator, mcp_server, openapi_server
):
    """status.discoveredTools lists the MCP tools and OpenAPI operations; a stopped server degrades
    its handler (the agent does not roll for an outage); a server offering new tools rolls the agent."""
    plane = control_plane
    harness.apply(plane, [
        # The tool servers listen on loopback, which the registry must allow explicitly.
        {"apiVersion": API, "kind": "ToolRegistry", "metadata": {"name": "tools"}, "spec": {
            "egress": {"allowLoopback": True},
            "handlers": [
                {"name": "calc", "type": "mcp", "mcp": {"url": f"{mcp_server.url}/mcp"}},
                {"name": "shop", "type": "openapi", "openapi": {"specURL": f"{openapi_server.url}/openapi.json",
                                                                "baseURL": openapi_server.url}},
            ],
        }},
        {"apiVersion": API, "kind": "Provider", "metadata": {"name": "mock"}, "spec": {"type": "mock"}},
        {"apiVersion": API, "kind": "PromptPack", "metadata": {"name": "prompts"},
         "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
    ], namespace=namespace)
    explain = lambda: registry_status(plane, namespace)  # noqa: E731
    wait_for(lambda: tool_names(plane, namespace) >= MCP_TOOLS | OPERATIONS, timeout=60,
             what="the MCP tools and OpenAPI operations in status.discoveredTools", explain=explain)
    status = registry_status(plane, namespace)
    assert status["phase"] == "Ready"
    assert {h["name"]: h["toolCount"] for h in status["handlers"]}["calc"] == len(MCP_TOOLS)

    harness.apply(plane, {"apiVersion": API, "kind": "AgentRuntime", "metadata": {"name": "agent"}, "spec": {
        "promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"}, "toolRegistryRef": {"name": "tools"}}},
        namespace=namespace)
    first = wait_for(lambda: config_hash(plane, namespace), timeout=60, what="the agent's config hash")

    mcp_server.stop()
    wait_for(lambda: handler_ready(plane, namespace, "calc").get("status") == "False", timeout=60,
             what="the calc handler to turn False", explain=explain)
    assert registry_status(plane, namespace)["phase"] == "Degraded"
    assert tool_names(plane, namespace) >= MCP_TOOLS, "an unreachable server keeps its last tools"
    warnings = [e for e in harness.kubectl_json(plane, "get", "events", f"--namespace={namespace}")["items"]
                if e["involvedObject"]["name"] == "tools" and e["type"] == "Warning"]
    assert any("handler 'calc'" in e["message"] for e in warnings), warnings
    assert config_hash(plane, namespace) == first, "an outage must not roll the agent"

    mcp_server.make_app = with_echo
    mcp_server.start()
    wait_for(lambda: "echo" in tool_names(plane, namespace), timeout=60, what="the new tool", explain=explain)
    assert handler_ready(plane, namespace, "calc")["status"] == "True"
    second = wait_for(lambda: (h := config_hash(plane, namespace)) != first and h, timeout=60,
                      what="a new config hash")
    deployment = wait_for(
        lambda: (d := get(plane, "deployment/agent", namespace))
        and d["spec"]["template"]["metadata"]["annotations"].get("omnia.altairalabs.ai/config-hash") == second and d,
        timeout=60, what="the Deployment's pod template to carry the new hash")
    assert deployment
