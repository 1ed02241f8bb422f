"""Real servers on loopback for the tool tests: HTTP services, MCP servers, OpenAPI documents.

Each ``Service`` serves an ASGI app with uvicorn in a background thread on a
fixed 127.0.0.1 port, and can be stopped and started again *on the same
port*, so a test can take a tool's server down and bring it back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from . import mcp_tools


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """An ASGI app from ``make_app`` on a fixed loopback port; restartable."""

    def __init__(self, make_app: Callable[[], object], *, lifespan: str = "off") -> None:
        self.make_app = make_app
        self.lifespan = lifespan
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Service:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            self.make_app(), log_level="warning", lifespan=self.lifespan, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=15)
            self._server = self._thread = None


def mcp_service() -> Service:
    """The test MCP server over streamable HTTP, at ``<url>/mcp``."""
    return Service(lambda: mcp_tools.build().streamable_http_app(), lifespan="on")


def mcp_sse_service() -> Service:
    """The test MCP server over the older HTTP+SSE transport, at ``<url>/sse``."""
    return Service(lambda: mcp_tools.build().sse_app(), lifespan="on")


@dataclass
class HttpState:
    """What the HTTP tool service saw, and how it should misbehave next."""

    requests: list[dict] = field(default_factory=list)
    failures: int = 0
    delay: float = 0.0
    # Bytes the endless document had sent when its client went away.
    endless_sent: int = 0

    def seen(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


OPENAPI_DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "Weather and orders", "version": "1.0"},
    "paths": {
        "/weather/{city}": {
            "parameters": [{"name": "city", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "operationId": "getWeather",
                "summary": "Current weather of a city",
                "parameters": [
                    {"name": "units", "in": "query", "schema": {"type": "string", "enum": ["C", "F"]}},
                    {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}},
            },
        },
        "/orders": {
            "post": {
                "operationId": "createOrder",
                "description": "Place an order.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                },
                "responses": {"201": {"description": "created"}},
            },
        },
        "/flaky": {"get": {"operationId": "getFlaky", "responses": {"200": {"description": "ok"}}}},
        "/upload": {
            "post": {
                "operationId": "upload",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {}}}},
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
    "components": {
        "schemas": {
            "Order": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                               "gift": {"$ref": "#/components/schemas/Order"}},
                "required": ["item", "quantity"],
            }
        }
    },
}


def http_service(state: HttpState, *, document: dict | None = None) -> Service:
    """An HTTP tool service: weather, orders, a flaky and a slow endpoint, its OpenAPI document."""

    async def record(request: Request) -> dict:
        body = await request.body()
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body.decode(),
        }
        state.requests.append(entry)
        if state.delay:
            await asyncio.sleep(state.delay)
        return entry

    async def weather(request: Request) -> Response:
        entry = await record(request)
        city = request.path_params["city"]
        return JSONResponse({"city": city, "temp": 21, "units": entry["query"].get("units", "C")})

    async def orders(request: Request) -> Response:
        entry = await record(request)
        return JSONResponse({"id": len(state.requests), "received": entry["body"]}, status_code=201)

    async def flaky(request: Request) -> Response:
        await record(request)
        if state.failures > 0:
            state.failures -= 1
            return PlainTextResponse("temporarily broken", status_code=500)
        return PlainTextResponse("fine now")

    async def missing(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("no such thing", status_code=404)

    async def big(request: Request) -> Response:
        entry = await record(request)
        return PlainTextResponse("z" * int(entry["query"].get("size", "100")))

    async def whoami(request: Request) -> Response:
        entry = await record(request)
        return PlainTextResponse(entry["headers"].get("authorization", "(anonymous)"))

    async def openapi(request: Request) -> Response:
        return JSONResponse(document or OPENAPI_DOCUMENT)

    async def endless(request: Request) -> Response:
        """A document that never ends, as a hostile or broken server sends it."""

        async def body():
            chunk = b" " * 65536
            yield b'{"openapi": "3.0.0", "padding": "'
            # Counted while the client is there: uvicorn drops what is sent after.
            while not await request.is_disconnected():
                state.endless_sent += len(chunk)
                yield chunk

        return StreamingResponse(body(), media_type="application/json")

    def make_app() -> Starlette:
        return Starlette(
            routes=[
                Route("/weather/{city}", weather, methods=["GET"]),
                Route("/orders", orders, methods=["POST"]),
                Route("/flaky", flaky, methods=["GET", "POST"]),
                Route("/missing", missing, methods=["GET"]),
                Route("/big", big, methods=["GET"]),
                Route("/whoami", whoami, methods=["GET"]),
                Route("/openapi.json", openapi, methods=["GET"]),
                Route("/endless.json", endless, methods=["GET"]),
            ]
        )

    return Service(make_app)


@dataclass
class Visits:
    """What a bystander service saw: each request's method, raw path and headers."""

    requests: list[dict] = field(default_factory=list)


def recording_service(visits: Visits) -> Service:
    """Answers any request with 200 and remembers it, the raw path as sent (before any decoding)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        visits.requests.append(
            {
                "method": scope["method"],
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"reached"})

    return Service(lambda: app)


def redirecting_service(location: Callable[[str], str | None], *, status: int = 302) -> Service:
    """Redirects a request to ``location(path)``, an absolute or relative URL.

    Where ``location`` gives None, answers 200 with the ``x-api-key`` header it got.
    """

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        target = location(scope["path"])
        if target is None:
            key = dict(scope["headers"]).get(b"x-api-key", b"(none)")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"arrived with " + key})
            return
        target = target.encode("latin-1")
        await send({"type": "http.response.start", "status": status, "headers": [(b"location", target)]})
        await send({"type": "http.response.body", "body": b""})

    return Service(lambda: app)


@dataclass
class Flood:
    """How many bytes an endless service had sent when its client went away."""

    sent: int = 0


def endless_mcp_service(flood: Flood, *, event_stream: bool) -> Service:
    """An MCP endpoint whose answer never ends: one JSON body, or one server-sent event, without end."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        media = b"text/event-stream" if event_stream else b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media)]})
        opening = b'event: message\ndata: {"jsonrpc": "2.0", "id": 0, "result": "' if event_stream else b'{"jsonrpc": "2.0", "id": 0, "result": "'
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        chunk = b"a" * 65536
        try:
            # uvicorn drops what is sent after a disconnect without a word.
            while not gone.is_set():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                flood.sent += len(chunk)
                await asyncio.sleep(0)
        finally:
            watcher.cancel()

    return Service(lambda: app)
