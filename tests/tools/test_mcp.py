"""MCP servers built with the official SDK, over streamable HTTP and stdio."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from omnia.tools import mcp
from omnia.tools.base import CallFailed, DiscoveryError

from .conftest import mcp_source
from .serving import free_port, mcp_sse_service


@pytest.fixture(params=["streamable-http", "sse", "stdio"])
def server_source(request):
    """The test server's source entry, over each transport."""
    if request.param == "stdio":
        return mcp_source("calc")
    if request.param == "sse":
        service = mcp_sse_service().start()
        request.addfinalizer(service.stop)
        return mcp_source("calc", url=service.url + "/sse", transport="sse")
    service = request.getfixturevalue("mcp_server")
    return mcp_source("calc", url=service.url + "/mcp")


@pytest.fixture
async def handler(server_source):
    handler = mcp.Handler(server_source, env={})
    try:
        yield handler
    finally:
        await handler.aclose()


async def test_the_servers_tools_are_listed_with_their_schemas(handler):
    found = await handler.discover()
    tools = {tool.name: tool for tool in found.tools}
    assert set(tools) == {"add", "shout", "sleep", "explode", "refuse", "big", "secret_env"}
    add = tools["add"]
    assert add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]
    assert add.handler == {"source": "calc", "tool": "add", "idempotent": True}
    assert handler.idempotent(add) and not handler.idempotent(tools["shout"])


async def test_calls_return_the_tools_text_and_its_errors(handler):
    tools = {tool.name: tool for tool in (await handler.discover()).tools}
    assert (await handler.call(tools["add"], {"a": 2, "b": 3})).content == "5"
    failed = await handler.call(tools["explode"], {})
    assert failed.is_error and "explode" in failed.content


async def test_a_call_the_server_refuses_is_an_answer_and_keeps_the_connection(handler):
    tools = {tool.name: tool for tool in (await handler.discover()).tools}
    connection = handler._connection
    refused = await handler.call(tools["refuse"], {})
    assert (refused.content, refused.is_error) == ("the MCP server refused the call: no such record", True)
    assert handler._connection is connection and connection.alive


async def test_calls_share_one_connection_and_run_concurrently(handler):
    tools = {tool.name: tool for tool in (await handler.discover()).tools}
    started = time.monotonic()
    outcomes = await asyncio.gather(*(handler.call(tools["sleep"], {"seconds": 1}) for _ in range(4)))
    assert [o.content for o in outcomes] == ["slept 1.0s"] * 4
    assert time.monotonic() - started < 3.5, "one after the other would take 4s"


async def test_the_tools_filter_keeps_those_named_and_reports_the_missing(server_source):
    source = server_source.model_copy(update={"handler": {**server_source.handler, "tools": ["add", "divide"]}})
    handler = mcp.Handler(source, env={})
    try:
        found = await handler.discover()
    finally:
        await handler.aclose()
    assert [tool.name for tool in found.tools] == ["add"]
    assert found.missing == ("divide",)


async def test_a_stdio_server_gets_its_env_with_secrets_read_from_the_runtimes_environment():
    source = mcp_source("calc", env=[{"name": "TOOL_TOKEN", "valueFromEnv": "OMNIA_TOOL_CALC_ENV_TOOL_TOKEN"}])
    handler = mcp.Handler(source, env={"OMNIA_TOOL_CALC_ENV_TOOL_TOKEN": "t0ken"})
    try:
        tools = {tool.name: tool for tool in (await handler.discover()).tools}
        assert (await handler.call(tools["secret_env"], {})).content == "t0ken"
    finally:
        await handler.aclose()


async def test_a_server_that_is_down_is_unreachable_and_its_calls_never_left():
    handler = mcp.Handler(mcp_source("calc", url=f"http://127.0.0.1:{free_port()}/mcp"), env={})
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "Unreachable" and "ConnectError" in caught.value.message
    tool = mcp_source("add").model_copy(update={"handler": {"source": "calc", "tool": "add"}})
    with pytest.raises(CallFailed) as failed:
        await handler.call(tool, {"a": 1, "b": 1})
    assert not failed.value.reached


async def test_a_command_that_does_not_exist_is_unreachable():
    source = mcp_source("calc").model_copy(
        update={"handler": {"transport": "stdio", "command": "no-such-mcp-server-command"}}
    )
    handler = mcp.Handler(source, env={})
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "Unreachable"


async def test_after_a_server_restart_the_next_call_reconnects(mcp_server):
    handler = mcp.Handler(mcp_source("calc", url=mcp_server.url + "/mcp"), env={})
    try:
        tools = {tool.name: tool for tool in (await handler.discover()).tools}
        assert (await handler.call(tools["add"], {"a": 1, "b": 1})).content == "2"
        mcp_server.stop()
        with pytest.raises(CallFailed):
            await handler.call(tools["add"], {"a": 1, "b": 1})
        mcp_server.start()
        outcomes = []
        for _ in range(2):
            try:
                outcomes.append((await handler.call(tools["add"], {"a": 2, "b": 2})).content)
            except CallFailed as exc:
                outcomes.append(exc.message)
        assert outcomes[-1] == "4", outcomes
    finally:
        await handler.aclose()


async def test_a_server_credentials_problem_is_reported_before_connecting():
    source = mcp_source(
        "calc", url="http://127.0.0.1:1/mcp", headers=[{"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_CALC_X"}]
    )
    with pytest.raises(DiscoveryError) as caught:
        await mcp.Handler(source, env={}).discover()
    assert caught.value.reason == "SecretNotFound" and "OMNIA_TOOL_CALC_X" in caught.value.message


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param("python", sys.executable, id="python"),
        pytest.param("python3", sys.executable, id="python3"),
        pytest.param("node", "node", id="other-commands-unchanged"),
        pytest.param(None, None, id="no-command"),
    ],
)
def test_python_in_a_stdio_command_is_the_runtimes_own_interpreter(command, expected):
    """`omnia run` from .venv/bin must start a Python stdio server that can import mcp."""
    from omnia.tools.mcp import stdio_command

    assert stdio_command(command) == expected
