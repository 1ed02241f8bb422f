"""Replies in OpenAI's Chat Completions wire format, for a ``ScriptedServer``.

Shapes follow the streaming reference: ``chat.completion.chunk`` objects as
``data:`` events, tool calls as fragments keyed by ``index``, usage in a last
chunk with no choices (``stream_options.include_usage``), then ``[DONE]``.
"""

from __future__ import annotations

from .serving import Reply

PATH = "/v1/chat/completions"


def _chunk(delta: dict | None = None, *, finish: str | None = None, usage: dict | None = None) -> dict:
    chunk: dict = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def text(*pieces: str, usage: tuple[int, int] = (11, 3), finish: str = "stop", gap: float = 0.0) -> Reply:
    """A streamed text reply, one chunk per piece."""
    events = [(None, _chunk({"role": "assistant", "content": ""}))]
    events += [(None, _chunk({"content": piece})) for piece in pieces]
    events += [(None, _chunk({}, finish=finish)), (None, _chunk(usage=_usage(*usage))), (None, "[DONE]")]
    return Reply(events=tuple(events), gap=gap)


def tool_calls(
    *calls: tuple[str, str, list[str]], finish: str = "tool_calls", usage: tuple[int, int] = (20, 9)
) -> Reply:
    """A reply calling tools: each ``(id, name, argument fragments)``, fragments interleaved."""
    events = [(None, _chunk({"role": "assistant", "content": None}))]
    for index, (call_id, name, _) in enumerate(calls):
        start = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append((None, _chunk({"tool_calls": [start]})))
    for step in range(max(len(fragments) for _, _, fragments in calls)):
        for index, (_, _, fragments) in enumerate(calls):
            if step < len(fragments):
                part = {"index": index, "function": {"arguments": fragments[step]}}
                events.append((None, _chunk({"tool_calls": [part]})))
    events += [(None, _chunk({}, finish=finish)), (None, _chunk(usage=_usage(*usage))), (None, "[DONE]")]
    return Reply(events=tuple(events))


def failure(status: int, message: str, *, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    """An HTTP error with OpenAI's error body."""
    body = {"error": {"message": message, "type": "test_error", "param": None, "code": None}}
    return Reply(status=status, body=body, headers=headers or {}, delay=delay)


def text_then_stream_error(piece: str, message: str) -> Reply:
    """Some text, then an error object inside the stream: a failure mid-reply."""
    events = (
        (None, _chunk({"role": "assistant", "content": piece})),
        (None, {"error": {"message": message, "type": "server_error"}}),
    )
    return Reply(events=events)


def endless_tool_call(call_id: str = "call_1", name: str = "search", fragment: str = "a" * 512) -> Reply:
    """A tool call whose arguments never end (a server that ignores max_tokens)."""
    start = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": '{"q": "'}}
    events = ((None, _chunk({"role": "assistant", "content": None})), (None, _chunk({"tool_calls": [start]})))
    part = {"index": 0, "function": {"arguments": fragment}}
    return Reply(events=events, forever=(None, _chunk({"tool_calls": [part]})))


def endless_event() -> Reply:
    """An event that never ends: ``data:`` and then bytes without a line end."""
    return Reply(events=(), endless=b"data: {\"a\": \"" + b"a" * 65536)
