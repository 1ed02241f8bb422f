"""Running the operator: kopf configured for Omnia, cluster-wide or for some namespaces.

kopf runs *standalone*: no peering objects, so no kopf CRDs to install and
no RBAC for them. Cluster scanning is off too: the operator needs no rights
on CustomResourceDefinitions or Namespaces; the CRDs must be installed
before it starts, and ``--namespace`` takes exact names.

Without leader election the operator is meant to run as one replica. With
it (``leader_election_namespace``), any number of replicas wait for a Lease
and only its holder reconciles (see ``leading``); the others answer the
liveness probe meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence

import kopf

from omnia.operator import applying, builders, handlers, labels, leading, reconciling

QUIET_LOGGERS = ("kopf.objects", "kopf.activities", "httpx", "aiohttp.access")
"""Loggers that report every handler call and request at INFO: the operator logs its own outcomes."""

EXIT_LEADERSHIP_LOST = 1


def settings_for_omnia() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    # kopf would post an Event per handler run; the operator posts its own,
    # one per meaningful change, with reasons users can search for.
    settings.posting.enabled = False
    # Only the operator's own Deployments matter; filter them on the server.
    settings.watching.label_selectors[("apps", "v1", "deployments")] = f"{labels.MANAGED_BY}={labels.OPERATOR}"
    # Re-establish watches now and then, as client-go does.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def run(
    *,
    namespaces: Sequence[str] = (),
    liveness: str | None = "0.0.0.0:8080",
    defaults: builders.Defaults = builders.Defaults(),
    workers: int = 4,
    resync_seconds: float = 600.0,
    discovery_interval: float = reconciling.DISCOVERY_INTERVAL_SECONDS,
    leader_election_namespace: str | None = None,
) -> None:
    """Run the operator until SIGTERM or SIGINT.

    ``namespaces`` empty serves the whole cluster; ``liveness`` is the
    ``host:port`` of the liveness endpoint (``GET /healthz``, JSON with the
    reconcile counters), None for none. With ``leader_election_namespace``
    the operator first waits for the Lease ``omnia-operator`` there, and
    exits with status 1 if it loses it.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        lost = asyncio.run(_operate(namespaces=namespaces, liveness=liveness, defaults=defaults, workers=workers,
                                    resync_seconds=resync_seconds, discovery_interval=discovery_interval,
                                    leader_election_namespace=leader_election_namespace))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return
    if lost:
        raise SystemExit(EXIT_LEADERSHIP_LOST)


async def _operate(
    *,
    namespaces: Sequence[str],
    liveness: str | None,
    defaults: builders.Defaults,
    workers: int,
    resync_seconds: float,
    discovery_interval: float,
    leader_election_namespace: str | None,
) -> bool:
    """Run kopf (after winning the Lease, if asked); returns whether leadership was lost."""
    settings = settings_for_omnia()
    registry = kopf.OperatorRegistry()
    operator = handlers.Operator(defaults=defaults, workers=workers, resync_seconds=resync_seconds,
                                 discovery_interval=discovery_interval)
    handlers.register(registry, operator=operator)
    stop = asyncio.Event()
    elector = keeper = None
    if leader_election_namespace:
        elector = leading.Elector(applying.KubeClient.from_connection(applying.login(settings=settings)),
                                  namespace=leader_election_namespace)
        async with _standby_liveness(liveness):
            await elector.acquire()
        keeper = asyncio.create_task(elector.keep(on_lost=stop.set), name="omnia-leader-lease")
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=f"http://{liveness}/healthz" if liveness else None,
            stop_flag=stop,
        )
    finally:
        if keeper is not None and elector is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await elector.client.aclose()
    return elector is not None and elector.lost


@contextlib.asynccontextmanager
async def _standby_liveness(address: str | None) -> AsyncIterator[None]:
    """While a replica waits for the Lease it is alive, just not leading: answer 200 on any path."""
    if not address:
        yield
        return
    body = json.dumps({"leader": False}).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        writer.close()

    host, _, port = address.rpartition(":")
    server = await asyncio.start_server(answer, host or "0.0.0.0", int(port))
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
