"""KEDA's external scaler, served by the activator: KEDA scales, the activator tells it when.

A ScaledObject's ``external-push`` trigger names the activator and the
agent in its metadata::

    scalerAddress: omnia-activator.omnia-system.svc:9090
    agent: support-agent        # default: the ScaledObject's name
    namespace: team-a           # default: the ScaledObject's namespace
    metricName: active_connections
    targetValue: "10"           # connections per pod

- ``IsActive``: a connection is held for the agent (or a plain request found
  it at zero within the wake timeout), or its pods report open connections;
- ``StreamIsActive``: the same, sent when the stream opens and again when it
  changes, and ``true`` *at once* each time a connection is held for the
  agent: that push is what wakes an agent at zero without waiting for
  KEDA's polling interval;
- ``GetMetricSpec``: ``active_connections`` with ``targetValue``
  (``StreamMetricSpec`` is ``UNIMPLEMENTED``: the target never changes);
- ``GetMetrics``: held connections plus the sum of ``omnia_active_connections``
  read from the agent's ready pods (``scraping``).

Bad metadata is ``INVALID_ARGUMENT`` with a message naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc
import httpx

from omnia._proto.externalscaler import externalscaler_pb2 as pb
from omnia._proto.externalscaler import externalscaler_pb2_grpc as pb_grpc
from omnia.activator.backends import Backends
from omnia.activator.demand import Demand
from omnia.activator.hosts import AgentRef
from omnia.activator.scraping import Scraper

logger = logging.getLogger(__name__)

METRIC_NAME = "active_connections"
RECHECK_SECONDS = 10.0
"""How often an open ``StreamIsActive`` reads the pods again, to report the agent going idle."""


@dataclass(frozen=True)
class Trigger:
    """A trigger's metadata, checked."""

    agent: AgentRef
    metric_name: str
    target: float | None


class InvalidMetadata(ValueError):
    pass


class BackendsUnavailable(Exception):
    pass


def parse_trigger(ref: pb.ScaledObjectRef) -> Trigger:
    """The agent and target of a ScaledObjectRef; :class:`InvalidMetadata` names what is wrong."""
    metadata: Mapping[str, str] = ref.scalerMetadata
    name = metadata.get("agent") or ref.name
    namespace = metadata.get("namespace") or ref.namespace
    if not name or not namespace:
        raise InvalidMetadata("the trigger's metadata must name the agent (agent) and its namespace (namespace)")
    metric_name = metadata.get("metricName") or METRIC_NAME
    if metric_name != METRIC_NAME:
        raise InvalidMetadata(f"metricName {metric_name!r} is not served here; the activator serves {METRIC_NAME}")
    target = None
    if "targetValue" in metadata:
        try:
            target = float(metadata["targetValue"])
        except ValueError:
            target = math.nan
        if not (math.isfinite(target) and target > 0):
            raise InvalidMetadata(f"targetValue {metadata['targetValue']!r} is not a positive number")
    return Trigger(agent=AgentRef(namespace=namespace, name=name), metric_name=metric_name, target=target)


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    def __init__(self, *, demand: Demand, backends: Backends, scraper: Scraper,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._demand = demand
        self._backends = backends
        self._scraper = scraper
        self._recheck_seconds = recheck_seconds

    async def connections(self, agent: AgentRef) -> float:
        """Held connections plus those the agent's ready pods report.

        Raises :class:`BackendsUnavailable` when the pods cannot be listed:
        KEDA then keeps the last answer rather than reading a false 0.
        """
        try:
            addresses = await self._backends.ready(agent)
        except httpx.HTTPError as exc:
            raise BackendsUnavailable(f"cannot list the pods of agent {agent}: {exc}") from exc
        served = await self._scraper.active_connections(addresses, agent=agent.name)
        return self._demand.held(agent) + served

    async def active(self, agent: AgentRef) -> bool:
        return self._demand.requested(agent) or await self.connections(agent) > 0

    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:
        trigger = await _trigger(request, context)
        async with _answering(context):
            return pb.IsActiveResponse(result=await self.active(trigger.agent))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IsActiveResponse]:
        trigger = await _trigger(request, context)
        agent = trigger.agent
        woken = asyncio.Event()

        def on_demand(demanded: AgentRef) -> None:
            if demanded == agent:
                woken.set()

        with self._demand.subscribe(on_demand):
            async with _answering(context):
                last = await self.active(agent)
                yield pb.IsActiveResponse(result=last)
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._recheck_seconds):
                            await woken.wait()
                    if woken.is_set():
                        woken.clear()
                        last = True
                        yield pb.IsActiveResponse(result=True)
                        continue
                    now = await self.active(agent)
                    if now != last:
                        last = now
                        yield pb.IsActiveResponse(result=now)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        trigger = await _trigger(request, context)
        if trigger.target is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the trigger's metadata needs targetValue")
        target = trigger.target or 1.0
        return pb.GetMetricSpecResponse(metricSpecs=[
            pb.MetricSpec(metricName=trigger.metric_name, targetSize=math.ceil(target), targetSizeFloat=target)
        ])

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> None:
        """Not offered: the spec is the trigger's ``targetValue``, fixed for the ScaledObject's life.

        KEDA (2.21 on) opens this stream for every ``external-push`` trigger
        and takes ``UNIMPLEMENTED`` as its cue to keep calling GetMetricSpec.
        The generated base class answers the same but by raising, which gRPC
        logs as an error with a traceback each time.
        """
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "the metric spec is the trigger's targetValue and does not change: use GetMetricSpec")

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        trigger = await _trigger(request.scaledObjectRef, context)
        async with _answering(context):
            value = await self.connections(trigger.agent)
        return pb.GetMetricsResponse(metricValues=[
            pb.MetricValue(metricName=request.metricName or trigger.metric_name, metricValue=math.ceil(value),
                           metricValueFloat=value)
        ])


async def _trigger(ref: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> Trigger:
    try:
        return parse_trigger(ref)
    except InvalidMetadata as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise


@contextlib.asynccontextmanager
async def _answering(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    try:
        yield
    except BackendsUnavailable as exc:
        logger.warning("%s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
