"""The activator as an ASGI application: agents' WebSockets, and its own probes.

Requests are told apart by their ``Host``. An IP address (what kubelet
probes and Prometheus scrapes send) reaches the activator's own endpoints:
``/healthz``, ``/readyz`` (503 while draining) and ``/metrics``. Any other
Host names an agent (``hosts``), which must be a scale-to-zero AgentRuntime
(``spec.autoscaling.enabled`` with ``minReplicas: 0``); a bare name must
name exactly one. Then:

- a WebSocket is held and relayed (``proxying.Connection``); when
  ``--max-held`` connections wait already, or the activator is draining, it
  is accepted only to get an ``error`` frame (``RUNTIME_UNAVAILABLE`` or
  ``DRAINING``, retryable) and closed 1013 or 1012;
- a plain HTTP request is answered ``503`` with ``Retry-After``, and wakes
  the agent (``Demand.request``): the OpenAI-compatible, MCP and A2A
  endpoints are request/response, so their clients retry, and by then the
  agent's pods serve them directly.

A Host naming no scale-to-zero agent is answered ``421 Misdirected
Request`` before any upgrade: that client dialled a name the activator
cannot serve, and no retry will change it.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from omnia.activator import hosts, proxying
from omnia.activator.backends import Backends
from omnia.activator.demand import Demand
from omnia.activator.hosts import AgentRef, HostError
from omnia.activator.metrics import Metrics
from omnia.activator.waking import Wakeups
from omnia.protocol.errors import CloseCode, ErrorCode

logger = logging.getLogger(__name__)


class Activator:
    """The ASGI app; ``drain`` ends it (see its docstring)."""

    def __init__(self, *, backends: Backends, demand: Demand, registry: CollectorRegistry,
                 settings: proxying.Settings) -> None:
        self.backends = backends
        self.demand = demand
        self.settings = settings
        self.wakeups = Wakeups(backends)
        self.registry = registry
        self.metrics = Metrics(registry, demand=demand)
        self.connections: dict[asyncio.Task, proxying.Connection] = {}
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        host = _header(scope, b"host")
        if host is None or hosts.is_address(host):
            await self._own(scope, receive, send)
            return
        try:
            target = hosts.parse(host)
            # Refused before the lookup, so a flood of connections costs the API server nothing.
            if scope["type"] == "websocket" and await self._refused(WebSocket(scope, receive, send)):
                return
            agent = await self.resolve(target)
        except HostError as exc:
            if scope["type"] == "websocket":
                self.metrics.connections.labels(proxying.Outcome.MISDIRECTED).inc()
            await PlainTextResponse(f"{exc}\n", status_code=421)(scope, receive, send)
            return
        except LookupUnavailable as exc:
            if scope["type"] == "websocket":
                self.metrics.connections.labels(proxying.Outcome.REFUSED).inc()
                await proxying.refuse(WebSocket(scope, receive, send), code=ErrorCode.RUNTIME_UNAVAILABLE,
                                      message=str(exc), close_code=CloseCode.TRY_AGAIN_LATER, retryable=True,
                                      retry_after_seconds=proxying.RETRY_AFTER_SECONDS)
            else:
                await _retry_later(str(exc))(scope, receive, send)
            return
        if scope["type"] == "http":
            self.demand.request(agent)
            self.metrics.requests.inc()
            await _retry_later(f"agent {agent} is starting; retry in {proxying.RETRY_AFTER_SECONDS:g}s")(
                scope, receive, send
            )
            return
        await self._hold(WebSocket(scope, receive, send), agent)

    async def resolve(self, target: hosts.Target) -> AgentRef:
        """The scale-to-zero agent a parsed Host names.

        :class:`HostError` if none (or several); :class:`LookupUnavailable`
        when the AgentRuntimes cannot be listed.
        """
        try:
            namespaces = await self.backends.scale_to_zero_namespaces(target.name)
        except httpx.HTTPError as exc:
            logger.warning("listing the AgentRuntimes called %s failed: %s", target.name, exc)
            raise LookupUnavailable(f"cannot look up agent {target.name!r} now; retry shortly") from exc
        if target.namespace is not None:
            if target.namespace not in namespaces:
                raise HostError(f"no scale-to-zero agent {target.namespace}/{target.name}")
            return AgentRef(namespace=target.namespace, name=target.name)
        if len(namespaces) != 1:
            where = "no namespace" if not namespaces else f"{len(namespaces)} namespaces"
            raise HostError(f"a scale-to-zero agent {target.name!r} exists in {where}; "
                            f"connect to {target.name}.<namespace>")
        return AgentRef(namespace=namespaces[0], name=target.name)

    async def _refused(self, websocket: WebSocket) -> bool:
        """Refuse the connection if the activator drains or holds ``max_held`` already; whether it did."""
        if self.draining:
            self.metrics.connections.labels(proxying.Outcome.DRAINED).inc()
            await proxying.refuse(websocket, code=ErrorCode.DRAINING,
                                  message="the activator is shutting down; reconnect",
                                  close_code=CloseCode.SERVICE_RESTART, retryable=True)
            return True
        if self.demand.total_held >= self.demand.max_held:
            self.metrics.connections.labels(proxying.Outcome.FULL).inc()
            await proxying.refuse(
                websocket, code=ErrorCode.RUNTIME_UNAVAILABLE,
                message="too many connections are waiting for agents to start; "
                f"retry in {proxying.RETRY_AFTER_SECONDS:g}s",
                close_code=CloseCode.TRY_AGAIN_LATER, retryable=True,
                retry_after_seconds=proxying.RETRY_AFTER_SECONDS,
            )
            return True
        return False

    async def _hold(self, websocket: WebSocket, agent: AgentRef) -> None:
        connection = proxying.Connection(websocket, agent=agent, demand=self.demand, wakeups=self.wakeups,
                                         settings=self.settings, relayed=self.metrics.relaying)
        run = asyncio.create_task(connection.run(), name=f"omnia-activator-connection-{agent}")
        self.connections[run] = connection
        outcome = proxying.Outcome.DRAINED
        try:
            outcome = await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not run.cancelled() or (current is not None and current.cancelling()):
                raise
            # ``drain`` cancelled the connection, which has told its client.
        finally:
            del self.connections[run]
            self.metrics.connections.labels(outcome).inc()

    async def _own(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).close(code=CloseCode.POLICY_VIOLATION)
            return
        request = Request(scope, receive)
        response: Response
        if request.url.path == "/healthz":
            response = JSONResponse({"status": "ok"})
        elif request.url.path == "/readyz":
            response = JSONResponse({"status": "draining" if self.draining else "ok"},
                                    status_code=503 if self.draining else 200)
        elif request.url.path == "/metrics":
            response = Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
        else:
            response = PlainTextResponse(
                "the activator serves agents by their Service name (Host: <agent>.<namespace>)\n", status_code=404
            )
        await response(scope, receive, send)

    async def drain(self, *, timeout: float) -> None:
        """Refuse new connections, close held ones at once, give relayed ones ``timeout`` seconds to end.

        Closed connections get ``DRAINING`` and 1012: their clients reconnect,
        through the Service, to another activator or to the agent's pods.
        """
        self.draining = True
        for task, connection in list(self.connections.items()):
            if not connection.relaying:
                task.cancel()
        relayed = [task for task in self.connections if not task.done()]
        if relayed:
            _, pending = await asyncio.wait(relayed, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.wakeups.aclose()


class LookupUnavailable(Exception):
    """The cluster cannot say now which agent a Host names; a retry may succeed."""


def _retry_later(message: str) -> Response:
    return PlainTextResponse(f"{message}\n", status_code=503,
                             headers={"Retry-After": f"{proxying.RETRY_AFTER_SECONDS:.0f}"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None
