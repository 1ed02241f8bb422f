"""The conversation state machine behind one Converse stream, without gRPC."""

from __future__ import annotations

import asyncio

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
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
