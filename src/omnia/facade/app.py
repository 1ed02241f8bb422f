"""The facade as an ASGI application: WebSocket relay, probes, metrics, chat page.

``create_app`` wires injected parts together and nothing else: the runtime
client, the metrics registry and the authenticator are passed in, so tests
(and a future embedding) choose their own and nothing here is global.

Probes, metrics and the chat page are not authenticated: probes and
Prometheus scrapes come from inside the cluster, and the chat page is static
(it asks for credentials and sends them on the WebSocket, which is where they
are checked). The open protocols (``openai_compat``, ``mcp_server``,
``a2a_server``) check every request with the same authenticator as ``/ws``,
through ``turns``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from omnia.config import FacadeConfig
from omnia.facade import a2a_server, auth, mcp_server, openai_compat, turns
from omnia.facade.metrics import Metrics
from omnia.facade.profiles import AgentProfile
from omnia.facade.relaying import Relay
from omnia.facade.runtime_client import RuntimeClient, RuntimeUnavailable

STATIC_DIR = Path(__file__).parent / "static"
WEBSOCKET_PATH = "/ws"

CHAT_PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # No image from elsewhere: a reply's ![](https://…?q=secret) would send data out.
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
"""The chat page's Content-Security-Policy: the second line of defence, after
DOMPurify, against a reply that carries script."""


def create_app(
    config: FacadeConfig,
    *,
    agent: str,
    runtime: RuntimeClient,
    registry: CollectorRegistry,
    authenticator: auth.Authenticator | None = None,
    profile: AgentProfile | None = None,
) -> Starlette:
    """The facade's ASGI app; its ``Relay`` is ``app.state.relay`` (for ``drain``).

    ``agent`` is the AgentRuntime's name, the ``agent`` label of the connection gauges.
    ``profile`` describes the agent to the open protocols (``config.protocols``);
    without one they know only its name.

    Without an ``authenticator``, one is built from ``config.auth`` and the
    process environment (where API keys are mounted from a Secret).
    """
    if authenticator is None:
        authenticator = auth.from_config(config.auth, environ=os.environ)
    metrics_ = Metrics(registry, agent=agent)
    relay = Relay(config, runtime=runtime, metrics=metrics_, authenticator=authenticator)
    turns_ = turns.Turns(
        config,
        runtime=runtime,
        metrics=metrics_,
        authenticator=authenticator,
        draining=lambda: relay.draining,
        shares=relay.shares,
    )
    profile = profile or AgentProfile(name=agent)
    protocols = config.protocols

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if relay.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        try:
            health = await runtime.health()
        except RuntimeUnavailable as exc:
            return JSONResponse(
                {"status": "runtime unavailable", "detail": str(exc)}, status_code=503
            )
        body = {
            "status": "ok" if health.serving and health.store_ok else "not ready",
            "agent": health.agent,
            "runtime": health.serving,
            "store": health.store_ok,
            "detail": health.detail,
        }
        return JSONResponse(body, status_code=200 if health.serving and health.store_ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def websocket_over_http(request: Request) -> Response:
        return PlainTextResponse(
            "this endpoint speaks WebSocket", status_code=426, headers={"Upgrade": "websocket"}
        )

    async def index(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CHAT_PAGE_POLICY},
        )

    routes = [
        Route(WEBSOCKET_PATH, websocket_over_http),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    services: list[Callable[[], AbstractAsyncContextManager[None]]] = []
    if protocols.openai:
        routes += openai_compat.routes(turns_=turns_, profile=profile)
    if protocols.mcp:
        mcp = mcp_server.McpEndpoint(turns_=turns_, profile=profile)
        routes += mcp.routes()
        services.append(mcp.running)
    if protocols.a2a:
        routes += a2a_server.A2aEndpoint(turns_=turns_, profile=profile, auth_config=config.auth).routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for service in services:
                await stack.enter_async_context(service())
            yield

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(WebSocketShortcut, relay=relay)],
    )
    app.state.relay = relay
    return app


class WebSocketShortcut:
    """Hands ``/ws`` upgrades straight to the relay, past routing and exception layers.

    Starlette's layers each hold a frame per connection and wrap every send;
    with thousands of long-lived connections that is measurable memory and
    per-frame work for nothing (the relay turns every failure into a frame
    itself). Everything else goes through the normal app. ``create_app``
    installs it as the app's outermost middleware; ``FacadeServer`` also
    wraps the whole app in one, so that ``/ws`` skips Starlette's own entry
    and error layers too.
    """

    def __init__(self, app: ASGIApp, *, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            await self.relay.serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)
