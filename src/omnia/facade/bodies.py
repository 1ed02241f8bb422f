"""Reading the JSON body of an open-protocol request, within the facade's limits.

The OpenAI-compatible endpoint and the A2A endpoint both take a JSON body from
any client. Read whole, a body is as large as the client likes and may nest
deeper than the JSON decoder recurses; both are the client's doing, so both
end in a clear refusal (``BodyRefused``: 413 or 400), never a traceback or an
internal error. The MCP endpoint's SDK applies the same size bound itself.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message

from omnia.protocol.errors import ErrorCode
from omnia.protocol.frames import LONE_SURROGATE, holds_lone_surrogate, nests_deeper

# Room for a replayed conversation (or a JSON-RPC envelope) around the one
# message the limits bound.
BODY_FACTOR = 4
MIN_BODY_BYTES = 64 * 1024
# How deeply a request body's objects and arrays may nest. Requests nest a
# few levels (a tool's JSON schema a dozen or so); deeper is a client's mistake.
MAX_BODY_DEPTH = 64


class BodyRefused(Exception):
    """A body refused before it is used: ``status`` 413 (too large) or 400 (not JSON)."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def body_limit(max_message_bytes: int) -> int:
    """The largest request body accepted for a message limit of ``max_message_bytes``."""
    return max(BODY_FACTOR * max_message_bytes, MIN_BODY_BYTES)


async def read_json(request: Request, *, limit: int) -> tuple[bytes, Any]:
    """The body as sent and as decoded, or ``BodyRefused``.

    A declared length over ``limit`` is refused before anything is read, and a
    body without one is refused as soon as it passes the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for part in request.stream():
        received += part
        if len(received) > limit:
            raise _too_large(limit)
    try:
        decoded = json.loads(received)
    except RecursionError:
        raise _not_json(f"the request body nests deeper than {MAX_BODY_DEPTH} levels") from None
    except ValueError:
        raise _not_json("the request body is not valid JSON") from None
    if isinstance(decoded, dict | list) and nests_deeper(decoded, MAX_BODY_DEPTH):
        raise _not_json(f"the request body nests deeper than {MAX_BODY_DEPTH} levels")
    if holds_lone_surrogate(received, decoded):
        raise _not_json(f"the request body is not valid: {LONE_SURROGATE}")
    return bytes(received), decoded


def replaying(request: Request, body: bytes) -> Request:
    """A request like ``request`` whose body, already read, is ``body``.

    For handing a checked request on to a library that reads the body itself.
    The two share the scope, so ``request.state`` carries over.
    """
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def _too_large(limit: int) -> BodyRefused:
    return BodyRefused(f"the request body exceeds {limit} bytes", status=413, code=ErrorCode.MESSAGE_TOO_LARGE)


def _not_json(message: str) -> BodyRefused:
    return BodyRefused(message, status=400, code=ErrorCode.INVALID_MESSAGE)
