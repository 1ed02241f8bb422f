"""Running the activator: the HTTP/WebSocket server and the external scaler's gRPC server.

As the facade does, the activator takes SIGTERM and SIGINT itself rather
than leaving them to uvicorn, which would close every WebSocket at once: the
first signal drains (``Activator.drain``: ``/readyz`` 503, new and held
connections get ``DRAINING``, relayed ones get ``drain_timeout`` seconds to
end), then both servers stop; a second signal stops at once.

Client sockets get the facade's guards (``facade.guarding``: header
deadline, pending-connection caps, back-pressure on clients that do not
read), with the facade's default limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator

import grpc
import uvicorn
from prometheus_client import CollectorRegistry

from omnia._proto.externalscaler import externalscaler_pb2_grpc as pb_grpc
from omnia.activator import proxying
from omnia.activator.app import Activator
from omnia.activator.backends import Backends
from omnia.activator.demand import Demand
from omnia.activator.scaling import ExternalScaler
from omnia.activator.scraping import Scraper
from omnia.config import FacadeConfig
from omnia.facade import guarding
from omnia.termination import StartupError

logger = logging.getLogger(__name__)

QUIET_LOGGERS = ("httpx",)
"""Loggers that report every request at INFO: each KEDA poll reads the cluster and the agent's pods."""

DRAIN_TIMEOUT_SECONDS = 25.0
_BACKLOG = 4096
_MAX_CLIENT_FRAME_BYTES = 1024 * 1024


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # Signals belong to ``run``, which drains before stopping uvicorn.
        yield


class ActivatorServer:
    """Both servers, started and stopped from a running event loop; no signal handlers.

    ``port`` and ``scaler_port`` 0 pick free ports (read them back after ``start``).
    """

    def __init__(self, *, backends: Backends, host: str = "0.0.0.0", port: int = 8080, scaler_port: int = 9090,
                 max_held: int = 1000, max_held_per_agent: int = 100, wake_timeout: float = 60.0, drain_timeout: float = DRAIN_TIMEOUT_SECONDS,
                 registry: CollectorRegistry | None = None, scraper: Scraper | None = None) -> None:
        self.host = host
        self.drain_timeout = drain_timeout
        self._requested_scaler_port = scaler_port
        self._backends = backends
        self._max_held = max_held
        self._max_held_per_agent = max_held_per_agent
        self._wake_timeout = wake_timeout
        self._registry = registry or CollectorRegistry()
        self._scraper = scraper
        self._socket = _bind(host, port)
        self.app: Activator | None = None
        self.scaler: ExternalScaler | None = None
        self.scaler_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._uvicorn: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen on both ports; returns once both accept. ``StartupError`` if the scaler port is taken."""
        demand = Demand(max_held=self._max_held, max_held_per_agent=self._max_held_per_agent,
                        remember_seconds=self._wake_timeout)
        self.app = Activator(backends=self._backends, demand=demand, registry=self._registry,
                             settings=proxying.Settings(wake_timeout_seconds=self._wake_timeout))
        self._scraper = self._scraper or Scraper()
        self.scaler = ExternalScaler(demand=demand, backends=self._backends, scraper=self._scraper)
        self._grpc = grpc.aio.server()
        pb_grpc.add_ExternalScalerServicer_to_server(self.scaler, self._grpc)
        address = f"[{self.host}]:{self._requested_scaler_port}" if ":" in self.host \
            else f"{self.host}:{self._requested_scaler_port}"
        try:
            self.scaler_port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            self._socket.close()
            raise StartupError(f"cannot listen on {address}: {exc}") from None
        await self._grpc.start()
        limits = FacadeConfig()
        http, websocket = guarding.protocols(limits)
        self._uvicorn = _Server(uvicorn.Config(
            self.app, http=http, ws=websocket,  # type: ignore[arg-type]
            ws_max_size=_MAX_CLIENT_FRAME_BYTES, ws_per_message_deflate=False,
            lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=5.0, backlog=_BACKLOG,
            **guarding.uvicorn_limits(limits),
        ))
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[self._socket]))
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the activator's server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Drain (``Activator.drain``), then stop both servers. Idempotent."""
        if self.app is not None:
            await self.app.drain(timeout=self.drain_timeout)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        if self._scraper is not None:
            await self._scraper.aclose()

    def force_stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            self._uvicorn.force_exit = True


@contextlib.asynccontextmanager
async def running(server: ActivatorServer) -> AsyncIterator[ActivatorServer]:
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def run(server: ActivatorServer) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start()
        logger.info("activator listening on %s, external scaler on port %d", server.url, server.scaler_port)
        await stopping.wait()
        assert server.app is not None
        logger.info("draining %d connections (up to %ss)", len(server.app.connections), server.drain_timeout)
        for sig in signals:
            loop.add_signal_handler(sig, server.force_stop)
        await server.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    logger.info("activator stopped")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
