"""Turns over the runtime's Converse stream, for the facade's request-shaped protocols.

``/ws`` keeps one Converse stream for the life of a WebSocket
(``relaying``). The OpenAI-compatible endpoint, the MCP server and A2A are
request-shaped instead: a request authenticates, opens (or resumes) a
session, runs one turn and returns. This module is that one path, so the
three protocols differ only in their wire formats and none of them repeats
the rules ``/ws`` enforces:

- the same authenticator (``Authorization: Bearer`` with an API key or a JWT);
- the same session metadata (the principal a session belongs to), so a
  session started over one protocol is resumed over any other by the same
  principal, and by nobody else;
- the same limits: ``maxMessageBytes`` per message, ``messagesPerSecond`` and
  ``messageBurst`` per client connection, ``maxConnections`` concurrent
  conversations, the turn timeout (the turn is cancelled, as on ``/ws``);
- the same metrics (turns, tokens, cost, tool calls, errors, time to first
  chunk; a conversation counts in ``active_connections`` while it is open) and
  the client's ``traceparent`` passed to the runtime.

A turn is a sequence of events ending with ``Done`` or ``Failed``; the
runtime's ``error`` events always end it. None of these protocols can answer
an approval request, so a tool that requires approval is denied at once,
with the reason given to the model (a WebSocket client can approve it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia.config import FacadeConfig
from omnia.facade import auth
from omnia.facade.metrics import Metrics
from omnia.facade.runtime_client import UNAVAILABLE_CODES, RuntimeClient, client_traceparent, session_metadata
from omnia.protocol import frames, limits
from omnia.protocol.errors import RETRYABLE, ErrorCode
from omnia.protocol.limits import Shares, TokenBucket

logger = logging.getLogger(__name__)

APPROVAL_REFUSED = "this client's protocol cannot approve tool calls; use the WebSocket protocol"
_KNOWN_CODES = frozenset(code.value for code in ErrorCode)
_WRITE_ERRORS = (grpc.RpcError, asyncio.InvalidStateError)


# --- what a turn yields -------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model made; ``awaits_result`` when the client must run it."""

    id: str
    name: str
    arguments_json: str
    awaits_result: bool

    @property
    def arguments(self) -> Any:
        """The arguments as JSON, or their raw text if the model produced invalid JSON."""
        return frames.parse_arguments(self.arguments_json)


@dataclass(frozen=True)
class ToolResult:
    id: str
    content: str
    is_error: bool


@dataclass(frozen=True)
class Done:
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    turn_index: int
    message_id: str


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    retryable: bool


Event = Chunk | ToolCall | ToolResult | Done | Failed


class Refused(Exception):
    """A request refused before (or instead of) a turn; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE if retryable is None else retryable


# --- the shared entry point ---------------------------------------------------


class Turns:
    """Authentication, limits and conversations for every request-shaped protocol.

    One instance per facade. ``draining`` tells whether the facade is shutting
    down (then new conversations are refused with ``DRAINING``).
    """

    def __init__(
        self,
        config: FacadeConfig,
        *,
        runtime: RuntimeClient,
        metrics: Metrics,
        authenticator: auth.Authenticator,
        draining: Callable[[], bool],
        shares: Shares | None = None,
    ) -> None:
        self.config = config
        # Connections per principal: the WebSocket relay's, so that one bound covers both.
        self.shares = shares if shares is not None else Shares(config.max_connections_per_principal)
        self.runtime = runtime
        self.metrics = metrics
        self.authenticator = authenticator
        self.draining = draining
        self.open_conversations = 0
        # One bucket per client connection, like /ws; least recently used
        # first, so the table stays bounded whatever the clients do.
        self._buckets: collections.OrderedDict[tuple, TokenBucket] = collections.OrderedDict()

    async def authenticate(self, headers: Mapping[str, str]) -> auth.Principal:
        """The caller, from ``Authorization: Bearer``; raises ``Refused`` (UNAUTHORIZED)."""
        try:
            return await self.authenticator.authenticate(headers=headers, query={})
        except auth.Unauthorized as exc:
            self.refuse(ErrorCode.UNAUTHORIZED, str(exc))

    def admit(self, client: tuple[str, int] | None) -> None:
        """Count one message of the client connection ``client``; ``Refused`` (RATE_LIMITED) beyond the rate."""
        config = self.config
        now = time.monotonic()
        key = tuple(client) if client else ("unknown", 0)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(rate=config.messages_per_second, burst=config.message_burst, now=now)
            self._buckets[key] = bucket
            if len(self._buckets) > max(config.max_connections, 1) * 2:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if not bucket.take(now):
            self.metrics.received_by_type["refused"].inc()
            self.refuse(
                ErrorCode.RATE_LIMITED,
                f"more than {config.messages_per_second:g} messages per second; "
                f"retry in {bucket.retry_after(now):.2f}s",
            )

    def check_content(self, content: str) -> None:
        """``Refused`` for content above ``maxMessageBytes`` (MESSAGE_TOO_LARGE) or not text.

        Not text: a lone surrogate, which a protocol whose library decodes
        the JSON itself (MCP) lets through; it fails to encode on the way to
        the runtime.
        """
        if limits.exceeds(content, self.config.max_message_bytes):
            self.metrics.received_by_type["refused"].inc()
            self.refuse(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"the message exceeds the limit of {self.config.max_message_bytes} bytes",
            )
        if not frames.is_text(content):
            self.metrics.received_by_type["refused"].inc()
            self.refuse(ErrorCode.INVALID_MESSAGE, f"the message is not valid: {frames.LONE_SURROGATE}")

    def refuse(self, code: str, message: str) -> None:
        """Count an error answered to a client and raise it as ``Refused``."""
        self.count_error(code)
        raise Refused(code, message)

    def count_error(self, code: str) -> None:
        self.metrics.error_sent(code if code in _KNOWN_CODES else "OTHER")

    async def open(
        self,
        *,
        principal: auth.Principal,
        headers: Mapping[str, str],
        session_id: str = "",
    ) -> Conversation:
        """Open a new session (``session_id`` empty) or resume one; raises ``Refused``.

        The caller must ``close`` the conversation (or use it as an async
        context manager). Opening waits at most the runtime client's
        ``open_timeout``.
        """
        if self.draining():
            self.refuse(ErrorCode.DRAINING, "this replica is shutting down; retry")
        if len(session_id) > frames.MAX_ID_LENGTH:
            self.refuse(ErrorCode.INVALID_MESSAGE, "the session id is too long")
        if self.open_conversations >= self.config.max_connections:
            self.metrics.connection_result("rejected_capacity")
            self.refuse(ErrorCode.CAPACITY_EXCEEDED, "this replica is at its connection limit; retry shortly")
        holder = principal if principal.identified else None
        if holder is not None and not self.shares.take(holder):
            self.metrics.connection_result("rejected_principal")
            self.refuse(ErrorCode.CAPACITY_EXCEEDED, auth.too_many_connections(self.shares.limit))
        traceparent = client_traceparent(headers)
        call = self.runtime.converse(traceparent=traceparent or None)
        conversation = Conversation(self, call, holder=holder)
        self.open_conversations += 1
        self.metrics.connection_opened()
        try:
            await conversation._open(
                pb.Open(
                    session_id=session_id,
                    metadata=session_metadata(principal, headers),
                    traceparent=traceparent,
                )
            )
        except BaseException:
            await conversation.close()
            raise
        return conversation


class Conversation:
    """One Converse stream: a session, and the turns run on it one at a time.

    Not safe for concurrent use: one task sends, reads events and closes.
    ``events`` may be left early (a protocol that returns a client-side tool
    call to its client) and resumed later with another call to ``events``.
    """

    def __init__(
        self, turns: Turns, call: grpc.aio.StreamStreamCall, *, holder: auth.Principal | None = None
    ) -> None:
        self._turns = turns
        # The principal whose share of connections this holds, if counted.
        self._holder = holder
        self._metrics = turns.metrics
        self._call = call
        self.session_id = ""
        self.agent = ""
        self.resumed = False
        self.closed = False
        self._turn_started: float | None = None
        self._first_chunk_seen = False
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_results: set[str] = set()
        self._released = False

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def in_turn(self) -> bool:
        return self._turn_started is not None

    @property
    def awaiting_results(self) -> frozenset[str]:
        """Ids of client-side tool calls the turn waits for."""
        return frozenset(self._awaiting_results)

    async def _open(self, request: pb.Open) -> None:
        turns = self._turns
        try:
            async with asyncio.timeout(turns.runtime.open_timeout):
                await self._call.write(pb.ClientEvent(open=request))
                event = await self._call.read()
        except (TimeoutError, *_WRITE_ERRORS) as exc:
            self._metrics.connection_result("open_failed")
            logger.warning("runtime unavailable: %s", exc)
            turns.refuse(ErrorCode.RUNTIME_UNAVAILABLE, "the agent runtime is unavailable; retry")
        kind = event.WhichOneof("event") if event is not grpc.aio.EOF else None
        if kind == "opened":
            self.session_id = event.opened.session_id
            self.agent = event.opened.agent
            self.resumed = event.opened.resumed
            self._metrics.connection_result("accepted")
            return
        self._metrics.connection_result("open_failed")
        if kind == "error":
            turns.count_error(event.error.code)
            raise Refused(event.error.code, event.error.message, retryable=event.error.retryable)
        turns.refuse(ErrorCode.RUNTIME_UNAVAILABLE, "the agent runtime ended the conversation on open")

    async def send(self, content: str, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Start a turn with a user message; its events come from ``events``.

        Raises ``Refused`` for an empty message (as ``/ws`` does), one above
        ``maxMessageBytes``, or while a turn is running.
        """
        if self.in_turn:
            self._turns.refuse(ErrorCode.TURN_IN_PROGRESS, "a turn is in progress on this session")
        if not content:
            self._turns.refuse(ErrorCode.INVALID_MESSAGE, "the message is empty")
        self._turns.check_content(content)
        self._metrics.received_by_type["message"].inc()
        self._turn_started = time.monotonic()
        self._first_chunk_seen = False
        self._timer = asyncio.get_running_loop().call_later(
            self._turns.config.turn_timeout_seconds, self._on_timeout
        )
        metadata_json = frames.encode_metadata(dict(metadata)) if metadata else ""
        await self._write(pb.ClientEvent(message=pb.UserMessage(content=content, metadata_json=metadata_json)))

    async def tool_result(self, call_id: str, content: str, *, is_error: bool = False) -> None:
        """Answer a client-side tool call; raises ``Refused`` for a call that waits for nothing."""
        if call_id not in self._awaiting_results:
            self._turns.refuse(ErrorCode.INVALID_MESSAGE, f"no client tool call {call_id!r} is waiting for a result")
        self._turns.check_content(content)
        self._awaiting_results.discard(call_id)
        self._metrics.received_by_type["tool_result"].inc()
        result = pb.ToolResult(call_id=call_id, content=content, is_error=is_error)
        await self._write(pb.ClientEvent(tool_result=result))

    async def cancel(self) -> None:
        """Ask the runtime to stop the turn; ``events`` then ends with reason ``cancelled``."""
        if self.in_turn:
            self._metrics.received_by_type["cancel"].inc()
            await self._write(pb.ClientEvent(cancel=pb.Cancel()))

    async def events(self) -> AsyncIterator[Event]:
        """The current turn's events, up to its ``Done`` or ``Failed``.

        A lost runtime ends the turn with ``Failed`` (RUNTIME_UNAVAILABLE).
        Leaving the iteration early keeps the turn running; the next call to
        ``events`` continues where this one stopped.
        """
        while self.in_turn:
            event = await self._next()
            if event is not None:
                yield event

    async def _next(self) -> Event | None:
        try:
            received = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            return self._runtime_lost(exc)
        if received is grpc.aio.EOF:
            return self._runtime_lost(None)
        kind = received.WhichOneof("event")
        if kind == "chunk":
            if not self._first_chunk_seen and self._turn_started is not None:
                self._first_chunk_seen = True
                self._metrics.first_chunk_seconds.observe(time.monotonic() - self._turn_started)
            return Chunk(received.chunk.content)
        if kind == "tool_call":
            return await self._on_tool_call(received.tool_call)
        if kind == "tool_result":
            result = received.tool_result
            return ToolResult(result.call_id, result.content, result.is_error)
        if kind == "done":
            return self._on_done(received.done)
        if kind == "error":
            error = received.error
            self._turns.count_error(error.code)
            self._end_turn(outcome="error")
            return Failed(error.code, error.message, error.retryable)
        return None

    async def _on_tool_call(self, call: pb.ToolCall) -> ToolCall:
        self._metrics.tool_called(call.name)
        if call.require_approval:
            await self._write(
                pb.ClientEvent(approval=pb.Approval(call_id=call.id, approved=False, reason=APPROVAL_REFUSED))
            )
        awaits_result = call.client_side and not call.require_approval
        if awaits_result:
            self._awaiting_results.add(call.id)
        return ToolCall(call.id, call.name, call.arguments_json, awaits_result)

    def _on_done(self, done: pb.Done) -> Done:
        usage = done.usage
        self._end_turn(
            outcome="cancelled" if done.finish_reason == "cancelled" else "done",
            provider=done.provider,
            model=done.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=usage.cost_usd,
        )
        self._metrics.budget_standings(done.budgets)
        return Done(
            finish_reason=done.finish_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            turn_index=done.turn_index,
            message_id=done.message_id,
        )

    def _runtime_lost(self, exc: grpc.aio.AioRpcError | None) -> Failed:
        self._end_turn(outcome="aborted")
        status = exc.code() if exc is not None else None
        if status is None or status in UNAVAILABLE_CODES:
            logger.warning("runtime unavailable mid-turn: %s", exc or "stream ended")
            code, message, retryable = (
                ErrorCode.RUNTIME_UNAVAILABLE, "the agent runtime is unavailable; retry", True,
            )
        else:
            logger.error("runtime failed the conversation: %s", exc)
            code, message, retryable = ErrorCode.INTERNAL, f"the agent runtime failed: {status.name}", False
        self._turns.count_error(code)
        self.closed = True
        return Failed(code, message, retryable)

    def _on_timeout(self) -> None:
        self._timer = None
        if self.in_turn and not self.closed:
            logger.info("turn exceeded %ss; cancelling", self._turns.config.turn_timeout_seconds)
            asyncio.create_task(self._write(pb.ClientEvent(cancel=pb.Cancel())))

    async def _write(self, event: pb.ClientEvent) -> None:
        """Forward one event; a broken stream shows as ``Failed`` on the next read."""
        try:
            await self._call.write(event)
        except _WRITE_ERRORS:
            pass

    def _end_turn(
        self,
        *,
        outcome: str,
        provider: str = "",
        model: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        if self._turn_started is None:
            return
        self._metrics.turn_finished(
            outcome=outcome,
            seconds=time.monotonic() - self._turn_started,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        self._turn_started = None
        self._awaiting_results.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def close(self) -> None:
        """End the stream (a running turn is cancelled by the runtime). Idempotent."""
        if self._released:
            return
        self._released = True
        self._end_turn(outcome="aborted")
        self.closed = True
        self._call.cancel()
        self._turns.open_conversations -= 1
        if self._holder is not None:
            self._turns.shares.give_back(self._holder)
        self._metrics.connection_closed()
