"""The client protocol of an agent: WebSocket frames, error codes and limits.

Pure and I/O-free (see ``docs/protocol.md`` for the wire reference); the
facade is the adapter that puts it on a socket.
"""

from omnia.protocol.errors import RETRYABLE, CloseCode, ErrorCode, ProtocolError

__all__ = ["RETRYABLE", "CloseCode", "ErrorCode", "ProtocolError"]
