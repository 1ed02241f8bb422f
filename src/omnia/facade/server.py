"""Running the facade on uvicorn, with a graceful drain on SIGTERM.

uvicorn's own signal handling closes every WebSocket at once (close code
1012) the moment a signal arrives, which would cut every running turn. So the
facade takes the signals itself: on the first SIGTERM or SIGINT it drains
(``Relay.drain``: refuse new connections, ``/readyz`` 503, let turns finish
within ``drainTimeoutSeconds``, close the rest with a reconnect hint) and
only then asks uvicorn to stop. A second signal skips the wait.

In a pod, the endpoints that route to it are withdrawn asynchronously: a
client can still be sent here after the drain has closed the last
connection. So the facade can *linger*: keep its listener open for a few
more seconds, answering every late WebSocket with ``DRAINING`` (retryable,
close code 1012) and ``/readyz`` with 503, so a late client is told to
reconnect instead of being refused.

The listening socket is bound here rather than by uvicorn, so that a port in
use is an ``OSError`` for the caller and not a ``sys.exit`` from inside the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from omnia.config import AgentConfig, FacadeConfig
from omnia.facade import guarding
from omnia.facade.app import WebSocketShortcut, create_app
from omnia.facade.profiles import AgentProfile
from omnia.facade.relaying import Relay
from omnia.facade.runtime_client import RuntimeClient
from omnia.speedups import HttpParser, Speedups
from omnia.termination import StartupError

logger = logging.getLogger(__name__)

# How long uvicorn waits for plain HTTP requests after the drain; WebSockets
# are all closed by then.
_HTTP_GRACE_SECONDS = 5.0
_BACKLOG = 4096


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to ``serve``, which drains before stopping uvicorn.
        yield


class FacadeServer:
    """A facade app on uvicorn, started and stopped from a running event loop.

    ``start`` returns once the socket listens; ``stop`` drains the relay and
    then stops uvicorn. Neither installs signal handlers (``serve`` does).
    ``http_parser`` is uvicorn's request parser (see ``omnia.speedups``).
    """

    def __init__(
        self,
        app: Starlette,
        *,
        config: FacadeConfig,
        host: str,
        port: int,
        linger_seconds: float = 0.0,
        http_parser: HttpParser = "h11",
    ) -> None:
        self.app = app
        self.config = config
        self.host = host
        self.linger_seconds = linger_seconds
        self.relay: Relay = app.state.relay
        self._socket = _bind(host, port)
        # uvicorn's own h11 or httptools and websockets (sans-I/O)
        # protocols, with the bounds hostile clients need (see ``guarding``).
        http, websocket = guarding.protocols(config, http_parser=http_parser)
        self._server = _Server(
            uvicorn.Config(
                WebSocketShortcut(app, relay=self.relay),
                http=http,  # type: ignore[arg-type]
                ws=websocket,  # type: ignore[arg-type]
                # Frames above max_message_bytes get a MESSAGE_TOO_LARGE frame
                # from the relay; this hard limit only stops a peer from making
                # the server buffer an arbitrarily large one.
                ws_max_size=max(4 * config.max_message_bytes, 64 * 1024),
                # Chat frames are small; compression would cost tens of
                # kilobytes of zlib state per connection for little gain.
                ws_per_message_deflate=False,
                # Clients reach the pod through a Service or the activator,
                # never through a proxy on its own loopback (the only one
                # uvicorn would trust): its X-Forwarded-* layer would only
                # add a coroutine frame to every idle connection.
                proxy_headers=False,
                # The open protocols' services (the MCP session manager) run
                # for the life of the server.
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=_HTTP_GRACE_SECONDS,
                backlog=_BACKLOG,
                **guarding.uvicorn_limits(config),
            )
        )
        self._task: asyncio.Task[None] | None = None
        self._forced = asyncio.Event()

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Serve in a background task; returns once requests are accepted.

        Cancelling ``start`` leaves the task running; ``stop`` ends it.
        """
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the facade server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Drain (see ``Relay.drain``), linger, then stop serving. Idempotent.

        Takes up to ``drainTimeoutSeconds`` plus ``linger_seconds`` plus a
        few seconds of grace; ``force_stop`` from elsewhere (a second signal)
        shortens the wait.
        """
        await self.relay.drain(timeout=self.config.drain_timeout_seconds)
        if self.linger_seconds > 0 and not self._forced.is_set():
            logger.info("answering late connections with DRAINING for %ss", self.linger_seconds)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.linger_seconds):
                    await self._forced.wait()
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    def force_stop(self) -> None:
        """Stop without waiting for turns, late connections or requests (a second signal)."""
        self._forced.set()
        self._server.should_exit = True
        self._server.force_exit = True


async def run(
    config: AgentConfig,
    *,
    runtime_address: str,
    host: str = "0.0.0.0",
    port: int | None = None,
    registry: CollectorRegistry | None = None,
    linger_seconds: float = 0.0,
    http_parser: HttpParser = "h11",
) -> None:
    """Serve until SIGTERM or SIGINT, then drain, linger and return.

    Raises ``StartupError`` when ``facade.auth`` cannot be used as configured
    (API keys missing from the environment) or the port cannot be listened on.
    """
    loop = asyncio.get_running_loop()
    runtime = RuntimeClient.connect(runtime_address)
    port = config.facade.port if port is None else port
    try:
        app = create_app(
            config.facade,
            agent=config.name,
            runtime=runtime,
            registry=registry or CollectorRegistry(),
            profile=AgentProfile.of(config),
        )
        server = FacadeServer(
            app, config=config.facade, host=host, port=port, linger_seconds=linger_seconds, http_parser=http_parser
        )
    except ValueError as exc:
        await runtime.close()
        raise StartupError(f"facade.auth: {exc}") from None
    except OSError as exc:
        await runtime.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start()
        logger.info("facade of agent %s listening on %s", config.name, server.url)
        await stopping.wait()
        logger.info(
            "draining %d connections (up to %ss)",
            len(server.relay.connections),
            config.facade.drain_timeout_seconds,
        )
        for sig in signals:
            loop.add_signal_handler(sig, server.force_stop)
        await server.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runtime.close()
    logger.info("facade stopped")


def serve(
    config: AgentConfig,
    *,
    runtime_address: str,
    host: str = "0.0.0.0",
    port: int | None = None,
    linger_seconds: float = 0.0,
    speedups: Speedups = Speedups(),
) -> None:
    """Run the facade in this process until SIGTERM/SIGINT; blocking.

    ``port`` defaults to ``config.facade.port``; ``speedups`` chooses the
    event loop and the HTTP parser.
    """
    _raise_open_files_limit()
    speedups.run(
        run(
            config,
            runtime_address=runtime_address,
            host=host,
            port=port,
            linger_seconds=linger_seconds,
            http_parser=speedups.http_parser,
        )
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose
    # proto says TCP, and without it Nagle holds each chunk for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _raise_open_files_limit() -> None:
    """Every connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:
        return
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
