"""One conversation stream between a facade connection and the agent.

Transport-free: it takes ``ClientEvent`` messages, drives the ``Agent`` and
queues ``ServerEvent`` messages, so the gRPC servicer is only a pump and the
state machine is tested without a channel. States: waiting for ``open`` →
idle ⇄ in a turn → closed. One turn at a time per conversation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

import structlog
from opentelemetry.context import Context

from omnia import telemetry
from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia.agent import (
    Agent,
    ApprovalDecision,
    Chunk,
    OpenError,
    ToolCallStarted,
    ToolFinished,
    ToolOutcome,
    TurnDone,
    TurnEvent,
    TurnFailed,
    UserInput,
)
from omnia.budgets import Standing
from omnia.protocol.frames import MAX_ID_LENGTH

log = logging.getLogger(__name__)

_CLOSE = None
_EMPTY = object()
MAX_COALESCED_CHARS = 8192


def error_event(code: str, message: str, *, retryable: bool = False) -> pb.ServerEvent:
    return pb.ServerEvent(error=pb.Error(code=code, message=message, retryable=retryable))


def to_server_event(event: TurnEvent) -> pb.ServerEvent:
    match event:
        case Chunk(text=text, message_id=message_id):
            return pb.ServerEvent(chunk=pb.Chunk(content=text, message_id=message_id))
        case ToolCallStarted(call=call, client_side=client_side, require_approval=approval):
            return pb.ServerEvent(
                tool_call=pb.ToolCall(
                    id=call.id,
                    name=call.name,
                    arguments_json=json.dumps(call.arguments),
                    client_side=client_side,
                    require_approval=approval,
                )
            )
        case ToolFinished(call_id=call_id, content=content, is_error=is_error):
            return pb.ServerEvent(
                tool_result=pb.ToolResult(call_id=call_id, content=content, is_error=is_error)
            )
        case TurnDone():
            return pb.ServerEvent(
                done=pb.Done(
                    finish_reason=event.finish_reason,
                    usage=pb.Usage(
                        input_tokens=event.usage.input_tokens,
                        output_tokens=event.usage.output_tokens,
                        cost_usd=event.cost_usd,
                    ),
                    turn_index=event.turn_index,
                    message_id=event.message_id,
                    provider=event.provider,
                    model=event.model,
                    budgets=[
                        _standing(standing) for standing in event.budgets
                    ],
                )
            )
        case TurnFailed(code=code, message=message, retryable=retryable):
            return error_event(code, message, retryable=retryable)
    raise TypeError(f"unknown turn event {event!r}")


def _standing(standing: Standing) -> pb.BudgetStanding:
    limit = standing.limit
    return pb.BudgetStanding(
        scope=standing.scope,
        period=standing.kind,
        tokens=standing.spent.tokens,
        cost_usd=standing.spent.cost_usd,
        limit_tokens=limit.tokens if limit else None,
        limit_cost_usd=limit.cost_usd if limit else None,
    )


class _Outbox:
    """Events waiting for the client, read by one reader (``next_event``).

    Text chunks wait as the agent emitted them (``Chunk``) and everything
    else as the ``ServerEvent`` it becomes; ``None`` ends the conversation.
    Chunks become protobuf only when read, after merging, so a backlog of
    chunks costs one message instead of one each. A deque and one future
    made only while the reader waits: ``asyncio.Queue``'s bookkeeping for
    many readers and a bound, which this does not have, cost more per chunk
    than the rest of the runtime's work for it.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Chunk | pb.ServerEvent | None] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Chunk | pb.ServerEvent | None) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take(self) -> Chunk | pb.ServerEvent | None | object:
        """The next item, or ``_EMPTY`` when none waits."""
        return self._items.popleft() if self._items else _EMPTY

    async def get(self) -> Chunk | pb.ServerEvent | None:
        """The next item, waiting for one; cancelling the wait loses nothing."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class _Waiters:
    """Futures for answers the client owes the current turn, by tool call id."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future] = {}

    async def wait(self, call_id: str):
        future = self._futures.setdefault(call_id, asyncio.get_running_loop().create_future())
        try:
            return await future
        finally:
            self._futures.pop(call_id, None)

    def resolve(self, call_id: str, value) -> bool:
        future = self._futures.get(call_id)
        if future is None or future.done():
            return False
        future.set_result(value)
        return True


class _Channel:
    def __init__(self) -> None:
        self.results = _Waiters()
        self.approvals = _Waiters()

    async def tool_result(self, call_id: str) -> ToolOutcome:
        return await self.results.wait(call_id)

    async def approval(self, call_id: str) -> ApprovalDecision:
        return await self.approvals.wait(call_id)


class Conversation:
    """Feed it client events with ``handle``; read server events from ``next_event``.

    ``handle`` never blocks on a turn: turns run as tasks. ``next_event``
    returns ``None`` once the conversation is over. ``aclose`` asks a running
    turn to stop (it commits what it produced, like a ``cancel``) and waits
    for it up to ``grace`` seconds before cancelling it outright.
    """

    def __init__(self, agent: Agent, *, trace_context: Context | None = None) -> None:
        self._agent = agent
        self._trace_context = trace_context
        self._outbox = _Outbox()
        self._lookahead: Chunk | pb.ServerEvent | None | object = _EMPTY
        self._session_id: str | None = None
        self._channel = _Channel()
        self._turn: asyncio.Task | None = None
        self._cancelled = asyncio.Event()
        self._closed = False

    @property
    def session_id(self) -> str | None:
        return self._session_id

    async def next_event(self) -> pb.ServerEvent | None:
        """The next event for the client; ``None`` once the conversation is over.

        Text chunks of one message that are already waiting are merged into
        one (up to ``MAX_COALESCED_CHARS``): a reader that keeps up sees every
        chunk as the model produced it, while a backlogged one sends fewer,
        larger messages instead of falling further behind.
        """
        if self._lookahead is not _EMPTY:
            event, self._lookahead = self._lookahead, _EMPTY
        else:
            event = await self._outbox.get()
        if not isinstance(event, Chunk):
            return event  # type: ignore[return-value]
        parts = [event.text]
        size = len(event.text)
        while size < MAX_COALESCED_CHARS:
            waiting = self._outbox.take()
            if waiting is _EMPTY:
                break
            if not isinstance(waiting, Chunk) or waiting.message_id != event.message_id:
                self._lookahead = waiting
                break
            parts.append(waiting.text)
            size += len(waiting.text)
        content = parts[0] if len(parts) == 1 else "".join(parts)
        return pb.ServerEvent(chunk=pb.Chunk(content=content, message_id=event.message_id))

    async def handle(self, event: pb.ClientEvent) -> None:
        kind = event.WhichOneof("event")
        if self._session_id is None:
            if kind != "open":
                self._fail("INVALID_MESSAGE", "the first event of a conversation must be open")
                return
            await self._open(event.open)
            return
        match kind:
            case "message":
                self._start_turn(event.message)
            case "tool_result":
                result = event.tool_result
                outcome = ToolOutcome(result.content, is_error=result.is_error)
                if not self._channel.results.resolve(result.call_id, outcome):
                    self._send(error_event("INVALID_MESSAGE", f"no tool call {result.call_id!r} is waiting for a result"))
            case "approval":
                approval = event.approval
                decision = ApprovalDecision(approval.approved, approval.reason)
                if not self._channel.approvals.resolve(approval.call_id, decision):
                    self._send(error_event("INVALID_MESSAGE", f"no tool call {approval.call_id!r} is waiting for approval"))
            case "cancel":
                self._cancelled.set()
            case "open":
                self._send(error_event("INVALID_MESSAGE", "the conversation is already open"))
            case _:
                self._send(error_event("INVALID_MESSAGE", "empty client event"))

    async def aclose(self, *, grace: float = 5.0) -> None:
        self._closed = True
        turn = self._turn
        if turn is not None and not turn.done():
            self._cancelled.set()
            try:
                await asyncio.wait_for(asyncio.shield(turn), grace)
            except (TimeoutError, asyncio.CancelledError):
                turn.cancel()
                await asyncio.gather(turn, return_exceptions=True)
        self._outbox.put(_CLOSE)

    async def _open(self, request: pb.Open) -> None:
        if self._trace_context is None:
            self._trace_context = telemetry.context_from_traceparent(request.traceparent)
        metadata = dict(request.metadata)
        try:
            if request.create:
                if not 0 < len(request.session_id) <= MAX_ID_LENGTH:
                    self._fail(
                        "INVALID_MESSAGE",
                        f"a new session needs an id of 1 to {MAX_ID_LENGTH} characters",
                    )
                    return
                session = await self._agent.create_session(
                    request.session_id, prompt_version=request.prompt_version, metadata=metadata
                )
                resumed = False
            else:
                session, resumed = await self._agent.open_session(
                    session_id=request.session_id or None, metadata=metadata
                )
        except OpenError as exc:
            self._fail(exc.code, exc.message, retryable=exc.retryable)
            return
        self._session_id = session.id
        self._send(
            pb.ServerEvent(
                opened=pb.Opened(
                    session_id=session.id,
                    agent=session.agent,
                    prompt_version=session.prompt_version,
                    resumed=resumed,
                    turns=len(session.turns),
                )
            )
        )

    def _start_turn(self, message: pb.UserMessage) -> None:
        if self._turn is not None and not self._turn.done():
            self._send(
                error_event(
                    "TURN_IN_PROGRESS",
                    "a turn is already running; wait for done or send cancel",
                    retryable=True,
                )
            )
            return
        try:
            metadata = json.loads(message.metadata_json) if message.metadata_json else {}
        except (json.JSONDecodeError, RecursionError):
            metadata = None
        if not isinstance(metadata, dict):
            self._send(error_event("INVALID_MESSAGE", "message metadata must be a JSON object"))
            return
        self._cancelled = asyncio.Event()
        user = UserInput(content=message.content, id=message.id, metadata=metadata)
        self._turn = asyncio.create_task(self._run_turn(user, self._cancelled))

    async def _run_turn(self, user: UserInput, cancelled: asyncio.Event) -> None:
        assert self._session_id is not None
        structlog.contextvars.bind_contextvars(session_id=self._session_id)
        try:
            await self._agent.run_turn(
                self._session_id,
                user,
                channel=self._channel,
                emit=self._emit,
                cancelled=cancelled,
                trace_context=self._trace_context,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop reports its own failures; this is a bug
            log.exception("turn crashed", extra={"session_id": self._session_id})
            self._send(error_event("INTERNAL", f"internal error: {type(exc).__name__}"))

    async def _emit(self, event: TurnEvent) -> None:
        # A chunk is turned into protobuf when read, merged with those behind it.
        self._outbox.put(event if isinstance(event, Chunk) else to_server_event(event))

    def _send(self, event: pb.ServerEvent) -> None:
        self._outbox.put(event)

    def _fail(self, code: str, message: str, *, retryable: bool = False) -> None:
        self._send(error_event(code, message, retryable=retryable))
        self._outbox.put(_CLOSE)
