"""Frames of the WebSocket protocol: parsing what clients send, building what they get.

Pure functions over strings, no I/O, so every rule of the protocol is testable
without a socket and any transport (the facade, a test, a future proxy) shares
one implementation. A client frame is one JSON object with a ``type``; parsing
either returns one of the frame classes below or raises ``ProtocolError`` with
the code and a message that names the offending field. Unknown *fields* are
ignored, so that newer clients work against older servers; unknown *types*
are refused, so that a typo does not silently do nothing.

Server frames are built as JSON text directly: the facade relays them without
ever decoding them again, and ``chunk`` (the most frequent frame by far) skips
the dict entirely.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from omnia.protocol import limits
from omnia.protocol.errors import RETRYABLE, ErrorCode, ProtocolError

MAX_ID_LENGTH = 256
MAX_METADATA_DEPTH = 16
"""How deeply a message's metadata may nest; deeper is a client's mistake, not data."""

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


# -- client → server ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserMessage:
    """``message``: the user's next turn."""

    content: str
    id: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """``tool_result``: the client's answer to a ``client_side`` tool call."""

    id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Approval:
    """``approval``: the client's decision on a ``require_approval`` tool call."""

    id: str
    approved: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """``cancel``: stop the turn in progress."""


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: answered by ``pong`` from the facade itself, without the runtime."""

    id: str | None = None


ClientFrame = UserMessage | ToolResult | Approval | Cancel | Ping


def parse_client_frame(text: str, *, max_bytes: int) -> ClientFrame:
    """Parse one text frame from a client, or raise ``ProtocolError``.

    The size is checked before decoding, so an oversized frame costs no JSON
    parsing.
    """
    if limits.exceeds(text, max_bytes):
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"frame exceeds the limit of {max_bytes} bytes"
        )
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame is not valid JSON") from None
    except RecursionError:
        # A frame within the size limit can still nest deeper than the decoder recurses.
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame is nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame must be a JSON object")
    if holds_lone_surrogate(text, data):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"frame is not valid: {LONE_SURROGATE}")
    kind = data.get("type")
    if kind is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "frame has no 'type'")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "'type' must be a string")
    parse = _PARSERS.get(kind)
    if parse is None:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"unknown frame type {_excerpt(kind)}; expected one of: {', '.join(_PARSERS)}",
        )
    return parse(data)


def _parse_message(data: dict) -> UserMessage:
    frame_id = _optional_id(data)
    content = data.get("content")
    if not isinstance(content, str):
        raise _invalid("'content' must be a string", frame_id)
    if not content.strip():
        raise _invalid("'content' must not be empty", frame_id)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("'metadata' must be a JSON object", frame_id)
    if metadata and nests_deeper(metadata, MAX_METADATA_DEPTH):
        raise _invalid(f"'metadata' nests deeper than {MAX_METADATA_DEPTH} levels", frame_id)
    return UserMessage(content=content, id=frame_id, metadata=metadata or None)


def _parse_tool_result(data: dict) -> ToolResult:
    call_id = _required_id(data)
    if "content" not in data:
        raise _invalid("'content' is required", call_id)
    content = data["content"]
    if not isinstance(content, str):
        # A client tool may answer with structured data; the model sees text.
        content = _encode(content)
    is_error = data.get("is_error", False)
    if not isinstance(is_error, bool):
        raise _invalid("'is_error' must be a boolean", call_id)
    return ToolResult(id=call_id, content=content, is_error=is_error)


def _parse_approval(data: dict) -> Approval:
    call_id = _required_id(data)
    approved = data.get("approved")
    if not isinstance(approved, bool):
        raise _invalid("'approved' must be a boolean", call_id)
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise _invalid("'reason' must be a string", call_id)
    return Approval(id=call_id, approved=approved, reason=reason)


def _parse_cancel(data: dict) -> Cancel:
    return Cancel()


def _parse_ping(data: dict) -> Ping:
    return Ping(id=_optional_id(data))


_PARSERS = {
    "message": _parse_message,
    "tool_result": _parse_tool_result,
    "approval": _parse_approval,
    "cancel": _parse_cancel,
    "ping": _parse_ping,
}


def _optional_id(data: dict) -> str | None:
    value = data.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise _invalid(f"'id' must be a string of at most {MAX_ID_LENGTH} characters")
    return value


def _required_id(data: dict) -> str:
    value = _optional_id(data)
    if not value:
        raise _invalid("'id' is required: the id of the tool call being answered")
    return value


def _invalid(message: str, frame_id: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message, frame_id=frame_id)


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, though Python's decoder accepts them."""
    raise ValueError(f"{name} is not JSON")


# A JSON escape of half a surrogate pair; in pairs they spell one character.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
LONE_SURROGATE = (
    "a string holds half of a surrogate pair (an escape from \\uD800 to \\uDFFF alone), which is not text"
)


def holds_lone_surrogate(raw: str | bytes, value: Any) -> bool:
    """Whether ``value``, decoded from the JSON ``raw``, has a string that is not text.

    JSON escapes a character beyond the basic plane as two surrogates; one
    alone decodes to a string no UTF-8 can encode, which then fails wherever
    it is encoded (protobuf to the runtime, a store's driver). Only JSON with
    such an escape in it is looked at closely.
    """
    pattern = _SURROGATE_ESCAPE_BYTES if isinstance(raw, bytes | bytearray) else _SURROGATE_ESCAPE
    if pattern.search(raw) is None:  # type: ignore[arg-type]
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def is_text(value: str) -> bool:
    """Whether ``value`` is text UTF-8 can encode (no lone surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _excerpt(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


# -- server → client ---------------------------------------------------------


def connected(
    *,
    session_id: str,
    agent: str,
    protocol_version: str,
    prompt_version: str,
    resumed: bool,
    turns: int,
) -> str:
    return _encode(
        {
            "type": "connected",
            "session_id": session_id,
            "agent": agent,
            "protocol_version": protocol_version,
            "prompt_version": prompt_version,
            "resumed": resumed,
            "turns": turns,
        }
    )


def chunk(content: str, *, message_id: str = "") -> str:
    if message_id:
        return (
            '{"type":"chunk","content":'
            + _encode(content)
            + ',"message_id":'
            + _encode(message_id)
            + "}"
        )
    return '{"type":"chunk","content":' + _encode(content) + "}"


def tool_call(
    *, id: str, name: str, arguments: Any, client_side: bool, require_approval: bool
) -> str:
    return _encode(
        {
            "type": "tool_call",
            "id": id,
            "name": name,
            "arguments": arguments,
            "client_side": client_side,
            "require_approval": require_approval,
        }
    )


def tool_result(*, id: str, content: str, is_error: bool) -> str:
    return _encode({"type": "tool_result", "id": id, "content": content, "is_error": is_error})


def done(
    *,
    finish_reason: str,
    input_tokens: int,
    output_tokens: int,
    cost: float,
    turn_index: int,
    message_id: str = "",
) -> str:
    frame: dict[str, Any] = {
        "type": "done",
        "finish_reason": finish_reason,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost": cost},
        "turn_index": turn_index,
    }
    if message_id:
        frame["message_id"] = message_id
    return _encode(frame)


def error(
    code: ErrorCode | str,
    message: str,
    *,
    retryable: bool | None = None,
    frame_id: str | None = None,
    retry_after_seconds: float | None = None,
) -> str:
    """An ``error`` frame; ``retryable`` defaults to what the code implies.

    ``retry_after_seconds`` is a hint of when a retry may succeed, given where one is known.
    """
    if retryable is None:
        retryable = code in RETRYABLE
    frame: dict[str, Any] = {
        "type": "error",
        "code": str(code),
        "message": message,
        "retryable": retryable,
    }
    if frame_id is not None:
        frame["id"] = frame_id
    if retry_after_seconds is not None:
        frame["retry_after_seconds"] = retry_after_seconds
    return _encode(frame)


def from_protocol_error(exc: ProtocolError) -> str:
    return error(exc.code, exc.message, frame_id=exc.frame_id)


def pong(frame_id: str | None = None) -> str:
    if frame_id is None:
        return '{"type":"pong"}'
    return _encode({"type": "pong", "id": frame_id})


def parse_arguments(arguments_json: str) -> Any:
    """Tool arguments as JSON for the client; the raw text if the model produced invalid JSON."""
    if not arguments_json:
        return {}
    try:
        return json.loads(arguments_json)
    except ValueError:
        return arguments_json


def encode_metadata(metadata: dict[str, Any]) -> str:
    return _encode(metadata)
