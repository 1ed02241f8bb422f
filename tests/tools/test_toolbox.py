"""The runtime's toolbox under the real agent loop, the mock model scripting the tool calls."""

from __future__ import annotations

import asyncio

import pytest

from omnia.agent import Agent, ToolCallStarted, ToolFinished, TurnDone, UserInput
from omnia.agent.loop import MAX_TOOL_OUTPUT_CHARS
from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply, ScriptedToolCall
from omnia.providers.mock import MockProvider
from omnia.sessions import MemoryStore
from omnia.tools import RetryPolicy, Toolbox

from .conftest import http_tool, mcp_source
from .serving import mcp_service

FAST = RetryPolicy(base_delay=0.05, max_delay=0.2)
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class RecordingProvider(MockProvider):
    """The mock model, remembering the tools each request offered."""

    def __init__(self, script: MockScript) -> None:
        super().__init__(script)
        self.offered: list[list[str]] = []

    def stream(self, request):
        self.offered.append([tool.name for tool in request.tools])
        return super().stream(request)


class NoClient:
    async def tool_result(self, call_id):
        raise AssertionError("no client tool in these tests")

    async def approval(self, call_id):
        raise AssertionError("no approvals in these tests")


def calling(name: str, arguments: dict, answer: str = "Done.") -> list[ScriptedReply]:
    """The model calls ``name`` with ``arguments``, then answers."""
    return [
        ScriptedReply(tool_calls=[ScriptedToolCall(id=f"call-{name}", name=name, arguments=arguments)]),
        ScriptedReply(text=answer),
    ]


class Harness:
    def __init__(self, toolbox: Toolbox, replies: list[ScriptedReply]) -> None:
        config = AgentConfig(name="tools", provider=ProviderConfig(type="mock"))
        self.provider = RecordingProvider(MockScript(replies=replies))
        self.agent = Agent(config=config, provider=self.provider, store=MemoryStore(), executor=toolbox, tools=toolbox)

    async def turn(self, text: str = "go") -> list:
        session, _ = await self.agent.open_session(session_id=None)
        events = []

        async def emit(event):
            events.append(event)

        await self.agent.run_turn(session.id, UserInput(text), channel=NoClient(), emit=emit)
        assert isinstance(events[-1], TurnDone), events[-1]
        return events


def finished(events) -> ToolFinished:
    return next(e for e in events if isinstance(e, ToolFinished))


@pytest.fixture
async def toolbox_of():
    made = []

    async def make(*tools, wait: float = 20.0, **kwargs):
        toolbox = Toolbox(list(tools), env={}, retry=FAST, rediscovery=FAST, **kwargs)
        made.append(toolbox)
        await toolbox.start(wait=wait)
        return toolbox

    yield make
    for toolbox in made:
        await toolbox.aclose()


async def test_the_model_calls_an_http_tool_and_reads_its_answer(http_server, toolbox_of):
    toolbox = await toolbox_of(http_tool("weather", http_server.url + "/weather/{{ city }}", schema=CITY_SCHEMA))
    harness = Harness(toolbox, calling("weather", {"city": "Paris"}, "It is 21 degrees."))
    events = await harness.turn()
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    assert not started.client_side and started.call.arguments == {"city": "Paris"}
    assert (finished(events).content, finished(events).is_error) == ('{"city":"Paris","temp":21,"units":"C"}', False)
    assert harness.provider.offered[0] == ["weather"]


async def test_mcp_tools_discovered_at_start_are_offered_and_called(mcp_server, toolbox_of):
    toolbox = await toolbox_of(mcp_source("calc", url=mcp_server.url + "/mcp", tools=["add", "shout"]))
    harness = Harness(toolbox, calling("add", {"a": 20, "b": 22}))
    events = await harness.turn()
    assert finished(events).content == "42"
    assert harness.provider.offered[0] == ["add", "shout"]


async def test_malformed_arguments_from_the_model_come_back_as_an_error_and_no_call_is_made(
    http_server, http_state, toolbox_of
):
    toolbox = await toolbox_of(http_tool("weather", http_server.url + "/weather/{{ city }}", schema=CITY_SCHEMA))
    events = await Harness(toolbox, calling("weather", {"town": "Paris"})).turn()
    result = finished(events)
    assert result.is_error and "'city' is a required property" in result.content
    assert http_state.requests == []


async def test_oversized_output_is_truncated_by_the_loop(http_server, toolbox_of):
    toolbox = await toolbox_of(http_tool("big", http_server.url + "/big"))
    events = await Harness(toolbox, calling("big", {"size": 50_000})).turn()
    content = finished(events).content
    assert content.startswith("z" * MAX_TOOL_OUTPUT_CHARS)
    assert content.endswith(f"[output truncated: {50_000 - MAX_TOOL_OUTPUT_CHARS} more characters were dropped]")


async def test_a_tool_that_does_not_answer_in_time_is_an_error_and_the_turn_completes(
    http_server, http_state, toolbox_of
):
    http_state.delay = 3.0
    toolbox = await toolbox_of(
        http_tool("weather", http_server.url + "/weather/{{ city }}", schema=CITY_SCHEMA, timeout_seconds=1)
    )
    events = await Harness(toolbox, calling("weather", {"city": "Oslo"})).turn()
    result = finished(events)
    assert result.is_error and "gave no answer within 1s" in result.content


async def test_an_mcp_server_down_at_start_is_tried_again_and_its_tools_appear_when_it_is_back(toolbox_of):
    """The runtime must not fail, nor wait, for a tool server; its tools join once it answers."""
    service = mcp_service()
    toolbox = await toolbox_of(mcp_source("calc", url=service.url + "/mcp", tools=["add"]), wait=5)
    harness = Harness(toolbox, calling("add", {"a": 2, "b": 3}))
    try:
        assert toolbox.tools() == ()
        assert "Unreachable" in toolbox.problems["calc"]
        before = finished(await harness.turn())
        assert (before.content, before.is_error) == ("unknown tool 'add'", True)
        service.start()
        for _ in range(200):
            if toolbox.tools():
                break
            await asyncio.sleep(0.05)
        assert [tool.name for tool in toolbox.tools()] == ["add"] and toolbox.problems == {}
        after = finished(await harness.turn())
        assert (after.content, after.is_error) == ("5", False)
        assert harness.provider.offered[0] == [] and harness.provider.offered[-1] == ["add"]
    finally:
        service.stop()


async def test_a_stdio_server_is_started_by_the_toolbox_and_stopped_with_it(toolbox_of):
    toolbox = await toolbox_of(mcp_source("calc", tools=["shout"]))
    events = await Harness(toolbox, calling("shout", {"text": "hello"})).turn()
    assert finished(events).content == "HELLO"
    connection = toolbox._handlers["calc"]._connection
    assert connection is not None and connection.alive
    await toolbox.aclose()
    assert not connection.alive


async def test_the_earlier_entry_keeps_a_name_two_sources_offer(mcp_server, http_server, toolbox_of):
    toolbox = await toolbox_of(
        http_tool("add", http_server.url + "/weather/x"),
        mcp_source("calc", url=mcp_server.url + "/mcp", tools=["add", "shout"]),
    )
    assert [(tool.name, tool.type) for tool in toolbox.tools()] == [("add", "http"), ("shout", "mcp")]
