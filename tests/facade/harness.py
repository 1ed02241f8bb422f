"""A scripted runtime on loopback gRPC and helpers to talk to a facade.

The facade is tested against the runtime's *protocol*, not its code: this
double implements the AgentRuntime service with replies chosen by the user's
message, so each test can provoke exactly the runtime behaviour it needs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import websockets
from websockets.asyncio.client import ClientConnection

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc

AGENT = "test-agent"
HELLO_CHUNKS = ("Hel", "lo, ", "world")
STABLE_VERSION = "1.0.0"
SAY = "say:"


def _done(finish_reason: str = "stop", turn_index: int = 0, *, cost_usd: float = 0.002) -> pb.ServerEvent:
    return pb.ServerEvent(
        done=pb.Done(
            finish_reason=finish_reason,
            usage=pb.Usage(input_tokens=7, output_tokens=3, cost_usd=cost_usd),
            turn_index=turn_index,
            provider="mock",
            model="scripted-1",
        )
    )


class ScriptedRuntime(pb_grpc.AgentRuntimeServicer):
    """Replies by keyword in the user message.

    An ``Open`` with ``create`` stores the session under the facade's id;
    one without resumes a known session (or, with no id, starts one).

    - ``fail``: a retryable PROVIDER_ERROR instead of a reply.
    - ``slow``: one chunk, then waits for ``cancel`` (→ done "cancelled") or
      for ``release`` to be set (→ rest of the reply and done).
    - ``client tool``: a client-side tool call; echoes the client's result.
    - ``approve``: a tool call that needs approval; runs it if approved.
    - ``say:TEXT``: TEXT as the reply, streamed in chunks of 5 characters.
    - ``free``: ``HELLO_CHUNKS`` and done with a cost of 0 (a free model).
    - anything else: ``HELLO_CHUNKS`` and done.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {"known-session": 2}
        self.opens: list[pb.Open] = []
        self.received: list[pb.ClientEvent] = []
        self.health = pb.HealthResponse(serving=True, store_ok=True, agent=AGENT)
        self.description = pb.Description(agent=AGENT, stable_version=STABLE_VERSION)
        self.describes = 0
        # Opens that create a session fail with STORE_UNAVAILABLE while set.
        self.store_down = False
        self.release = asyncio.Event()
        self.turn_running = asyncio.Event()

    async def Health(self, request: pb.HealthRequest, context: object) -> pb.HealthResponse:
        return self.health

    async def Describe(self, request: pb.DescribeRequest, context: object) -> pb.Description:
        self.describes += 1
        return self.description

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ClientEvent], context: object
    ) -> AsyncIterator[pb.ServerEvent]:
        inbox: asyncio.Queue[pb.ClientEvent | None] = asyncio.Queue()

        async def pump() -> None:
            async for event in request_iterator:
                self.received.append(event)
                await inbox.put(event)
            await inbox.put(None)

        pumping = asyncio.create_task(pump())
        try:
            first = await inbox.get()
            assert first is not None and first.WhichOneof("event") == "open"
            self.opens.append(first.open)
            session_id = first.open.session_id
            if first.open.create:
                if self.store_down:
                    yield pb.ServerEvent(
                        error=pb.Error(
                            code="STORE_UNAVAILABLE", message="redis: connection refused",
                            retryable=True,
                        )
                    )
                    return
                self.sessions[session_id] = 0
            elif session_id and session_id not in self.sessions:
                yield pb.ServerEvent(
                    error=pb.Error(code="SESSION_NOT_FOUND", message=f"no session {session_id}")
                )
                return
            resumed = bool(session_id) and not first.open.create
            session_id = session_id or uuid.uuid4().hex
            self.sessions.setdefault(session_id, 0)
            yield pb.ServerEvent(
                opened=pb.Opened(
                    session_id=session_id,
                    agent=AGENT,
                    prompt_version=first.open.prompt_version or STABLE_VERSION,
                    resumed=resumed,
                    turns=self.sessions[session_id],
                )
            )
            while (event := await inbox.get()) is not None:
                if event.WhichOneof("event") != "message":
                    continue
                self.turn_running.set()
                async for out in self._turn(event.message.content, inbox):
                    yield out
                self.turn_running.clear()
                self.sessions[session_id] += 1
        finally:
            pumping.cancel()

    async def _turn(
        self, content: str, inbox: asyncio.Queue[pb.ClientEvent | None]
    ) -> AsyncIterator[pb.ServerEvent]:
        if content.startswith(SAY):
            text = content.removeprefix(SAY)
            for start in range(0, len(text), 5):
                yield pb.ServerEvent(chunk=pb.Chunk(content=text[start:start + 5]))
            yield _done()
        elif "free" in content:
            for text in HELLO_CHUNKS:
                yield pb.ServerEvent(chunk=pb.Chunk(content=text))
            yield _done(cost_usd=0.0)
        elif "fail" in content:
            yield pb.ServerEvent(
                error=pb.Error(code="PROVIDER_ERROR", message="upstream said 503", retryable=True)
            )
        elif "slow" in content:
            yield pb.ServerEvent(chunk=pb.Chunk(content="working"))
            release = asyncio.create_task(self.release.wait())
            cancelled = asyncio.create_task(_next_of(inbox, "cancel"))
            finished, pending = await asyncio.wait(
                {release, cancelled}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if cancelled in finished:
                yield _done("cancelled")
            else:
                yield pb.ServerEvent(chunk=pb.Chunk(content=" done"))
                yield _done()
        elif "client tool" in content:
            yield pb.ServerEvent(
                tool_call=pb.ToolCall(
                    id="call-1", name="get_location", arguments_json='{"precise": true}',
                    client_side=True,
                )
            )
            result = await _next_of(inbox, "tool_result")
            yield pb.ServerEvent(chunk=pb.Chunk(content=f"you are in {result.tool_result.content}"))
            yield _done()
        elif "approve" in content:
            yield pb.ServerEvent(
                tool_call=pb.ToolCall(
                    id="call-2", name="delete_everything", arguments_json="{}",
                    require_approval=True,
                )
            )
            decision = (await _next_of(inbox, "approval")).approval
            if decision.approved:
                yield pb.ServerEvent(
                    tool_result=pb.ToolResult(call_id="call-2", content="deleted")
                )
                yield pb.ServerEvent(chunk=pb.Chunk(content="all gone"))
            else:
                yield pb.ServerEvent(chunk=pb.Chunk(content="kept everything"))
            yield _done()
        else:
            for text in HELLO_CHUNKS:
                yield pb.ServerEvent(chunk=pb.Chunk(content=text))
            yield _done()


async def _next_of(inbox: asyncio.Queue[pb.ClientEvent | None], kind: str) -> pb.ClientEvent:
    while True:
        event = await inbox.get()
        if event is None:
            raise asyncio.CancelledError
        if event.WhichOneof("event") == kind:
            return event


@dataclass
class RuntimeDouble:
    """A ``ScriptedRuntime`` served on a loopback port that survives restarts."""

    servicer: ScriptedRuntime = field(default_factory=ScriptedRuntime)
    port: int = 0
    server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        pb_grpc.add_AgentRuntimeServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server

    async def kill(self) -> None:
        """Stop at once, failing every open stream, as a crashed process would."""
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


async def connect(url: str, **kwargs: object) -> ClientConnection:
    return await websockets.connect(url, open_timeout=5, close_timeout=2, **kwargs)


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send(ws: ClientConnection, frame: dict) -> None:
    await ws.send(json.dumps(frame))


async def receive_until(ws: ClientConnection, kind: str, timeout: float = 5.0) -> list[dict]:
    """Frames up to and including the first of type ``kind``."""
    seen = []
    while True:
        frame = await receive(ws, timeout)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


async def eventually(predicate: Callable[[], bool], *, seconds: float = 5.0) -> bool:
    """Whether ``predicate`` becomes true within ``seconds``, checked every 10 ms.

    For server-side effects of a client's close, which the server applies
    after the closing handshake the client waits for.
    """
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)
    return True


async def closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Wait for the server to close; the close code and reason."""
    await asyncio.wait_for(ws.wait_closed(), timeout)
    return ws.close_code, ws.close_reason
