"""Traces of a turn: invoke_agent → chat → execute_tool, with the GenAI attributes."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from omnia import telemetry
from omnia.agent import Agent, ToolOutcome, UserInput
from omnia.config import (
    AgentConfig,
    MockScript,
    ProviderConfig,
    ScriptedError,
    ScriptedReply,
    ScriptedToolCall,
    ToolConfig,
)
from omnia.providers.mock import MockProvider
from omnia.sessions import MemoryStore

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


def _agent(exporter, replies, tools=()):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    script = MockScript(replies=replies)
    config = AgentConfig(name="helper", provider=ProviderConfig(type="mock", mock=script), tools=list(tools))
    return Agent(
        config=config,
        provider=MockProvider(script, model="mock-1"),
        store=MemoryStore(),
        tracer=provider.get_tracer("test"),
    )


class Client:
    async def tool_result(self, call_id):
        return ToolOutcome("42")

    async def approval(self, call_id):
        raise AssertionError("no approvals here")


async def _turn(agent, *, trace_context=None):
    session, _ = await agent.open_session(session_id=None)
    events = []

    async def emit(event):
        events.append(event)

    await agent.run_turn(session.id, UserInput("hi"), channel=Client(), emit=emit, trace_context=trace_context)
    return session.id, events


async def test_a_turn_with_a_tool_call_is_one_agent_span_over_two_chats_and_a_tool(exporter):
    agent = _agent(
        exporter,
        [ScriptedReply(tool_calls=[ScriptedToolCall(id="c1", name="answer")]), ScriptedReply(text="It is 42.")],
        tools=[ToolConfig(name="answer", type="client")],
    )
    session_id, _ = await _turn(agent)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["invoke_agent helper"]
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat mock-1"]
    tool = spans["execute_tool answer"]
    assert len(chats) == 2
    assert root.parent is None
    assert all(s.parent.span_id == root.context.span_id for s in (*chats, tool))
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {root.context.trace_id}
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.conversation.id"] == session_id
    assert root.attributes["gen_ai.provider.name"] == "mock"
    assert root.attributes["gen_ai.usage.output_tokens"] == sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats)
    assert chats[0].kind == trace.SpanKind.CLIENT
    assert chats[0].attributes["gen_ai.request.model"] == "mock-1"
    assert chats[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert (tool.attributes["gen_ai.tool.name"], tool.attributes["gen_ai.tool.call.id"]) == ("answer", "c1")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"


async def test_the_turn_joins_the_clients_trace(exporter):
    agent = _agent(exporter, [ScriptedReply(text="ok")])
    await _turn(agent, trace_context=telemetry.context_from_traceparent(TRACEPARENT))
    root = next(s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent"))
    assert format(root.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(root.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_a_failed_turn_marks_its_spans_as_errors(exporter):
    agent = _agent(exporter, [ScriptedReply(error=ScriptedError(message="overloaded", retryable=True))])
    await _turn(agent)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root, chat = spans["invoke_agent helper"], spans["chat mock-1"]
    assert root.status.status_code == trace.StatusCode.ERROR
    assert root.attributes["error.type"] == "PROVIDER_ERROR"
    assert chat.status.status_code == trace.StatusCode.ERROR


@pytest.mark.parametrize(
    ("traceparent", "valid"),
    [
        pytest.param(TRACEPARENT, True, id="w3c"),
        pytest.param("", False, id="empty"),
        pytest.param("00-zz-yy-01", False, id="malformed"),
        pytest.param("00-00000000000000000000000000000000-b7ad6b7169203331-01", False, id="zero-trace-id"),
    ],
)
def test_traceparent_parsing_accepts_only_valid_contexts(traceparent, valid):
    assert (telemetry.context_from_traceparent(traceparent) is not None) is valid
