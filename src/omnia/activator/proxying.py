"""Holding a client's WebSocket until its agent has a pod, then relaying it there.

The client is accepted at once, before any pod exists: a client's opening
handshake times out in seconds, a wake-up takes longer. From then on the
connection goes through three phases:

1. *held*: counted in ``Demand`` (which tells the external scaler) while
   ``Wakeups`` waits for a ready address of the agent, within the wake
   timeout; the client's frames, if it sends any before ``connected``,
   wait in a short queue;
2. *opening*: a ``websockets`` client connection to the pod's facade, on the
   same path and query, with the client's end-to-end headers
   (``Authorization``, ``Origin``, ``User-Agent``, cookies, …), the
   subprotocol the client was given, and ``X-Forwarded-*``; an address that
   cannot be reached is retried (another pod, or the same one a moment
   later) until the deadline;
3. *relaying*: frames both ways, text as text and binary as binary, until one
   side closes; its close code and reason are passed to the other.

Back-pressure holds both ways: each direction is one task that sends a
frame before it reads the next, the pod's side waits for its socket buffer
to drain, and the client's side is uvicorn's guarded protocol (a client that
does not read stops being read from, see ``facade.guarding``). So a slow
reader on either side slows the other, and nothing buffers without bound.

Whatever the phase, the client that goes away is released at once: its
place in ``Demand`` is given back, the pod's connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge
from starlette.types import Message
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from omnia.activator.backends import Address
from omnia.activator.demand import Demand, HeldLimit
from omnia.activator.hosts import AgentRef
from omnia.activator.waking import Wakeups
from omnia.protocol import frames
from omnia.protocol.errors import CloseCode, ErrorCode

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5.0
"""The retry hint of a refused or timed-out connection: about a pod's start-up."""
EARLY_FRAMES = 16
"""Client frames queued before the pod's connection is open; beyond, the client is no longer read."""
OPEN_TIMEOUT_SECONDS = 10.0
RECONNECT_PAUSE_SECONDS = 0.5
MAX_FRAME_BYTES = 4 * 1024 * 1024

# Headers of this hop or of the WebSocket handshake itself: never forwarded.
_HOP_HEADERS = frozenset({
    "host", "connection", "upgrade", "keep-alive", "te", "trailer", "transfer-encoding", "content-length",
    "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
    "sec-websocket-accept", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
})
# Close codes a peer reports but no endpoint may send (RFC 6455, 7.4.1): what to send instead.
_UNSENDABLE = {1005: CloseCode.NORMAL, 1006: 1001, 1015: 1001}


@dataclass(frozen=True)
class Settings:
    wake_timeout_seconds: float = 60.0
    open_timeout_seconds: float = OPEN_TIMEOUT_SECONDS


class Outcome(enum.StrEnum):
    """How a connection ended, the ``result`` label of ``omnia_activator_connections_total``."""

    PROXIED = "proxied"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    CLIENT_GONE = "client_gone"
    DRAINED = "drained"
    FULL = "full"
    MISDIRECTED = "misdirected"


class Connection:
    """One client's WebSocket, from acceptance to close (see the module docstring)."""

    def __init__(self, websocket: WebSocket, *, agent: AgentRef, demand: Demand, wakeups: Wakeups,
                 settings: Settings, relayed: Gauge | None = None) -> None:
        self.websocket = websocket
        self._relayed = relayed
        self.agent = agent
        self._demand = demand
        self._wakeups = wakeups
        self._settings = settings
        self._early: asyncio.Queue[Message] = asyncio.Queue(maxsize=EARLY_FRAMES)
        self._gone = asyncio.Event()
        self.relaying = False

    @property
    def subprotocol(self) -> str | None:
        offered = self.websocket.scope.get("subprotocols") or []
        return offered[0] if offered else None

    async def run(self) -> Outcome:
        """Serve the connection to its end; returns the :class:`Outcome`.

        Cancelling it (a drain) closes both sides with ``DRAINING`` and 1012.
        """
        await self.websocket.accept(subprotocol=self.subprotocol)
        reader = asyncio.create_task(self._read_client(), name="omnia-activator-client-reader")
        try:
            try:
                backend, outcome = await self._wake()
            except HeldLimit as exc:
                await self._close_with(
                    ErrorCode.RUNTIME_UNAVAILABLE,
                    f"{exc}; retry in {RETRY_AFTER_SECONDS:g}s",
                    CloseCode.TRY_AGAIN_LATER,
                )
                return Outcome.FULL
            if backend is None:
                return outcome
            async with backend:
                self.relaying = True
                if self._relayed is not None:
                    self._relayed.inc()
                try:
                    await self._relay(backend)
                finally:
                    if self._relayed is not None:
                        self._relayed.dec()
            return Outcome.PROXIED
        except asyncio.CancelledError:
            await self._close_with(ErrorCode.DRAINING, "the activator is shutting down; reconnect",
                                   CloseCode.SERVICE_RESTART, retry_after_seconds=None)
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _wake(self) -> tuple[ClientConnection | None, Outcome]:
        """Hold the client until a pod's facade accepts the relayed handshake.

        Returns the pod's connection, or None and why there is none (the
        client has been told, unless it went away).
        """
        with self._demand.hold(self.agent):
            gone = asyncio.create_task(self._gone.wait())
            opening = asyncio.create_task(self._open())
            try:
                async with asyncio.timeout(self._settings.wake_timeout_seconds):
                    await asyncio.wait({gone, opening}, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                pass
            finally:
                gone.cancel()
                if not opening.done():
                    opening.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await opening
        failure = None if opening.cancelled() else opening.exception()
        if self._gone.is_set():
            if not opening.cancelled() and failure is None:
                await opening.result().close()
            return None, Outcome.CLIENT_GONE
        if opening.cancelled():
            await self._close_with(
                ErrorCode.RUNTIME_UNAVAILABLE,
                f"agent {self.agent} did not start within {self._settings.wake_timeout_seconds:g}s; "
                f"retry in {RETRY_AFTER_SECONDS:g}s",
                CloseCode.TRY_AGAIN_LATER,
            )
            return None, Outcome.TIMEOUT
        if isinstance(failure, InvalidStatus):
            status = failure.response.status_code
            await self._close_with(ErrorCode.INVALID_MESSAGE, f"the agent refused the connection: HTTP {status}",
                                   CloseCode.POLICY_VIOLATION, retryable=False, retry_after_seconds=None)
            return None, Outcome.REFUSED
        if failure is not None:
            logger.error("waking agent %s failed: %s", self.agent, failure)
            await self._close_with(ErrorCode.RUNTIME_UNAVAILABLE, f"waking agent {self.agent} failed; retry",
                                   CloseCode.TRY_AGAIN_LATER)
            return None, Outcome.REFUSED
        return opening.result(), Outcome.PROXIED

    async def _open(self) -> ClientConnection:
        """Connect to one of the agent's ready pods, waiting and retrying until one accepts."""
        while True:
            addresses = list(await self._wakeups.ready(self.agent))
            random.shuffle(addresses)
            for address in addresses:
                try:
                    return await self._connect(address)
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    if isinstance(exc, InvalidStatus) and 400 <= exc.response.status_code < 500 \
                            and exc.response.status_code not in (408, 429):
                        raise
                    logger.info("pod %s of agent %s refused the connection (%s); trying again",
                                address, self.agent, exc)
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)

    async def _connect(self, address: Address) -> ClientConnection:
        scope = self.websocket.scope
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        uri = f"ws://{address}{path.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query else "")
        subprotocol = self.subprotocol
        return await connect(
            uri,
            additional_headers=forwarded_headers(scope),
            subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
            user_agent_header=None,
            compression=None,
            open_timeout=self._settings.open_timeout_seconds,
            max_size=MAX_FRAME_BYTES,
            # Pods are reached directly, whatever HTTP proxy the environment names.
            proxy=None,
        )

    async def _read_client(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._gone.set()
            await self._early.put(message)
            if message["type"] == "websocket.disconnect":
                return

    async def _relay(self, backend: ClientConnection) -> None:
        upstream = asyncio.create_task(self._client_to_backend(backend), name="omnia-activator-upstream")
        downstream = asyncio.create_task(self._backend_to_client(backend), name="omnia-activator-downstream")
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)

    async def _client_to_backend(self, backend: ClientConnection) -> None:
        while True:
            message = await self._early.get()
            if message["type"] == "websocket.disconnect":
                await backend.close(code=sendable(message.get("code")), reason=message.get("reason") or "")
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                await backend.send(data)
            except ConnectionClosed:
                # The pod closed first: the other task passes its close on.
                await asyncio.Event().wait()

    async def _backend_to_client(self, backend: ClientConnection) -> None:
        try:
            while True:
                data = await backend.recv()
                try:
                    if isinstance(data, str):
                        await self.websocket.send_text(data)
                    else:
                        await self.websocket.send_bytes(data)
                except Exception:  # the client went away; its reader reports it
                    await asyncio.Event().wait()
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                await self._close_with(ErrorCode.RUNTIME_UNAVAILABLE,
                                       "the agent's pod went away; reconnect with session_id to resume",
                                       CloseCode.TRY_AGAIN_LATER, retry_after_seconds=None)
            else:
                with contextlib.suppress(Exception):
                    await self.websocket.close(code=sendable(closed.rcvd.code), reason=closed.rcvd.reason)

    async def _close_with(self, code: ErrorCode, message: str, close_code: int, *, retryable: bool = True,
                          retry_after_seconds: float | None = RETRY_AFTER_SECONDS) -> None:
        """An ``error`` frame, then a close; nothing if the client has gone already."""
        if self._gone.is_set():
            return
        with contextlib.suppress(Exception):
            await self.websocket.send_text(
                frames.error(code, message, retryable=retryable, retry_after_seconds=retry_after_seconds)
            )
            await self.websocket.close(code=close_code, reason=message[:120])


async def refuse(websocket: WebSocket, *, code: ErrorCode, message: str, close_code: int, retryable: bool,
                 retry_after_seconds: float | None = None) -> None:
    """Accept only to say why in an ``error`` frame, then close (clients read frames, not HTTP statuses)."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    with contextlib.suppress(Exception):
        await websocket.send_text(frames.error(code, message, retryable=retryable,
                                               retry_after_seconds=retry_after_seconds))
        await websocket.close(code=close_code, reason=message[:120])


def forwarded_headers(scope: dict) -> list[tuple[str, str]]:
    """The client's end-to-end headers for the pod, with ``X-Forwarded-For``, ``-Host`` and ``-Proto``."""
    raw: Sequence[tuple[bytes, bytes]] = scope.get("headers") or ()
    named_in_connection = {
        token.strip().lower()
        for name, value in raw if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in raw
        if name.decode("latin-1").lower() not in _HOP_HEADERS | named_in_connection
    ]
    received = dict((name.lower(), value.decode("latin-1")) for name, value in raw)
    client = scope.get("client")
    chain = [received[b"x-forwarded-for"]] if b"x-forwarded-for" in received else []
    if client:
        chain.append(client[0])
    if chain:
        headers.append(("X-Forwarded-For", ", ".join(chain)))
    if b"host" in received:
        headers.append(("X-Forwarded-Host", received.get(b"x-forwarded-host", received[b"host"])))
    headers.append(("X-Forwarded-Proto", received.get(b"x-forwarded-proto", str(scope.get("scheme", "ws")))))
    return headers


def sendable(code: int | None) -> int:
    """A close code one may send for ``code``, as reported by a peer (1005, 1006 and 1015 may not be sent)."""
    if code is None:
        return CloseCode.NORMAL
    return int(_UNSENDABLE.get(code, code))
