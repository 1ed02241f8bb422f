"""The request protocols' shared turn path, against the scripted runtime on loopback gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from omnia.config import FacadeConfig
from omnia.facade import auth, turns
from omnia.facade.metrics import Metrics
from omnia.facade.runtime_client import RuntimeClient

from .harness import HELLO_CHUNKS, RuntimeDouble

PRINCIPAL = auth.Principal(subject="key:abc", method="apiKey")
HEADERS = {"user-agent": "test-client/1.0", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


class _Setup:
    def __init__(self, runtime: RuntimeDouble, client: RuntimeClient) -> None:
        self.runtime = runtime
        self.client = client
        self.registry = CollectorRegistry()
        self.draining = False

    def turns(self, **config) -> turns.Turns:
        return turns.Turns(
            FacadeConfig(**config),
            runtime=self.client,
            metrics=Metrics(self.registry, agent="a"),
            authenticator=auth.Anonymous(),
            draining=lambda: self.draining,
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def setup(runtime: RuntimeDouble) -> AsyncIterator[_Setup]:
    client = RuntimeClient.connect(runtime.address, open_timeout=2.0)
    yield _Setup(runtime, client)
    await client.close()


async def _collect(conversation: turns.Conversation) -> list[turns.Event]:
    return [event async for event in conversation.events()]


async def test_a_turn_streams_chunks_then_done_and_is_counted(setup):
    runner = setup.turns()
    async with await runner.open(principal=PRINCIPAL, headers=HEADERS) as conversation:
        assert setup.metric("active_connections", {"agent": "a"}) == 1
        await conversation.send("hello")
        events = await _collect(conversation)
    assert [e.text for e in events[:-1]] == list(HELLO_CHUNKS)
    assert events[-1] == turns.Done("stop", 7, 3, 0.002, 0, "")
    assert setup.metric("omnia_turns_total", {"outcome": "done"}) == 1
    assert setup.metric("omnia_tokens_total", {"provider": "mock", "model": "scripted-1", "direction": "output"}) == 3
    assert setup.metric("active_connections", {"agent": "a"}) == 0


async def test_the_session_is_opened_with_the_same_metadata_and_trace_as_the_websocket(setup):
    """The principal in the metadata is what makes sessions belong to their owner."""
    runner = setup.turns()
    async with await runner.open(principal=PRINCIPAL, headers=HEADERS, session_id="known-session"):
        pass
    opened = setup.runtime.servicer.opens[-1]
    assert opened.session_id == "known-session"
    assert dict(opened.metadata) == {
        "auth_method": "apiKey", "auth_subject": "key:abc", "user_agent": "test-client/1.0"
    }
    assert opened.traceparent == HEADERS["traceparent"]


async def test_an_unknown_session_is_refused_with_the_runtime_code(setup):
    with pytest.raises(turns.Refused) as caught:
        await setup.turns().open(principal=PRINCIPAL, headers={}, session_id="nope")
    assert caught.value.code == "SESSION_NOT_FOUND"
    assert setup.metric("active_connections", {"agent": "a"}) == 0


async def test_a_runtime_error_ends_the_turn_as_failed(setup):
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        await conversation.send("please fail")
        events = await _collect(conversation)
    assert events == [turns.Failed("PROVIDER_ERROR", "upstream said 503", True)]
    assert setup.metric("omnia_errors_total", {"code": "PROVIDER_ERROR"}) == 1


async def test_a_runtime_lost_mid_turn_is_runtime_unavailable(setup):
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        await conversation.send("slow")
        events = conversation.events()
        assert await anext(events) == turns.Chunk("working")
        await setup.runtime.kill()
        failed = await anext(events)
    assert failed.code == "RUNTIME_UNAVAILABLE" and failed.retryable
    assert setup.metric("omnia_turns_total", {"outcome": "aborted"}) == 1


async def test_cancel_ends_the_turn_with_reason_cancelled(setup):
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        await conversation.send("slow")
        events = conversation.events()
        assert await anext(events) == turns.Chunk("working")
        await conversation.cancel()
        done = await anext(events)
    assert done.finish_reason == "cancelled"


async def test_client_tool_calls_wait_for_a_result_and_only_known_calls_take_one(setup):
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        await conversation.send("client tool please")
        events = conversation.events()
        call = await anext(events)
        assert (call.name, call.arguments, call.awaits_result) == ("get_location", {"precise": True}, True)
        with pytest.raises(turns.Refused) as caught:
            await conversation.tool_result("call-unknown", "x")
        assert caught.value.code == "INVALID_MESSAGE"
        await conversation.tool_result(call.id, "Lisbon")
        rest = [event async for event in events]
    assert rest[0] == turns.Chunk("you are in Lisbon") and isinstance(rest[-1], turns.Done)


async def test_tool_calls_that_need_approval_are_denied_with_a_reason(setup):
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        await conversation.send("approve this")
        events = await _collect(conversation)
    assert events[0].awaits_result is False
    assert turns.Chunk("kept everything") in events
    approval = next(e.approval for e in setup.runtime.servicer.received if e.WhichOneof("event") == "approval")
    assert (approval.approved, approval.reason) == (False, turns.APPROVAL_REFUSED)


async def test_oversized_messages_are_refused_before_the_runtime_sees_them(setup):
    async with await setup.turns(max_message_bytes=10).open(principal=PRINCIPAL, headers={}) as conversation:
        with pytest.raises(turns.Refused) as caught:
            await conversation.send("x" * 11)
    assert caught.value.code == "MESSAGE_TOO_LARGE"
    assert not any(e.WhichOneof("event") == "message" for e in setup.runtime.servicer.received)


@pytest.mark.parametrize("content", ["hi \ud800", "\udfff"])
async def test_a_message_that_is_not_text_is_refused_before_the_runtime_sees_it(setup, content):
    """Every protocol's decoder checks its JSON for lone surrogates; this is
    the backstop for one that does not (a library decoding the body itself)."""
    async with await setup.turns().open(principal=PRINCIPAL, headers={}) as conversation:
        with pytest.raises(turns.Refused) as caught:
            await conversation.send(content)
        assert caught.value.code == "INVALID_MESSAGE" and "surrogate" in caught.value.message
    assert not any(e.WhichOneof("event") == "message" for e in setup.runtime.servicer.received)


def test_the_rate_limit_is_per_client_connection(setup):
    runner = setup.turns(messages_per_second=0.001, message_burst=2)
    runner.admit(("10.0.0.1", 5000))
    runner.admit(("10.0.0.1", 5000))
    with pytest.raises(turns.Refused) as caught:
        runner.admit(("10.0.0.1", 5000))
    assert caught.value.code == "RATE_LIMITED" and caught.value.retryable
    runner.admit(("10.0.0.1", 5001))


def test_the_rate_limit_table_stays_bounded(setup):
    runner = setup.turns(max_connections=10)
    for port in range(1000):
        runner.admit(("10.0.0.1", port))
    assert len(runner._buckets) <= 20


async def test_capacity_and_draining_refuse_new_conversations(setup):
    runner = setup.turns(max_connections=1)
    async with await runner.open(principal=PRINCIPAL, headers={}):
        with pytest.raises(turns.Refused) as caught:
            await runner.open(principal=PRINCIPAL, headers={})
        assert caught.value.code == "CAPACITY_EXCEEDED"
    setup.draining = True
    with pytest.raises(turns.Refused) as caught:
        await runner.open(principal=PRINCIPAL, headers={})
    assert caught.value.code == "DRAINING"
