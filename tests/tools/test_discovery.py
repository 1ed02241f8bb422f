"""Discovery for a ToolRegistry's status, against real servers."""

from __future__ import annotations

import json
import sys

import pytest

from omnia.api.v1alpha1 import ToolRegistrySpec
from omnia.tools import discover

from .conftest import MCP_SCRIPT
from .serving import free_port

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def spec(*handlers: dict) -> ToolRegistrySpec:
    """A registry of ``handlers`` that allows loopback, where the test servers are."""
    return ToolRegistrySpec.model_validate({"handlers": list(handlers), "egress": {"allowLoopback": True}})


def http_handler(name: str, url: str, **block) -> dict:
    return {"name": name, "type": "http", "http": {"method": "GET", "url": url, "argumentsSchema": WEATHER_SCHEMA, **block}}


def mcp_handler(name: str, url: str, **block) -> dict:
    return {"name": name, "type": "mcp", "mcp": {"transport": "streamable-http", "url": url, **block}}


STDIO = {"name": "local", "type": "mcp", "mcp": {"transport": "stdio", "command": sys.executable, "args": [str(MCP_SCRIPT)]}}
CLIENT = {"name": "pick_file", "type": "client", "client": {"description": "Let the user pick a file."}}


def by_name(discovery):
    return {result.name: result for result in discovery.handlers}


async def test_every_kind_of_handler_is_discovered_for_real(http_server, mcp_server):
    discovery = await discover(
        spec(
            http_handler("weather", http_server.url + "/weather/{{ city }}"),
            mcp_handler("calc", mcp_server.url + "/mcp", tools=["add", "shout"]),
            {"name": "shop", "type": "openapi", "openapi": {"specURL": http_server.url + "/openapi.json"}},
            STDIO,
            CLIENT,
        ),
        secrets={},
        config_maps={},
    )
    results = by_name(discovery)
    assert [(r.name, r.status, r.reason) for r in discovery.handlers] == [
        ("weather", "True", "Reachable"),
        ("calc", "True", "Discovered"),
        ("shop", "True", "Discovered"),
        ("local", "Unknown", "DiscoveredByRuntime"),
        ("pick_file", "True", "ClientSide"),
    ]
    assert results["calc"].message == "2 tools"
    assert "left out: upload: the request body is not JSON" in results["shop"].message
    assert [(t.name, t.handler) for t in discovery.discovered_tools()] == [
        ("weather", "weather"),
        ("add", "calc"),
        ("shout", "calc"),
        ("getWeather", "shop"),
        ("createOrder", "shop"),
        ("getFlaky", "shop"),
        ("pick_file", "pick_file"),
    ]
    assert discovery.phase == "Ready"
    assert results["calc"].condition() == {"type": "Ready", "status": "True", "reason": "Discovered", "message": "2 tools"}


async def test_stdio_servers_are_run_only_when_the_caller_allows_commands():
    discovery = await discover(spec(STDIO), secrets={}, config_maps={}, run_commands=True)
    (local,) = discovery.handlers
    assert (local.status, local.reason, len(local.tools)) == ("True", "Discovered", 7)


@pytest.mark.parametrize(
    ("handler", "reason", "message"),
    [
        pytest.param(
            mcp_handler("calc", "http://127.0.0.1:{dead}/mcp"), "Unreachable", "ConnectError", id="mcp-down"
        ),
        pytest.param(
            http_handler("weather", "http://127.0.0.1:{dead}/weather/{{{{ city }}}}"), "Unreachable", "HEAD",
            id="http-down",
        ),
        pytest.param(
            http_handler(
                "weather", "http://127.0.0.1:{dead}/x",
                headers=[{"name": "Authorization", "secretRef": {"name": "weather-api", "key": "token"}}],
            ),
            "SecretNotFound", "Secret 'weather-api' key 'token' not found (http: http.headers[Authorization].secretRef)",
            id="secret-missing",
        ),
        pytest.param(
            {"name": "shop", "type": "openapi", "openapi": {"configMapRef": {"name": "shop-api", "key": "spec"}}},
            "ConfigMapNotFound", "ConfigMap 'shop-api' key 'spec' not found", id="config-map-missing",
        ),
        pytest.param(
            http_handler("weather", "http://127.0.0.1:{dead}/{{{{ town }}}}"), "InvalidSchema",
            "the URL uses arguments the argumentsSchema does not declare: town", id="undeclared-placeholder",
        ),
        pytest.param(
            http_handler("weather", "http://127.0.0.1:{dead}/", argumentsSchema={"type": 12}), "InvalidSchema",
            "argumentsSchema: 12 is not valid", id="invalid-schema",
        ),
    ],
)
async def test_a_failing_handler_gets_a_reason_and_message(handler, reason, message):
    handler = _fill_port(handler, free_port())
    discovery = await discover(spec(handler, CLIENT), secrets={}, config_maps={}, timeout=5)
    failed = discovery.handlers[0]
    assert (failed.status, failed.reason) == ("False", reason)
    assert message in failed.message
    assert discovery.phase == "Degraded"


def _fill_port(value, port):
    if isinstance(value, dict):
        return {key: _fill_port(item, port) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_port(item, port) for item in value]
    return value.format(dead=port) if isinstance(value, str) and "{dead}" in value else value


async def test_secrets_and_config_maps_are_taken_from_the_callers_maps(http_server, http_state, client):
    document = (await client.get(http_server.url + "/openapi.json")).text
    discovery = await discover(
        spec(
            http_handler(
                "whoami", http_server.url + "/whoami",
                headers=[{"name": "Authorization", "secretRef": {"name": "who-api", "key": "token"}}],
            ),
            {"name": "shop", "type": "openapi",
             "openapi": {"configMapRef": {"name": "shop-api", "key": "spec"}, "baseURL": http_server.url}},
        ),
        secrets={"who-api": {"token": "Bearer w"}},
        config_maps={"shop-api": {"spec": document}},
        client=client,
    )
    assert [(r.status, len(r.tools)) for r in discovery.handlers] == [("True", 1), ("True", 3)]
    probe = http_state.seen("/whoami")[-1]
    assert (probe["method"], probe["headers"]["authorization"]) == ("HEAD", "Bearer w")


async def test_a_filter_naming_tools_the_server_lacks_fails_the_handler(mcp_server):
    discovery = await discover(
        spec(mcp_handler("calc", mcp_server.url + "/mcp", tools=["add", "divide"])), secrets={}, config_maps={}
    )
    (calc,) = discovery.handlers
    assert (calc.status, calc.reason, [t.name for t in calc.tools]) == ("False", "ToolsNotFound", ["add"])
    assert "not offered by the server: divide" in calc.message
    assert discovery.phase == "Failed"


async def test_the_earlier_handler_keeps_a_tool_name_two_handlers_offer(mcp_server):
    discovery = await discover(
        spec(
            mcp_handler("first", mcp_server.url + "/mcp", tools=["add"]),
            mcp_handler("second", mcp_server.url + "/mcp", tools=["add", "shout"]),
        ),
        secrets={},
        config_maps={},
    )
    first, second = discovery.handlers
    assert [t.name for t in first.tools] == ["add"] and [t.name for t in second.tools] == ["shout"]
    assert (second.status, second.reason) == ("False", "ToolNameConflict")
    assert "add (offered by first too)" in second.message


async def test_a_document_with_thousands_of_operations_left_out_gets_a_bounded_message():
    """Each operation that cannot be called was named in the handler's
    condition message: 3,000 of them made a message of hundreds of
    kilobytes, for a status the API server bounds as a whole."""
    paths = {
        f"/upload/{index}": {
            "post": {
                "operationId": f"upload{index}",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {}}}},
            }
        }
        for index in range(3000)
    }
    paths["/ok"] = {"get": {"operationId": "ok"}}
    document = {"openapi": "3.0.3", "info": {"title": "many", "version": "1"}, "paths": paths}
    discovery = await discover(
        spec({"name": "shop", "type": "openapi",
              "openapi": {"configMapRef": {"name": "shop-api", "key": "spec"}, "baseURL": "https://shop.test"}}),
        secrets={},
        config_maps={"shop-api": {"spec": json.dumps(document)}},
    )
    message = by_name(discovery)["shop"].message
    assert message.startswith("1 tool; left out: upload0: the request body is not JSON")
    assert message.endswith("; and 2990 more")
    assert len(message) < 4096, len(message)
