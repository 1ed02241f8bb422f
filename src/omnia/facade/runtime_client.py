"""The facade's side of the runtime's gRPC service.

One ``grpc.aio`` channel carries every conversation of the process as an
HTTP/2 stream, so a new WebSocket costs a stream, not a TCP connection.

Recovery is the delicate part. After the runtime disappears, a channel sits
in TRANSIENT_FAILURE and fails every "fail-fast" call at once *even after the
runtime is back*, until something asks it to reconnect. So every call here is
``wait_for_ready`` (which makes the channel reconnect, with a short back-off)
bounded by a deadline of ours: a dead runtime costs a caller at most that
deadline, and a restarted one is picked up by the very next call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import grpc

from omnia._proto.omnia.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from omnia.facade import auth

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # Localhost: reconnect quickly rather than backing off for minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

# Status codes that mean "the runtime is not there (right now)", as opposed to
# a runtime that answered with a bug.
UNAVAILABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def session_metadata(principal: auth.Principal, headers: Mapping[str, str]) -> dict[str, str]:
    """What a conversation's ``Open`` tells the runtime about its client, whatever the protocol."""
    metadata = {"auth_method": principal.method, "auth_subject": principal.subject}
    user_agent = headers.get("user-agent")
    if user_agent:
        metadata["user_agent"] = user_agent[:256]
    return metadata


def client_traceparent(headers: Mapping[str, str]) -> str:
    """The client's W3C ``traceparent`` header when well formed, else empty (a new trace)."""
    traceparent = headers.get("traceparent", "")
    return traceparent if _TRACEPARENT.fullmatch(traceparent) else ""


class RuntimeUnavailable(Exception):
    """The runtime could not be reached or did not answer in time."""


class RuntimeClient:
    """Conversations and health checks against one runtime.

    The client owns its channel only when made by ``connect``; ``close`` then
    closes it.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        open_timeout: float = 5.0,
        health_timeout: float = 1.0,
    ) -> None:
        self.channel = channel
        self.open_timeout = open_timeout
        self.health_timeout = health_timeout
        self._stub = runtime_pb2_grpc.AgentRuntimeStub(channel)

    @classmethod
    def connect(cls, address: str, **timeouts: float) -> RuntimeClient:
        """A client on a new insecure channel (the runtime listens on localhost only).

        Must be called with the event loop that will use it running.
        """
        return cls(grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS), **timeouts)

    def converse(self, *, traceparent: str | None = None) -> grpc.aio.StreamStreamCall:
        """Start a Converse stream; write and read it directly, with no iterator task.

        The stream has no deadline (conversations last as long as their
        WebSocket); the caller bounds the opening handshake with
        ``open_timeout``. ``traceparent`` (W3C trace context) travels as gRPC
        metadata, so the runtime's spans join the client's trace.
        """
        metadata = (("traceparent", traceparent),) if traceparent else None
        return self._stub.Converse(wait_for_ready=True, metadata=metadata)

    async def health(self) -> runtime_pb2.HealthResponse:
        """The runtime's own view of its health; raises ``RuntimeUnavailable``.

        Takes at most ``health_timeout`` seconds; safe to call concurrently.
        """
        try:
            return await self._stub.Health(
                runtime_pb2.HealthRequest(), timeout=self.health_timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise RuntimeUnavailable(f"{exc.code().name}: {exc.details()}") from None

    async def describe(self) -> runtime_pb2.Description:
        """The agent's name and the prompt rollout for new sessions; raises ``RuntimeUnavailable``.

        Takes at most ``open_timeout`` seconds; safe to call concurrently.
        """
        try:
            return await self._stub.Describe(
                runtime_pb2.DescribeRequest(), timeout=self.open_timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise RuntimeUnavailable(f"{exc.code().name}: {exc.details()}") from None

    async def close(self) -> None:
        await self.channel.close()
