"""Running the operator: kopf configured for Omnia, cluster-wide or for some namespaces.

kopf runs *standalone*: no peering objects, so no kopf CRDs to install and
no RBAC for them. Cluster scanning is off too: the operator needs no rights
on CustomResourceDefinitions or Namespaces; the CRDs must be installed
before it starts, and ``--namespace`` takes exact names.

Without leader election the operator is meant to run as one replica. With
it (``leader_election_namespace``), any number of replicas wait for a Lease
and only its holder reconciles (see ``leading``); the others answer the
liveness probe meanwhile.

The Prometheus metrics (``metrics``) are served on a port of their own, by
prometheus_client's threaded HTTP server, rather than on kopf's liveness
endpoint: kopf's server answers only its probe, and a standby replica, which
serves a stand-in probe instead, must still be scraped (it reports
``omnia_operator_leader 0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from omnia.operator import applying, builders, handlers, labels, leading, metering, metrics, reconciling, routing

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
    # Pods too, and only those of agents: a cluster's other pods change all the time.
    settings.watching.label_selectors[("", "v1", "pods")] = (
        f"{labels.NAME}={labels.AGENT_NAME},{labels.MANAGED_BY}={labels.OPERATOR}"
    )
    # And EndpointSlices: only the agents' <agent>-activator ones (routing).
    settings.watching.label_selectors[("discovery.k8s.io", "v1", "endpointslices")] = (
        f"{routing.MANAGED_BY_LABEL}={routing.MANAGER}"
    )
    # Re-establish watches now and then, as client-go does.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def run(
    *,
    namespaces: Sequence[str] = (),
    liveness: str | None = "0.0.0.0:8080",
    metrics_address: str | None = "0.0.0.0:9090",
    defaults: builders.Defaults = builders.Defaults(),
    workers: int = handlers.WORKERS,
    resync_seconds: float = 600.0,
    discovery_interval: float = reconciling.DISCOVERY_INTERVAL_SECONDS,
    budget_interval: float = metering.INTERVAL_SECONDS,
    leader_election_namespace: str | None = None,
) -> None:
    """Run the operator until SIGTERM or SIGINT.

    ``namespaces`` empty serves the whole cluster; ``liveness`` is the
    ``host:port`` of the liveness endpoint (``GET /healthz``, JSON with the
    reconcile counters), None for none; ``metrics_address`` that of the
    Prometheus metrics (``GET /metrics``), None for none; ``budget_interval``
    the seconds between readings of the budget counters (``metering``). With ``leader_election_namespace``
    the operator first waits for the Lease ``omnia-operator`` there, and
    exits with status 1 if it loses it.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        lost = asyncio.run(_operate(namespaces=namespaces, liveness=liveness, metrics_address=metrics_address,
                                    defaults=defaults, workers=workers,
                                    resync_seconds=resync_seconds, discovery_interval=discovery_interval,
                                    budget_interval=budget_interval,
                                    leader_election_namespace=leader_election_namespace))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return
    if lost:
        raise SystemExit(EXIT_LEADERSHIP_LOST)


async def _operate(
    *,
    namespaces: Sequence[str],
    liveness: str | None,
    metrics_address: str | None,
    defaults: builders.Defaults,
    workers: int,
    resync_seconds: float,
    discovery_interval: float,
    budget_interval: float,
    leader_election_namespace: str | None,
) -> bool:
    """Serve the metrics and run the operator; returns whether leadership was lost."""
    settings = settings_for_omnia()
    registry = kopf.OperatorRegistry()
    collectors = CollectorRegistry()
    measured = metrics.Metrics(collectors)
    operator = handlers.Operator(defaults=defaults, workers=workers, resync_seconds=resync_seconds,
                                 discovery_interval=discovery_interval, budget_interval=budget_interval,
                                 metrics=measured)
    handlers.register(registry, operator=operator)
    with serving_metrics(metrics_address, registry=collectors):
        return await _lead(operator, registry=registry, settings=settings, measured=measured, namespaces=namespaces,
                           liveness=liveness, leader_election_namespace=leader_election_namespace)


async def _lead(
    operator: handlers.Operator,
    *,
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    measured: metrics.Metrics,
    namespaces: Sequence[str],
    liveness: str | None,
    leader_election_namespace: str | None,
) -> bool:
    """Run kopf (after winning the Lease, if asked); returns whether leadership was lost."""
    stop = asyncio.Event()
    elector = keeper = None

    def lost() -> None:
        measured.leader.set(0)
        stop.set()

    if leader_election_namespace:
        elector = leading.Elector(applying.KubeClient.connect(settings),
                                  namespace=leader_election_namespace)
        async with _standby_liveness(liveness):
            await elector.acquire()
        keeper = asyncio.create_task(elector.keep(on_lost=lost), name="omnia-leader-lease")
    measured.leader.set(1)
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


@contextlib.contextmanager
def serving_metrics(address: str | None, *, registry: CollectorRegistry) -> Iterator[None]:
    """Serve ``registry`` on ``address`` (``GET /metrics``) from a daemon thread meanwhile.

    Fails at once with OSError when the port is taken, before the operator
    starts reconciling.
    """
    if not address:
        yield
        return
    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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
