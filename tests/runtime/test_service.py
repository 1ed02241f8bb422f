"""The runtime's gRPC service over a real loopback channel."""

from __future__ import annotations

import json

import grpc
import pytest

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc
from omnia.config import PromptConfig, PromptRollout
from omnia.runtime import server as runtime_server
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import StoreUnavailable


@pytest.fixture
async def stub(agent):
    service = AgentRuntimeService(agent)
    grpc_server, port = await runtime_server.start(service, address="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.AgentRuntimeStub(channel)
    await channel.close()
    await grpc_server.stop(grace=None)


async def test_converse_streams_a_turn_and_get_session_returns_it(stub):
    call = stub.Converse()
    await call.write(pb.ClientEvent(open=pb.Open()))
    session_id = (await call.read()).opened.session_id
    await call.write(pb.ClientEvent(message=pb.UserMessage(content="ping over grpc")))
    text = ""
    while (event := await call.read()).WhichOneof("event") == "chunk":
        text += event.chunk.content
    assert text == "ping over grpc" and event.done.usage.output_tokens == 3
    await call.done_writing()
    stored = await stub.GetSession(pb.GetSessionRequest(session_id=session_id))
    turns = json.loads(stored.turns_json)
    assert [m["role"] for m in turns[0]["messages"]] == ["user", "assistant"]


async def test_get_session_of_unknown_id_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSession(pb.GetSessionRequest(session_id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_reports_the_store(stub, agent, monkeypatch):
    assert (await stub.Health(pb.HealthRequest())).serving
    async def down():
        raise StoreUnavailable("refused")
    monkeypatch.setattr(agent.store, "ping", down)
    health = await stub.Health(pb.HealthRequest())
    assert (health.serving, health.store_ok) == (False, False) and "refused" in health.detail


async def test_describe_tells_the_agent_and_its_rollout(agent):
    """What a facade needs to announce a new session without opening anything."""
    agent.config = agent.config.model_copy(
        update={
            "prompts": PromptRollout(
                stable=PromptConfig(version="1.0.0"),
                canary=PromptConfig(version="1.1.0"),
                canary_weight=30,
            )
        }
    )
    service = AgentRuntimeService(agent)
    grpc_server, port = await runtime_server.start(service, address="127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        description = await pb_grpc.AgentRuntimeStub(channel).Describe(pb.DescribeRequest())
    await grpc_server.stop(grace=None)
    assert description == pb.Description(
        agent="helper", stable_version="1.0.0", canary_version="1.1.0", canary_weight=30
    )


async def test_describe_without_a_canary_has_no_canary_version(stub):
    description = await stub.Describe(pb.DescribeRequest())
    assert (description.stable_version, description.canary_version, description.canary_weight) == (
        "0.0.0", "", 0,
    )
