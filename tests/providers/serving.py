"""Real HTTP servers on loopback for the vendor adapters' tests.

A ``ScriptedServer`` is a starlette app served by uvicorn in a background
thread on a free 127.0.0.1 port. Each request it receives is recorded and
answered with the next scripted ``Reply``: a JSON error, or a stream of
server-sent events, with optional pauses to provoke timeouts. The vendor SDKs
talk to it over real sockets, through their whole HTTP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``events`` (server-sent events) or a JSON ``body``."""

    status: int = 200
    events: tuple[tuple[str | None, dict | str], ...] = ()
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gap: float = 0.0
    # After ``events``, this one over and over until the client goes away: a
    # server that never ends its reply.
    forever: tuple[str | None, dict | str] | None = None
    # After ``events``, these bytes over and over: one event that never ends.
    endless: bytes = b""


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    headers: dict[str, str]
    body: dict


class ScriptedServer:
    """Answers POSTs to ``path`` with the scripted replies, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.abandoned = threading.Event()
        self.base_url = ""

    def script(self, *replies: Reply) -> None:
        """Forget earlier requests and replies; answer the next requests with ``replies``."""
        self.replies = deque(replies)
        self.seen = []
        self.abandoned.clear()

    def app(self) -> Starlette:
        return Starlette(routes=[Route(self.path, self._answer, methods=["POST"])])

    async def _answer(self, request: Request) -> Response:
        self.seen.append(Seen(headers=dict(request.headers), body=await request.json()))
        if not self.replies:
            return JSONResponse({"error": {"message": "the test script has no reply left"}}, 500)
        reply = self.replies.popleft()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.body is not None:
            return JSONResponse(reply.body, reply.status, headers=reply.headers)
        return StreamingResponse(
            self._events(reply), reply.status, headers=reply.headers, media_type="text/event-stream"
        )

    async def _events(self, reply: Reply) -> AsyncIterator[bytes]:
        sent = 0
        try:
            for name, data in reply.events:
                if sent and reply.gap:
                    await asyncio.sleep(reply.gap)
                yield _event(name, data)
                sent += 1
            if reply.forever is not None:
                again = _event(*reply.forever)
                while True:
                    yield again
                    sent += 1
                    await asyncio.sleep(0)
            while reply.endless:
                yield reply.endless
                await asyncio.sleep(0)
        finally:
            if sent < len(reply.events) or reply.forever is not None or reply.endless:
                self.abandoned.set()


def _event(name: str | None, data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode()


@contextlib.contextmanager
def serving(server: ScriptedServer) -> Iterator[ScriptedServer]:
    """Serve ``server`` on a free loopback port for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(server.app(), log_level="warning", lifespan="off")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test HTTP server did not start")
        time.sleep(0.01)
    server.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield server
    finally:
        runner.should_exit = runner.force_exit = True
        thread.join(timeout=10)
