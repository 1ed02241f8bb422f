"""A client's trace reaches the runtime's spans through the facade and gRPC metadata."""

from __future__ import annotations

import json

import httpx
import pytest

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from omnia.agent import Agent
from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply
from omnia.facade.app import create_app
from omnia.facade.runtime_client import RuntimeClient
from omnia.facade.server import FacadeServer
from omnia.providers.mock import MockProvider
from omnia.runtime import server as runtime_server
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import MemoryStore

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_traceparent_header_parents_the_runtime_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    script = MockScript(replies=[ScriptedReply(text="traced")])
    config = AgentConfig(name="traced", provider=ProviderConfig(type="mock", mock=script))
    agent = Agent(
        config=config, provider=MockProvider(script), store=MemoryStore(), tracer=provider.get_tracer("t")
    )
    grpc_server, port = await runtime_server.start(AgentRuntimeService(agent), address="127.0.0.1:0")
    runtime = RuntimeClient.connect(f"127.0.0.1:{port}")
    app = create_app(config.facade, agent=config.name, runtime=runtime, registry=CollectorRegistry())
    facade = FacadeServer(app, config=config.facade, host="127.0.0.1", port=0)
    await facade.start()
    try:
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        async with connect(f"ws://127.0.0.1:{facade.port}/ws", additional_headers=headers, proxy=None) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            await ws.send(json.dumps({"type": "message", "content": "hi"}))
            while json.loads(await ws.recv())["type"] != "done":
                pass
    finally:
        await facade.stop()
        await runtime.close()
        await grpc_server.stop(grace=None)
    root = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent traced")
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == PARENT_ID


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/v1/chat/completions",
            {"model": "traced", "messages": [{"role": "user", "content": "hi"}]},
            id="openai",
        ),
        pytest.param(
            "/a2a",
            {
                "jsonrpc": "2.0", "id": 1, "method": "message/send",
                "params": {"message": {"kind": "message", "role": "user", "messageId": "m1",
                                       "parts": [{"kind": "text", "text": "hi"}]}},
            },
            id="a2a",
        ),
    ],
)
async def test_open_protocols_pass_the_traceparent_header_like_the_websocket(path, body):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    script = MockScript(replies=[ScriptedReply(text="traced")])
    config = AgentConfig(name="traced", provider=ProviderConfig(type="mock", mock=script))
    agent = Agent(
        config=config, provider=MockProvider(script), store=MemoryStore(), tracer=provider.get_tracer("t")
    )
    grpc_server, port = await runtime_server.start(AgentRuntimeService(agent), address="127.0.0.1:0")
    runtime = RuntimeClient.connect(f"127.0.0.1:{port}")
    app = create_app(config.facade, agent=config.name, runtime=runtime, registry=CollectorRegistry())
    facade = FacadeServer(app, config=config.facade, host="127.0.0.1", port=0)
    await facade.start()
    try:
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        async with httpx.AsyncClient(base_url=facade.url, timeout=10) as http:
            response = await http.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert "traced" in response.text
    finally:
        await facade.stop()
        await runtime.close()
        await grpc_server.stop(grace=None)
    root = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent traced")
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == PARENT_ID


async def test_grpc_metadata_alone_carries_the_trace_context():
    """A third-party facade may send the context only as gRPC metadata, as OpenTelemetry's
    gRPC instrumentation does; the runtime honours it without the Open field."""
    import grpc

    from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
    from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = AgentConfig(name="traced", provider=ProviderConfig(type="mock"))
    agent = Agent(config=config, provider=MockProvider(), store=MemoryStore(), tracer=provider.get_tracer("t"))
    grpc_server, port = await runtime_server.start(AgentRuntimeService(agent), address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.AgentRuntimeStub(channel).Converse(
                metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
            )
            await call.write(pb.ClientEvent(open=pb.Open()))
            await call.read()
            await call.write(pb.ClientEvent(message=pb.UserMessage(content="hi")))
            while not (await call.read()).HasField("done"):
                pass
            await call.done_writing()
    finally:
        await grpc_server.stop(grace=None)
    root = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent traced")
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == PARENT_ID
