"""Replies in Anthropic's Messages wire format, for a ``ScriptedServer``.

Shapes follow the streaming reference: named events ``message_start``,
``content_block_start/delta/stop``, ``message_delta`` (stop reason and
cumulative output tokens), ``message_stop``, with ``ping`` in between and
``error`` events for failures inside a stream.
"""

from __future__ import annotations

from .serving import Reply

PATH = "/v1/messages"


def _start(input_tokens: int) -> tuple[str, dict]:
    message = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return ("message_start", {"type": "message_start", "message": message})


def _end(stop_reason: str, output_tokens: int) -> list[tuple[str, dict]]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def _text_block(index: int, pieces: tuple[str, ...]) -> list[tuple[str, dict]]:
    events = [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
        )
        for piece in pieces
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def text(
    *pieces: str, usage: tuple[int, int] = (12, 4), stop_reason: str = "end_turn", gap: float = 0.0
) -> Reply:
    """A streamed text reply, one delta per piece."""
    events = [_start(usage[0]), *_text_block(0, pieces), *_end(stop_reason, usage[1])]
    return Reply(events=tuple(events), gap=gap)


def tool_use(
    *calls: tuple[str, str, list[str]], preamble: str = "", usage: tuple[int, int] = (30, 17)
) -> Reply:
    """An optional text block, then one ``tool_use`` block per ``(id, name, JSON fragments)``."""
    events = [_start(usage[0])]
    if preamble:
        events += _text_block(0, (preamble,))
    for offset, (call_id, name, fragments) in enumerate(calls):
        index = offset + (1 if preamble else 0)
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": fragment},
                },
            )
            for fragment in fragments
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += _end("tool_use", usage[1])
    return Reply(events=tuple(events))


def failure(
    status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None, delay: float = 0.0
) -> Reply:
    """An HTTP error with Anthropic's error body."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return Reply(status=status, body=body, headers=headers or {}, delay=delay)


def stream_error(error_type: str, message: str, *, after: tuple[str, ...] = ()) -> Reply:
    """A ``200 OK`` stream that fails with an ``error`` event, after some text if ``after``."""
    events = [_start(5)]
    if after:
        events += _text_block(0, after)[:-1]
    events.append(("error", {"type": "error", "error": {"type": error_type, "message": message}}))
    return Reply(events=tuple(events))


def endless_tool_call(call_id: str = "toolu_1", name: str = "search", fragment: str = "a" * 512) -> Reply:
    """A tool use whose input never ends (a server that ignores max_tokens)."""
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    events = (
        _start(30),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
    )
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": fragment}}
    return Reply(events=events, forever=("content_block_delta", delta))


def endless_event() -> Reply:
    """An event that never ends: ``data:`` and then bytes without a line end."""
    return Reply(events=(), endless=b"data: {\"a\": \"" + b"a" * 65536)
