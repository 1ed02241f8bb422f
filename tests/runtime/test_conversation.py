"""The conversation state machine behind one Converse stream, without gRPC."""

from __future__ import annotations

import asyncio

import pytest

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia.config import PromptConfig, PromptRollout
from omnia.protocol import sessions
from omnia.runtime.conversation import Conversation


def _open(session_id: str = "") -> pb.ClientEvent:
    return pb.ClientEvent(open=pb.Open(session_id=session_id))


def _message(text: str, **extra) -> pb.ClientEvent:
    return pb.ClientEvent(message=pb.UserMessage(content=text, **extra))


async def _until(conversation: Conversation, kinds: set[str]) -> list[pb.ServerEvent]:
    events = []
    while True:
        event = await asyncio.wait_for(conversation.next_event(), 5)
        if event is None:
            return events
        events.append(event)
        if event.WhichOneof("event") in kinds:
            return events


async def test_first_event_must_be_open_or_the_conversation_ends_with_an_error(agent):
    conversation = Conversation(agent)
    await conversation.handle(_message("hi"))
    error = await conversation.next_event()
    assert error.error.code == "INVALID_MESSAGE"
    assert await conversation.next_event() is None


async def test_open_then_a_message_streams_to_done(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    opened = (await conversation.next_event()).opened
    assert opened.session_id and opened.agent == "helper" and not opened.resumed
    await conversation.handle(_message("hello"))
    events = await _until(conversation, {"done", "error"})
    assert "".join(e.chunk.content for e in events if e.HasField("chunk")) == "hello"
    assert events[-1].done.turn_index == 0 and events[-1].done.provider == "mock"


async def test_resume_reports_the_turns_already_there(agent):
    first = Conversation(agent)
    await first.handle(_open())
    session_id = (await first.next_event()).opened.session_id
    await first.handle(_message("one"))
    await _until(first, {"done"})
    second = Conversation(agent)
    await second.handle(_open(session_id))
    opened = (await second.next_event()).opened
    assert (opened.session_id, opened.resumed, opened.turns) == (session_id, True, 1)


async def test_unknown_session_ends_with_session_not_found(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open("no-such-session"))
    assert (await conversation.next_event()).error.code == "SESSION_NOT_FOUND"
    assert await conversation.next_event() is None


async def test_second_message_during_a_turn_is_refused_and_the_turn_goes_on(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("slow"))
    await conversation.handle(_message("again"))
    events = await _until(conversation, {"done"})
    errors = [e.error for e in events if e.HasField("error")]
    assert [(e.code, e.retryable) for e in errors] == [("TURN_IN_PROGRESS", True)]
    assert events[-1].done.finish_reason == "stop"


async def test_cancel_ends_the_turn_with_a_cancelled_done(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("slow"))
    await _until(conversation, {"chunk"})
    await conversation.handle(pb.ClientEvent(cancel=pb.Cancel()))
    events = await _until(conversation, {"done"})
    assert events[-1].done.finish_reason == "cancelled"


async def test_client_tool_result_is_routed_to_the_waiting_call(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("tool please"))
    call = (await _until(conversation, {"tool_call"}))[-1].tool_call
    assert (call.id, call.name, call.client_side) == ("t1", "confirm", True)
    await conversation.handle(pb.ClientEvent(tool_result=pb.ToolResult(call_id="t1", content="yes")))
    events = await _until(conversation, {"done"})
    assert [e.tool_result.content for e in events if e.HasField("tool_result")] == ["yes"]


async def test_tool_result_for_no_waiting_call_is_invalid_and_harmless(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(pb.ClientEvent(tool_result=pb.ToolResult(call_id="zzz", content="?")))
    assert (await conversation.next_event()).error.code == "INVALID_MESSAGE"
    await conversation.handle(_message("still here"))
    assert (await _until(conversation, {"done"}))[-1].HasField("done")


async def test_bad_metadata_json_is_invalid_message(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("x", metadata_json="[1, 2]"))
    assert (await conversation.next_event()).error.code == "INVALID_MESSAGE"


async def test_closing_mid_turn_commits_the_partial_turn(agent):
    """A client that hangs up mid-reply keeps what was generated in its history."""
    conversation = Conversation(agent)
    await conversation.handle(_open())
    session_id = (await conversation.next_event()).opened.session_id
    await conversation.handle(_message("slow"))
    await _until(conversation, {"chunk"})
    await conversation.aclose(grace=2)
    turns = (await agent.store.get(session_id)).turns
    assert len(turns) == 1 and turns[0].finish_reason == "cancelled"


async def test_chunks_waiting_together_are_merged_in_order_before_what_follows(agent):
    """A backlogged reader gets one larger chunk instead of many small ones;
    text, order and the done that follows are unchanged."""
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("hello there, this is a longer message"))
    while conversation._turn is not None and not conversation._turn.done():
        await asyncio.sleep(0.01)
    first = await conversation.next_event()
    second = await conversation.next_event()
    assert first.chunk.content == "hello there, this is a longer message"
    assert second.HasField("done")


async def test_a_reader_that_keeps_up_sees_the_chunks_as_produced(agent):
    conversation = Conversation(agent)
    await conversation.handle(_open())
    await conversation.next_event()
    await conversation.handle(_message("slow"))
    events = await _until(conversation, {"done"})
    chunks = [e.chunk.content for e in events if e.HasField("chunk")]
    assert "".join(chunks) == "s" * 200 and len(chunks) > 20


def _create(session_id: str, prompt_version: str = "") -> pb.ClientEvent:
    return pb.ClientEvent(
        open=pb.Open(
            session_id=session_id,
            create=True,
            prompt_version=prompt_version,
            metadata={"auth_method": "apiKey", "auth_subject": "key:abc"},
        )
    )


def _with_canary(agent, weight: int) -> None:
    agent.config = agent.config.model_copy(
        update={
            "prompts": PromptRollout(
                stable=PromptConfig(version="1.0.0"),
                canary=PromptConfig(version="2.0.0"),
                retained=[PromptConfig(version="0.9.0")],
                canary_weight=weight,
            )
        }
    )


async def test_create_stores_the_session_under_the_facades_id(agent):
    """A facade announces the id before the runtime sees it; the runtime keeps that id."""
    conversation = Conversation(agent)
    await conversation.handle(_create("facade-chosen"))
    opened = (await conversation.next_event()).opened
    assert (opened.session_id, opened.resumed, opened.turns) == ("facade-chosen", False, 0)
    stored = await agent.store.get("facade-chosen")
    assert stored.metadata == {"auth_method": "apiKey", "auth_subject": "key:abc"}
    await conversation.handle(_message("hello"))
    assert (await _until(conversation, {"done"}))[-1].done.turn_index == 0


@pytest.mark.parametrize(
    ("announced", "weight", "expected"),
    [
        pytest.param("2.0.0", 50, "2.0.0", id="announced-canary-kept"),
        pytest.param("1.0.0", 50, "1.0.0", id="announced-stable-kept"),
        pytest.param("2.0.0", 0, "2.0.0", id="canary-still-served-at-weight-0"),
        pytest.param("0.9.0", 0, "1.0.0", id="retained-is-not-for-new-sessions"),
        pytest.param("3.0.0", 0, "1.0.0", id="unknown-version-chosen-again"),
    ],
)
async def test_create_keeps_the_announced_version_while_the_rollout_serves_it(
    agent, announced: str, weight: int, expected: str
):
    """The client was told a version in ``connected``; it gets it unless the rollout moved on."""
    _with_canary(agent, weight)
    conversation = Conversation(agent)
    await conversation.handle(_create("s-1", announced))
    assert (await conversation.next_event()).opened.prompt_version == expected
    assert (await agent.store.get("s-1")).prompt_version == expected


async def test_create_chooses_like_the_facade_when_nothing_was_announced(agent):
    _with_canary(agent, 50)
    for session_id in (f"s-{n}" for n in range(10)):
        conversation = Conversation(agent)
        await conversation.handle(_create(session_id))
        opened = (await conversation.next_event()).opened
        assert opened.prompt_version == sessions.prompt_version(
            session_id, stable="1.0.0", canary="2.0.0", canary_weight=50
        )


@pytest.mark.parametrize(
    "session_id", [pytest.param("", id="empty"), pytest.param("x" * 257, id="too-long")]
)
async def test_create_without_a_usable_id_is_invalid(agent, session_id: str):
    conversation = Conversation(agent)
    await conversation.handle(_create(session_id))
    assert (await conversation.next_event()).error.code == "INVALID_MESSAGE"
    assert await conversation.next_event() is None


async def test_create_of_an_existing_id_stores_nothing_over_it(agent):
    first = Conversation(agent)
    await first.handle(_create("taken"))
    await first.next_event()
    await first.handle(_message("hello"))
    await _until(first, {"done"})
    second = Conversation(agent)
    await second.handle(_create("taken"))
    error = (await second.next_event()).error
    assert (error.code, error.retryable) == ("INTERNAL", True)
    assert len((await agent.store.get("taken")).turns) == 1
