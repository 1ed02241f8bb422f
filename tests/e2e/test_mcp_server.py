"""The agent as an MCP server through real processes, spoken to by the official ``mcp`` client."""

from __future__ import annotations

import contextlib

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from omnia.config import (
    AgentConfig,
    AuthConfig,
    FacadeConfig,
    MockScript,
    ProtocolsConfig,
    ProviderConfig,
    ScriptedReply,
    ScriptedToolCall,
    ToolConfig,
)

from .processes import AgentProcesses

API_KEY = "mcp-test-key"
FOLLOW_UP = "(only after the tool result)"


def _config(**facade) -> AgentConfig:
    script = MockScript(
        replies=[
            ScriptedReply(match="count to six", text="one two three four five six", chunk_size=4, chunk_delay_ms=100),
            ScriptedReply(match="where am I", tool_calls=[ScriptedToolCall(name="get_location")]),
            ScriptedReply(text="I cannot tell where you are.", match=FOLLOW_UP),
        ]
    )
    return AgentConfig(
        name="e2e",
        provider=ProviderConfig(type="mock", model="mock", mock=script),
        tools=[ToolConfig(name="get_location", type="client")],
        facade=FacadeConfig(**facade),
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    processes = AgentProcesses(
        _config(auth=AuthConfig(type="apiKey", api_keys_env="OMNIA_API_KEYS")),
        tmp_path_factory.mktemp("mcp"),
        env={"OMNIA_API_KEYS": API_KEY},
    )
    try:
        yield processes.start()
    finally:
        processes.stop()


@contextlib.asynccontextmanager
async def _client(url: str, *, key: str = API_KEY):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http), cache=None) as client:
            yield client


async def test_the_server_offers_one_tool_ask(agent):
    async with _client(agent.url) as client:
        tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == ["ask"]
    schema = tools[0].input_schema
    assert set(schema["properties"]) == {"message", "session"} and schema["required"] == ["message"]


async def test_ask_answers_with_the_reply_and_streams_it_as_progress(agent):
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with _client(agent.url) as client:
        result = await client.call_tool("ask", {"message": "count to six"}, progress_callback=on_progress)
    assert not result.is_error
    assert result.content[0].text == "one two three four five six"
    assert result.structured_content["reply"] == "one two three four five six"
    assert result.structured_content["session"]
    assert len(progress) > 1 and "".join(progress) == "one two three four five six"


async def test_a_session_continues_over_calls(agent):
    async with _client(agent.url) as client:
        first = await client.call_tool("ask", {"message": "hello"})
        session = first.structured_content["session"]
        second = await client.call_tool("ask", {"message": "again", "session": session})
    assert second.structured_content["session"] == session
    assert second.content[0].text == "again"


async def test_unknown_session_is_a_tool_error(agent):
    async with _client(agent.url) as client:
        result = await client.call_tool("ask", {"message": "hi", "session": "nope"})
    assert result.is_error and "SESSION_NOT_FOUND: session nope not found" in result.content[0].text


async def test_an_empty_message_is_refused_as_on_every_other_protocol(agent):
    """/ws and the OpenAI endpoint refuse an empty message; ``ask`` sent it to
    the model as a turn of its own."""
    async with _client(agent.url) as client:
        result = await client.call_tool("ask", {"message": ""})
    assert result.is_error and "INVALID_MESSAGE: the message is empty" in result.content[0].text


def test_a_message_that_is_not_text_is_refused_as_on_every_other_protocol(agent):
    """Half a surrogate pair is valid JSON and not text. The server's SDK,
    which decodes the body itself, refuses it as a parse error (kept as a
    guard: the other open protocols answered it with a 500); the SDK's own
    client cannot even send it, so the request is written by hand."""
    body = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call",'
        b' "params": {"name": "ask", "arguments": {"message": "hi \\ud800"}}}'
    )
    response = httpx.post(
        f"{agent.url}/mcp",
        content=body,
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32700
    assert "Traceback" not in agent.log("facade")


async def test_client_side_tools_are_refused_for_the_model(agent):
    async with _client(agent.url) as client:
        result = await client.call_tool("ask", {"message": "where am I?"})
    assert result.content[0].text == "I cannot tell where you are."


def test_requests_without_a_valid_key_are_401(agent):
    response = httpx.post(
        f"{agent.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": "Bearer wrong", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["message"].startswith("UNAUTHORIZED")


async def test_the_sdk_client_with_a_wrong_key_fails_to_connect(agent):
    with pytest.raises(Exception) as caught:
        async with _client(agent.url, key="wrong") as client:
            await client.list_tools()
    assert "UNAUTHORIZED: invalid API key" in repr(caught.value)


def test_endpoint_is_absent_when_disabled(tmp_path):
    processes = AgentProcesses(_config(protocols=ProtocolsConfig(mcp=False)), tmp_path)
    try:
        processes.start()
        assert httpx.post(f"{processes.url}/mcp", json={}, timeout=5).status_code == 404
    finally:
        processes.stop()
