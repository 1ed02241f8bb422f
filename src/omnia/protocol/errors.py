"""Error codes and close codes of the WebSocket protocol.

Clients branch on these strings and numbers, so they are part of the public
contract (see ``docs/protocol.md``): add codes freely, never rename one.
Whether an error is worth retrying is a property of the code, with one
exception: the runtime decides it for the errors it raises itself
(``PROVIDER_ERROR``, ``TOOL_ERROR``), because only it knows whether a provider
answered 429 or 400.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    UNAUTHORIZED = "UNAUTHORIZED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    TOOL_ERROR = "TOOL_ERROR"
    RUNTIME_UNAVAILABLE = "RUNTIME_UNAVAILABLE"
    DRAINING = "DRAINING"
    INTERNAL = "INTERNAL"
    TURN_IN_PROGRESS = "TURN_IN_PROGRESS"
    CAPACITY_EXCEEDED = "CAPACITY_EXCEEDED"
    # Raised by the runtime's session handling (see docs/protocol.md).
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    SESSION_CONFLICT = "SESSION_CONFLICT"
    SESSION_FULL = "SESSION_FULL"
    # Raised by the runtime before a turn starts (see docs/budgets.md).
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.RUNTIME_UNAVAILABLE,
        ErrorCode.DRAINING,
        ErrorCode.TURN_IN_PROGRESS,
        ErrorCode.CAPACITY_EXCEEDED,
        ErrorCode.STORE_UNAVAILABLE,
        ErrorCode.SESSION_CONFLICT,
    }
)


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 plus the 4xxx private range)."""

    NORMAL = 1000
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    # The library closes with 1009 by itself when a frame exceeds the hard
    # frame limit; the facade when a message comes in too many fragments.
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4401
    SESSION_NOT_FOUND = 4404


class ProtocolError(Exception):
    """A client frame the server refuses; becomes one ``error`` frame.

    The connection survives a ``ProtocolError``: it is the answer to one bad
    frame, not a verdict on the client.
    """

    def __init__(self, code: ErrorCode, message: str, *, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id
