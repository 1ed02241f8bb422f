"""Relaying WebSocket conversations to the runtime's Converse streams.

This is the hot path: every connection of the pod lives here, idle or not.
So a connection costs only what it uses. A new session is announced by the
facade alone: it mints the id, picks the prompt version from the runtime's
``Describe`` (cached for a second, shared by all connections) and sends
``connected``; until the client's first message the connection is one ASGI
task and a few slots, with no gRPC stream, nothing in the runtime and
nothing in the session store. The first message opens the ``Converse``
stream with ``Open{create}`` (the runtime stores the session under the
announced id) and starts a second task that reads the runtime. A resume
opens the stream at once, since the runtime must check the session first.
Client frames are parsed once (``omnia.protocol.frames``); runtime events are
turned into JSON text once and never decoded again.

Backpressure is end to end: the server stops reading a client's socket until
the relay has taken its previous frame, and a client that does not read its
replies blocks the sends for that connection only.

Turn bookkeeping (is a turn running, which tool calls wait for the client)
lives here because the facade enforces the protocol's ordering rules
(``TURN_IN_PROGRESS``, answers only to calls that asked for one) and times
turns for the metrics. A turn starts when a ``message`` is forwarded and ends
with the runtime's ``done`` or ``error``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope, Send

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia.config import PROTOCOL_VERSION, FacadeConfig
from omnia.facade import auth
from omnia.facade.metrics import Metrics
from omnia.facade.runtime_client import (
    UNAVAILABLE_CODES,
    RuntimeClient,
    RuntimeUnavailable,
    client_traceparent,
    session_metadata,
)
from omnia.protocol import frames, sessions
from omnia.protocol.errors import CloseCode, ErrorCode, ProtocolError
from omnia.protocol.limits import Shares, TokenBucket

logger = logging.getLogger(__name__)

_KNOWN_CODES = frozenset(code.value for code in ErrorCode)
_WRITE_ERRORS = (grpc.RpcError, asyncio.InvalidStateError)

# What a connection waits for when no tool call is open: one shared empty
# set, so an idle connection holds no sets of its own. Tool calls are rare
# next to connections; each change makes a new frozenset.
_NONE_AWAITED: frozenset[str] = frozenset()

# The query of most connections (new sessions): parsed once, shared (immutable).
_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()
_NO_QUERY = QueryParams()

# How long the runtime's ``Describe`` answer is used before it is asked again.
# A failed refresh drops it, so new connections notice a runtime that is gone.
_DESCRIPTION_TTL_SECONDS = 1.0
# Up to this age an older answer is still served while the refresh runs (busy
# facades never wait for one); an older one is not: after a quiet spell the
# first new session waits for a fresh answer rather than get a prompt rollout
# of whenever the last session started.
_DESCRIPTION_STALE_SECONDS = 2.0

# How long ``drain`` waits, after closing the last connections, for their
# tasks to notice; closing is immediate, this only bounds a stuck peer.
_CLOSE_GRACE_SECONDS = 2.0


class Relay:
    """Every live connection of one facade, and how to stop them gracefully.

    ``serve`` handles one WebSocket for its whole life. ``drain`` is the
    SIGTERM path: refuse new connections, close idle ones, let running turns
    finish (each connection closes itself after its ``done``), and close the
    rest when the timeout expires.
    """

    def __init__(
        self,
        config: FacadeConfig,
        *,
        runtime: RuntimeClient,
        metrics: Metrics,
        authenticator: auth.Authenticator,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.metrics = metrics
        self.authenticator = authenticator
        self.draining = False
        self.connections: set[_Connection] = set()
        # Shared with the open protocols' conversations (``Turns``): one bound per principal.
        self.shares = Shares(config.max_connections_per_principal)
        self._empty = asyncio.Event()
        self._empty.set()
        self._description: pb.Description | None = None
        self._described_at = 0.0
        self._describing: asyncio.Task[None] | None = None

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one WebSocket (an ASGI ``websocket`` scope) until either side closes it.

        Speaks raw ASGI rather than through a framework's WebSocket wrapper:
        every frame of every connection passes here, and each wrapper layer
        costs a call per frame and memory per connection.

        Never raises for anything a client or the runtime does: every failure
        becomes an ``error`` frame and a close code.
        """
        await _Connection(receive, send, relay=self).run(scope)

    async def description(self) -> pb.Description | None:
        """The runtime's ``Describe`` answer, or None when it cannot be had.

        Served from a cache: a fresh answer (under a second old) at once; one
        under two seconds old at once too, while one refresh for all callers
        runs in the background. With no answer, or only an older one, the
        caller waits for the refresh (up to the runtime's ``open_timeout``):
        the rollout a new session is placed by is never more than two seconds
        old. A refresh that fails empties the cache, so while the runtime is
        gone new sessions are refused instead of announced.
        """
        description = self._description
        age = time.monotonic() - self._described_at
        if description is not None and age < _DESCRIPTION_TTL_SECONDS:
            return description
        if self._describing is None or self._describing.done():
            self._describing = asyncio.create_task(self._describe())
        if description is not None and age < _DESCRIPTION_STALE_SECONDS:
            return description
        await asyncio.shield(self._describing)
        return self._description

    async def _describe(self) -> None:
        try:
            self._description = await self.runtime.describe()
            self._described_at = time.monotonic()
        except RuntimeUnavailable as exc:
            logger.warning("runtime unavailable: %s", exc)
            self._description = None

    async def drain(self, *, timeout: float) -> None:
        """Close every connection, giving running turns up to ``timeout`` seconds.

        Idempotent; returns when all connections are gone (or, for peers that
        ignore the close, shortly after). Connections are closed concurrently,
        so a client that stopped reading (whose close frame cannot be
        written) delays nobody else.
        """
        self.draining = True
        closing = [
            asyncio.create_task(connection.shutdown())
            for connection in list(self.connections)
            if not connection.in_turn
        ]
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            closing += [
                asyncio.create_task(connection.shutdown()) for connection in list(self.connections)
            ]
        try:
            async with asyncio.timeout(_CLOSE_GRACE_SECONDS):
                await self._empty.wait()
        except TimeoutError:
            logger.warning("%d connections did not close after drain", len(self.connections))
        for task in closing:
            task.cancel()

    def _admit(self, connection: _Connection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(connection)
        self._empty.clear()
        self.metrics.connection_opened()
        return True

    def _release(self, connection: _Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            self.metrics.connection_closed()
            if not self.connections:
                self._empty.set()


class _Connection:
    __slots__ = (
        "receive",
        "send_asgi",
        "relay",
        "metrics",
        "call",
        "reader",
        "creating",
        "closed",
        "turn_started",
        "first_chunk_seen",
        "awaiting_results",
        "awaiting_approvals",
        "turn_timer",
        "timeout_task",
        "principal",
    )

    def __init__(self, receive: Receive, send: Send, *, relay: Relay) -> None:
        self.receive = receive
        self.send_asgi = send
        self.relay = relay
        self.metrics = relay.metrics
        # The Converse stream and the task reading it: None until the stream is opened.
        self.call: grpc.aio.StreamStreamCall | None = None
        self.reader: asyncio.Task[None] | None = None
        # A new session's Open, kept until the first message sends it.
        self.creating: pb.Open | None = None
        self.closed = False
        self.turn_started: float | None = None
        self.first_chunk_seen = False
        self.awaiting_results: frozenset[str] = _NONE_AWAITED
        self.awaiting_approvals: frozenset[str] = _NONE_AWAITED
        self.turn_timer: asyncio.TimerHandle | None = None
        self.timeout_task: asyncio.Task[None] | None = None
        # Set once counted in the relay's ``shares``, to give its share back.
        self.principal: auth.Principal | None = None

    @property
    def in_turn(self) -> bool:
        return self.turn_started is not None

    # -- lifecycle -------------------------------------------------------------

    async def run(self, scope: Scope) -> None:
        relay = self.relay
        if (await self.receive())["type"] != "websocket.connect":
            return
        await self.send_asgi({"type": "websocket.accept"})
        if relay.draining:
            self.metrics.connection_result("rejected_draining")
            await self.shutdown()
            return
        if not relay._admit(self):
            self.metrics.connection_result("rejected_capacity")
            await self.fail(
                ErrorCode.CAPACITY_EXCEEDED,
                "this replica is at its connection limit; retry shortly",
            )
            await self.close(CloseCode.TRY_AGAIN_LATER)
            return
        try:
            opened = await self._open(scope)
            # What the connection needs of its request is in its Open now; the
            # headers would otherwise stay in the scope for the connection's life.
            scope["headers"] = _NO_HEADERS
            if not opened:
                return
            self.metrics.connection_result("accepted")
            await self._read_client()
        except Exception:
            logger.exception("connection failed")
            await self.fail(ErrorCode.INTERNAL, "internal error in the facade")
            await self.close(CloseCode.INTERNAL_ERROR)
        finally:
            if self.reader is not None:
                self.reader.cancel()
            if self.call is not None:
                self.call.cancel()
            if self.in_turn:
                self._end_turn(outcome="aborted")
            if self.principal is not None:
                relay.shares.give_back(self.principal)
            relay._release(self)
            await self.close(CloseCode.NORMAL)

    async def _open(self, scope: Scope) -> bool:
        """Authenticate and send ``connected``; False if refused (and closed).

        A new session is announced from the runtime's description alone; a
        resume opens the Converse stream first, so the runtime checks the
        session (and its owner) before the client hears anything.
        """
        headers = Headers(scope=scope)
        query_string = scope["query_string"]
        query = QueryParams(query_string) if query_string else _NO_QUERY
        try:
            principal = await self.relay.authenticator.authenticate(headers=headers, query=query)
        except auth.Unauthorized as exc:
            self.metrics.connection_result("rejected_auth")
            await self.fail(ErrorCode.UNAUTHORIZED, str(exc))
            await self.close(CloseCode.UNAUTHORIZED)
            return False
        if principal.identified:
            if not self.relay.shares.take(principal):
                self.metrics.connection_result("rejected_principal")
                await self.fail(
                    ErrorCode.CAPACITY_EXCEEDED, auth.too_many_connections(self.relay.shares.limit)
                )
                await self.close(CloseCode.TRY_AGAIN_LATER)
                return False
            self.principal = principal
        session_id = query.get("session_id", "")
        if len(session_id) > frames.MAX_ID_LENGTH:
            self.metrics.connection_result("open_failed")
            await self.fail(ErrorCode.INVALID_MESSAGE, "session_id is too long")
            await self.close(CloseCode.POLICY_VIOLATION)
            return False
        traceparent = client_traceparent(headers)
        request = pb.Open(
            session_id=session_id,
            metadata=session_metadata(principal, headers),
            traceparent=traceparent,
        )
        if session_id:
            return await self._resume(request)
        description = await self.relay.description()
        if description is None:
            self.metrics.connection_result("open_failed")
            await self.fail(
                ErrorCode.RUNTIME_UNAVAILABLE,
                "the agent runtime is unavailable; retry shortly",
                retryable=True,
            )
            await self.close(CloseCode.TRY_AGAIN_LATER)
            return False
        request.session_id = sessions.new_id()
        request.create = True
        request.prompt_version = sessions.prompt_version(
            request.session_id,
            stable=description.stable_version,
            canary=description.canary_version,
            canary_weight=description.canary_weight,
        )
        self.creating = request
        await self.send(
            frames.connected(
                session_id=request.session_id,
                agent=description.agent,
                protocol_version=PROTOCOL_VERSION,
                prompt_version=request.prompt_version,
                resumed=False,
                turns=0,
            )
        )
        return True

    async def _resume(self, request: pb.Open) -> bool:
        event = await self._open_stream(request)
        if event is None:
            self.metrics.connection_result("open_failed")
            return False
        if event.WhichOneof("event") == "opened":
            opened = event.opened
            await self.send(
                frames.connected(
                    session_id=opened.session_id,
                    agent=opened.agent,
                    protocol_version=PROTOCOL_VERSION,
                    prompt_version=opened.prompt_version,
                    resumed=opened.resumed,
                    turns=opened.turns,
                )
            )
            return True
        self.metrics.connection_result("open_failed")
        error = event.error
        await self.fail(error.code, error.message, retryable=error.retryable)
        if error.code == ErrorCode.SESSION_NOT_FOUND:
            await self.close(CloseCode.SESSION_NOT_FOUND)
        elif error.retryable:
            await self.close(CloseCode.TRY_AGAIN_LATER)
        else:
            await self.close(CloseCode.INTERNAL_ERROR)
        return False

    async def _open_stream(self, request: pb.Open) -> pb.ServerEvent | None:
        """Open the Converse stream with ``request``; the runtime's ``opened`` or ``error``.

        On ``opened`` the stream stays and a task starts relaying its events;
        on ``error`` it is dropped. None when the runtime cannot be reached
        within its ``open_timeout``: that has been reported and the
        connection closed.
        """
        self.call = call = self.relay.runtime.converse(traceparent=request.traceparent or None)
        try:
            async with asyncio.timeout(self.relay.runtime.open_timeout):
                await call.write(pb.ClientEvent(open=request))
                event = await call.read()
        except (TimeoutError, *_WRITE_ERRORS) as exc:
            await self._runtime_lost(exc)
            return None
        if event is not grpc.aio.EOF and event.WhichOneof("event") == "opened":
            self.reader = asyncio.create_task(self._read_runtime())
            return event
        call.cancel()
        self.call = None
        if event is grpc.aio.EOF or event.WhichOneof("event") != "error":
            return pb.ServerEvent(
                error=pb.Error(
                    code=ErrorCode.RUNTIME_UNAVAILABLE,
                    message="the agent runtime ended the conversation on open",
                    retryable=True,
                )
            )
        return event

    async def shutdown(self) -> None:
        """Close for a restart: a final DRAINING error, then close code 1012."""
        await self.fail(
            ErrorCode.DRAINING,
            "this replica is shutting down; reconnect to start a new session"
            if self.creating is not None
            else "this replica is shutting down; reconnect with session_id to resume",
        )
        await self.close(CloseCode.SERVICE_RESTART, "service restart")

    # -- sending ---------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text frame; a no-op once the connection is closed.

        Waits while the client's socket buffer is full. A connection that
        vanished is marked closed instead of raising, since its ASGI task
        learns of the disconnect on its next read anyway.
        """
        if self.closed:
            return
        try:
            await self.send_asgi({"type": "websocket.send", "text": text})
        except OSError:
            self.closed = True

    async def fail(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        frame_id: str | None = None,
    ) -> None:
        code = code or ErrorCode.INTERNAL
        self.metrics.error_sent(code if code in _KNOWN_CODES else "OTHER")
        await self.send(frames.error(code, message, retryable=retryable, frame_id=frame_id))

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.send_asgi({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):
            pass

    # -- client → runtime --------------------------------------------------------

    async def _read_client(self) -> None:
        config = self.relay.config
        max_bytes = config.max_message_bytes
        receive = self.receive
        clock = time.monotonic
        bucket = TokenBucket(
            rate=config.messages_per_second, burst=config.message_burst, now=clock()
        )
        received = self.metrics.received_by_type
        refused = received["refused"]
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            now = clock()
            if not bucket.take(now):
                refused.inc()
                await self.fail(
                    ErrorCode.RATE_LIMITED,
                    f"more than {config.messages_per_second:g} frames per second; "
                    f"retry in {bucket.retry_after(now):.2f}s",
                )
                continue
            text = message.get("text")
            if text is None:
                refused.inc()
                if len(message.get("bytes") or b"") > max_bytes:
                    await self.fail(
                        ErrorCode.MESSAGE_TOO_LARGE,
                        f"frame exceeds the limit of {max_bytes} bytes",
                    )
                else:
                    await self.fail(
                        ErrorCode.INVALID_MESSAGE,
                        "binary frames are not supported; send JSON text frames",
                    )
                continue
            try:
                frame = frames.parse_client_frame(text, max_bytes=max_bytes)
            except ProtocolError as exc:
                refused.inc()
                await self.fail(exc.code, exc.message, frame_id=exc.frame_id)
                continue
            match frame:
                case frames.UserMessage():
                    received["message"].inc()
                    await self._on_message(frame)
                case frames.ToolResult():
                    received["tool_result"].inc()
                    await self._on_tool_result(frame)
                case frames.Approval():
                    received["approval"].inc()
                    await self._on_approval(frame)
                case frames.Cancel():
                    received["cancel"].inc()
                    if self.in_turn:
                        await self._write(pb.ClientEvent(cancel=pb.Cancel()))
                case frames.Ping():
                    received["ping"].inc()
                    await self.send(frames.pong(frame.id))

    async def _on_message(self, frame: frames.UserMessage) -> None:
        if self.in_turn:
            await self.fail(
                ErrorCode.TURN_IN_PROGRESS,
                "a turn is in progress; wait for its done or send cancel",
                frame_id=frame.id,
            )
            return
        if self.relay.draining:
            await self.fail(
                ErrorCode.DRAINING, "this replica is shutting down", frame_id=frame.id
            )
            return
        self.turn_started = time.monotonic()
        self.first_chunk_seen = False
        self.turn_timer = asyncio.get_running_loop().call_later(
            self.relay.config.turn_timeout_seconds, self._on_turn_timeout
        )
        if self.creating is not None and not await self._create(frame):
            return
        metadata_json = frames.encode_metadata(frame.metadata) if frame.metadata else ""
        await self._write(
            pb.ClientEvent(
                message=pb.UserMessage(
                    id=frame.id or "", content=frame.content, metadata_json=metadata_json
                )
            )
        )

    async def _create(self, frame: frames.UserMessage) -> bool:
        """Open the stream of a new session, which stores it; False if the turn ended.

        A refusal (the store is down, say) ends this message's turn with the
        runtime's error and keeps the connection: nothing was stored, and the
        next message tries again under the same id.
        """
        assert self.creating is not None
        event = await self._open_stream(self.creating)
        if event is None:
            return False
        if event.WhichOneof("event") == "error":
            error = event.error
            self._end_turn(outcome="error")
            await self.fail(error.code, error.message, retryable=error.retryable, frame_id=frame.id)
            return False
        self.creating = None
        return not self.closed

    async def _on_tool_result(self, frame: frames.ToolResult) -> None:
        if frame.id not in self.awaiting_results:
            await self.fail(
                ErrorCode.INVALID_MESSAGE,
                f"no client tool call {frame.id!r} is waiting for a result",
                frame_id=frame.id,
            )
            return
        self.awaiting_results = self.awaiting_results - {frame.id}
        await self._write(
            pb.ClientEvent(
                tool_result=pb.ToolResult(
                    call_id=frame.id, content=frame.content, is_error=frame.is_error
                )
            )
        )

    async def _on_approval(self, frame: frames.Approval) -> None:
        if frame.id not in self.awaiting_approvals:
            await self.fail(
                ErrorCode.INVALID_MESSAGE,
                f"no tool call {frame.id!r} is waiting for an approval",
                frame_id=frame.id,
            )
            return
        self.awaiting_approvals = self.awaiting_approvals - {frame.id}
        if not frame.approved:
            # A denied client tool never runs, so it will not want a result.
            self.awaiting_results = self.awaiting_results - {frame.id}
        await self._write(
            pb.ClientEvent(
                approval=pb.Approval(
                    call_id=frame.id, approved=frame.approved, reason=frame.reason
                )
            )
        )

    def _on_turn_timeout(self) -> None:
        self.turn_timer = None
        if self.in_turn:
            logger.info("turn exceeded %ss; cancelling", self.relay.config.turn_timeout_seconds)
            self.timeout_task = asyncio.create_task(
                self._write(pb.ClientEvent(cancel=pb.Cancel()))
            )

    async def _write(self, event: pb.ClientEvent) -> None:
        """Forward one event; a broken stream is reported by the runtime reader, not here.

        A no-op without a stream: only a turn has one to cancel, and a new
        session's first turn may still be opening it.
        """
        if self.call is None:
            return
        try:
            await self.call.write(event)
        except _WRITE_ERRORS:
            pass

    # -- runtime → client --------------------------------------------------------

    async def _read_runtime(self) -> None:
        """Relay runtime events until the stream ends; cancelled when the client leaves."""
        assert self.call is not None
        read = self.call.read
        send = self.send
        try:
            while True:
                event = await read()
                if event is grpc.aio.EOF:
                    await self._runtime_ended()
                    return
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    chunk = event.chunk
                    if not self.first_chunk_seen and self.turn_started is not None:
                        self.first_chunk_seen = True
                        self.metrics.first_chunk_seconds.observe(
                            time.monotonic() - self.turn_started
                        )
                    await send(frames.chunk(chunk.content, message_id=chunk.message_id))
                elif kind == "done":
                    await self._on_done(event.done)
                elif kind == "tool_call":
                    await self._on_tool_call(event.tool_call)
                elif kind == "tool_result":
                    result = event.tool_result
                    await send(
                        frames.tool_result(
                            id=result.call_id, content=result.content, is_error=result.is_error
                        )
                    )
                elif kind == "error":
                    await self._on_error(event.error)
        except grpc.aio.AioRpcError as exc:
            await self._runtime_lost(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("relaying runtime events failed")
            await self.fail(ErrorCode.INTERNAL, "internal error in the facade")
            await self.close(CloseCode.INTERNAL_ERROR)

    async def _on_done(self, done: pb.Done) -> None:
        usage = done.usage
        if self.in_turn:
            self._end_turn(
                outcome="cancelled" if done.finish_reason == "cancelled" else "done",
                provider=done.provider,
                model=done.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=usage.cost_usd,
            )
        self.metrics.budget_standings(done.budgets)
        await self.send(
            frames.done(
                finish_reason=done.finish_reason,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=usage.cost_usd,
                turn_index=done.turn_index,
                message_id=done.message_id,
            )
        )
        if self.relay.draining:
            await self.shutdown()

    async def _on_tool_call(self, call: pb.ToolCall) -> None:
        if call.require_approval:
            self.awaiting_approvals = self.awaiting_approvals | {call.id}
        if call.client_side:
            self.awaiting_results = self.awaiting_results | {call.id}
        self.metrics.tool_called(call.name)
        await self.send(
            frames.tool_call(
                id=call.id,
                name=call.name,
                arguments=frames.parse_arguments(call.arguments_json),
                client_side=call.client_side,
                require_approval=call.require_approval,
            )
        )

    async def _on_error(self, error: pb.Error) -> None:
        if self.in_turn:
            self._end_turn(outcome="error")
        await self.fail(error.code, error.message, retryable=error.retryable)
        if self.relay.draining:
            await self.shutdown()

    async def _runtime_ended(self) -> None:
        if self.in_turn:
            self._end_turn(outcome="aborted")
            await self.fail(
                ErrorCode.RUNTIME_UNAVAILABLE,
                "the agent runtime ended the conversation mid-turn; reconnect to resume",
            )
            await self.close(CloseCode.TRY_AGAIN_LATER)
        else:
            await self.close(CloseCode.NORMAL)

    async def _runtime_lost(self, exc: BaseException) -> None:
        """Report a broken or unreachable runtime and close; the client may resume elsewhere."""
        if self.in_turn:
            self._end_turn(outcome="aborted")
        status = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        if status is None or status in UNAVAILABLE_CODES:
            logger.warning("runtime unavailable: %s", exc)
            await self.fail(
                ErrorCode.RUNTIME_UNAVAILABLE,
                "the agent runtime is unavailable; reconnect to start a new session"
                if self.creating is not None
                else "the agent runtime is unavailable; reconnect with session_id to resume",
                retryable=True,
            )
            await self.close(CloseCode.TRY_AGAIN_LATER)
        else:
            logger.error("runtime failed the conversation: %s", exc)
            await self.fail(ErrorCode.INTERNAL, f"the agent runtime failed: {status.name}")
            await self.close(CloseCode.INTERNAL_ERROR)

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
        assert self.turn_started is not None
        self.metrics.turn_finished(
            outcome=outcome,
            seconds=time.monotonic() - self.turn_started,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        self.turn_started = None
        self.awaiting_results = self.awaiting_approvals = _NONE_AWAITED
        if self.turn_timer is not None:
            self.turn_timer.cancel()
            self.turn_timer = None

