"""The frame rules of docs/protocol.md, checked without a socket."""

from __future__ import annotations

import json

import pytest

from omnia.protocol import frames
from omnia.protocol.errors import ErrorCode, ProtocolError

MAX = 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"type": "message", "content": "hi"}',
            frames.UserMessage(content="hi"),
            id="message-minimal",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "id": "m1", "metadata": {"k": [1]}}',
            frames.UserMessage(content="hi", id="m1", metadata={"k": [1]}),
            id="message-with-id-and-metadata",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "shiny_new_field": 1}',
            frames.UserMessage(content="hi"),
            id="unknown-fields-are-ignored",
        ),
        pytest.param(
            '{"type": "tool_result", "id": "c1", "content": "42"}',
            frames.ToolResult(id="c1", content="42"),
            id="tool-result",
        ),
        pytest.param(
            '{"type": "tool_result", "id": "c1", "content": {"temp": 21}, "is_error": true}',
            frames.ToolResult(id="c1", content='{"temp":21}', is_error=True),
            id="tool-result-structured-content-becomes-json-text",
        ),
        pytest.param(
            '{"type": "approval", "id": "c1", "approved": false, "reason": "no"}',
            frames.Approval(id="c1", approved=False, reason="no"),
            id="approval",
        ),
        pytest.param('{"type": "cancel"}', frames.Cancel(), id="cancel"),
        pytest.param('{"type": "ping"}', frames.Ping(), id="ping"),
        pytest.param('{"type": "ping", "id": "p7"}', frames.Ping(id="p7"), id="ping-with-id"),
    ],
)
def test_valid_client_frames_parse_to_their_frame(text: str, expected: frames.ClientFrame) -> None:
    assert frames.parse_client_frame(text, max_bytes=MAX) == expected


@pytest.mark.parametrize(
    ("text", "code", "mentions"),
    [
        pytest.param("not json", ErrorCode.INVALID_MESSAGE, "JSON", id="not-json"),
        pytest.param("", ErrorCode.INVALID_MESSAGE, "JSON", id="empty"),
        pytest.param("[1, 2]", ErrorCode.INVALID_MESSAGE, "object", id="array"),
        pytest.param('"message"', ErrorCode.INVALID_MESSAGE, "object", id="string"),
        pytest.param('{"content": "hi"}', ErrorCode.INVALID_MESSAGE, "type", id="no-type"),
        pytest.param('{"type": 3}', ErrorCode.INVALID_MESSAGE, "type", id="type-not-string"),
        pytest.param(
            '{"type": "mesage"}', ErrorCode.INVALID_MESSAGE, "'mesage'", id="unknown-type"
        ),
        pytest.param('{"type": "message"}', ErrorCode.INVALID_MESSAGE, "content", id="no-content"),
        pytest.param(
            '{"type": "message", "content": 5}', ErrorCode.INVALID_MESSAGE, "content",
            id="content-not-string",
        ),
        pytest.param(
            '{"type": "message", "content": "  "}', ErrorCode.INVALID_MESSAGE, "empty",
            id="content-blank",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "metadata": []}', ErrorCode.INVALID_MESSAGE,
            "metadata", id="metadata-not-object",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "id": 1}', ErrorCode.INVALID_MESSAGE, "id",
            id="id-not-string",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "id": "' + "x" * 300 + '"}',
            ErrorCode.INVALID_MESSAGE, "id", id="id-too-long",
        ),
        pytest.param(
            '{"type": "tool_result", "content": "x"}', ErrorCode.INVALID_MESSAGE, "id",
            id="tool-result-without-id",
        ),
        pytest.param(
            '{"type": "tool_result", "id": "c1"}', ErrorCode.INVALID_MESSAGE, "content",
            id="tool-result-without-content",
        ),
        pytest.param(
            '{"type": "tool_result", "id": "c1", "content": "x", "is_error": "yes"}',
            ErrorCode.INVALID_MESSAGE, "is_error", id="tool-result-is-error-not-bool",
        ),
        pytest.param(
            '{"type": "approval", "id": "c1"}', ErrorCode.INVALID_MESSAGE, "approved",
            id="approval-without-decision",
        ),
        pytest.param(
            '{"type": "approval", "id": "c1", "approved": 1}', ErrorCode.INVALID_MESSAGE,
            "approved", id="approval-decision-not-bool",
        ),
        pytest.param(
            '{"type": "message", "content": "' + "x" * MAX + '"}', ErrorCode.MESSAGE_TOO_LARGE,
            str(MAX), id="oversized",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "metadata": {"a": ' + "[" * 16 + "]" * 16 + "}}",
            ErrorCode.INVALID_MESSAGE, "16 levels", id="metadata-nested-deeper-than-16",
        ),
        pytest.param(
            '{"type": "message", "content": "hi", "metadata": {"variables": {"n": NaN}}}',
            ErrorCode.INVALID_MESSAGE, "JSON", id="nan-is-not-json",
        ),
        pytest.param(
            '{"type": "tool_result", "id": "c1", "content": -Infinity}',
            ErrorCode.INVALID_MESSAGE, "JSON", id="infinity-is-not-json",
        ),
    ],
)
def test_bad_client_frames_raise_the_right_code(text: str, code: ErrorCode, mentions: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        frames.parse_client_frame(text, max_bytes=MAX)
    assert caught.value.code is code
    assert mentions in caught.value.message


def test_nesting_deeper_than_the_decoder_recurses_is_invalid_message() -> None:
    """A frame well within the size limit can still exhaust the JSON decoder's recursion."""
    text = '{"type": "message", "content": "hi", "metadata": {"a": ' + "[" * 30_000 + "]" * 30_000 + "}}"
    with pytest.raises(ProtocolError) as caught:
        frames.parse_client_frame(text, max_bytes=100_000)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE and "nested too deeply" in caught.value.message


def test_metadata_nested_sixteen_levels_deep_is_accepted() -> None:
    text = '{"type": "message", "content": "hi", "metadata": {"a": ' + "[" * 15 + "]" * 15 + "}}"
    assert isinstance(frames.parse_client_frame(text, max_bytes=MAX), frames.UserMessage)


def test_errors_about_an_identified_frame_carry_its_id() -> None:
    """A client that pipelines frames must know which one was refused."""
    with pytest.raises(ProtocolError) as caught:
        frames.parse_client_frame('{"type": "message", "id": "m9", "content": ""}', max_bytes=MAX)
    assert json.loads(frames.from_protocol_error(caught.value))["id"] == "m9"


def test_an_error_carries_a_retry_hint_only_when_one_is_known() -> None:
    hinted = json.loads(frames.error(ErrorCode.RUNTIME_UNAVAILABLE, "waking", retry_after_seconds=5.0))
    plain = json.loads(frames.error(ErrorCode.RUNTIME_UNAVAILABLE, "gone"))
    assert (hinted["retryable"], hinted["retry_after_seconds"]) == (True, 5.0)
    assert "retry_after_seconds" not in plain


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    """300 three-byte characters are 900 bytes: over a 512-byte limit though only 300 long."""
    text = '{"type": "message", "content": "' + "€" * 300 + '"}'
    with pytest.raises(ProtocolError) as caught:
        frames.parse_client_frame(text, max_bytes=512)
    assert caught.value.code is ErrorCode.MESSAGE_TOO_LARGE


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(
            frames.connected(
                session_id="s1", agent="a", protocol_version="1", prompt_version="1.0.0",
                resumed=True, turns=3,
            ),
            {
                "type": "connected", "session_id": "s1", "agent": "a", "protocol_version": "1",
                "prompt_version": "1.0.0", "resumed": True, "turns": 3,
            },
            id="connected",
        ),
        pytest.param(
            frames.chunk('a "quoted"\nline é'),
            {"type": "chunk", "content": 'a "quoted"\nline é'},
            id="chunk-escapes-text",
        ),
        pytest.param(
            frames.chunk("x", message_id="m1"),
            {"type": "chunk", "content": "x", "message_id": "m1"},
            id="chunk-with-message-id",
        ),
        pytest.param(
            frames.tool_call(
                id="c1", name="lookup", arguments={"q": 1}, client_side=True,
                require_approval=False,
            ),
            {
                "type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"q": 1},
                "client_side": True, "require_approval": False,
            },
            id="tool-call",
        ),
        pytest.param(
            frames.tool_result(id="c1", content="ok", is_error=False),
            {"type": "tool_result", "id": "c1", "content": "ok", "is_error": False},
            id="tool-result",
        ),
        pytest.param(
            frames.done(
                finish_reason="stop", input_tokens=3, output_tokens=5, cost=0.25, turn_index=2,
                message_id="m2",
            ),
            {
                "type": "done", "finish_reason": "stop",
                "usage": {"input_tokens": 3, "output_tokens": 5, "cost": 0.25},
                "turn_index": 2, "message_id": "m2",
            },
            id="done",
        ),
        pytest.param(
            frames.error(ErrorCode.RATE_LIMITED, "slow down"),
            {"type": "error", "code": "RATE_LIMITED", "message": "slow down", "retryable": True},
            id="error-retryable-by-code",
        ),
        pytest.param(
            frames.error(ErrorCode.INVALID_MESSAGE, "bad"),
            {"type": "error", "code": "INVALID_MESSAGE", "message": "bad", "retryable": False},
            id="error-final-by-code",
        ),
        pytest.param(
            frames.error("PROVIDER_ERROR", "429 from upstream", retryable=True),
            {"type": "error", "code": "PROVIDER_ERROR", "message": "429 from upstream",
             "retryable": True},
            id="error-retryable-decided-by-runtime",
        ),
        pytest.param(frames.pong(), {"type": "pong"}, id="pong"),
        pytest.param(frames.pong("p1"), {"type": "pong", "id": "p1"}, id="pong-echoes-id"),
    ],
)
def test_server_frames_are_one_json_object_each(built: str, expected: dict) -> None:
    assert json.loads(built) == expected


@pytest.mark.parametrize(
    ("arguments_json", "expected"),
    [
        pytest.param("", {}, id="empty-is-no-arguments"),
        pytest.param('{"a": 1}', {"a": 1}, id="object"),
        pytest.param("{broken", "{broken", id="invalid-json-passed-through-as-text"),
    ],
)
def test_tool_arguments_are_decoded_when_possible(arguments_json: str, expected: object) -> None:
    assert frames.parse_arguments(arguments_json) == expected
