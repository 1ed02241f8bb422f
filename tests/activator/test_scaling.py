"""KEDA's external scaler, called with a real gRPC client and the generated stubs.

The facades whose ``/metrics`` GetMetrics sums are real ones, on loopback
(over a scripted runtime: only their connection gauge matters here).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from omnia._proto.externalscaler import externalscaler_pb2 as pb
from omnia._proto.externalscaler import externalscaler_pb2_grpc as pb_grpc
from omnia.activator import ActivatorServer, Address, MemoryBackends
from omnia.activator.scaling import InvalidMetadata, parse_trigger
from omnia.config import FacadeConfig
from omnia.facade import auth
from omnia.facade.app import create_app
from omnia.facade.runtime_client import RuntimeClient
from omnia.facade.server import FacadeServer
from tests.facade.harness import RuntimeDouble

from .harness import AGENT, dial, held

METADATA = {"agent": AGENT.name, "namespace": AGENT.namespace, "metricName": "active_connections",
            "targetValue": "10"}


def _ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="scaled-object", namespace="keda-side",
                              scalerMetadata={**METADATA, **metadata})


@pytest.fixture
async def scaler(activator: ActivatorServer) -> AsyncIterator[pb_grpc.ExternalScalerStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{activator.scaler_port}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)


@pytest.fixture
async def facades() -> AsyncIterator[list[FacadeServer]]:
    """Two real facades of the agent, as two ready pods would be."""
    runtime = RuntimeDouble()
    await runtime.start()
    servers, clients = [], []
    config = FacadeConfig(port=0)
    for _ in range(2):
        client = RuntimeClient.connect(runtime.address, open_timeout=2.0, health_timeout=0.5)
        app = create_app(config, agent=AGENT.name, runtime=client, registry=CollectorRegistry(),
                         authenticator=auth.Anonymous())
        server = FacadeServer(app, config=config, host="127.0.0.1", port=0)
        await server.start()
        servers.append(server)
        clients.append(client)
    yield servers
    for server, client in zip(servers, clients):
        await server.stop()
        await client.close()
    await runtime.kill()


async def test_stream_is_active_pushes_true_as_soon_as_a_connection_is_held(
    activator: ActivatorServer, scaler: pb_grpc.ExternalScalerStub
) -> None:
    """That push is what makes KEDA wake the agent without waiting for its polling interval."""
    stream = scaler.StreamIsActive(_ref())
    assert (await stream.read()).result is False
    async with dial(activator):
        await held(activator, 1)
        assert (await asyncio.wait_for(stream.read(), timeout=10)).result is True
    stream.cancel()


async def test_is_active_while_a_connection_is_held_or_a_pod_serves_one(
    activator: ActivatorServer, scaler: pb_grpc.ExternalScalerStub, backends: MemoryBackends,
    facades: list[FacadeServer],
) -> None:
    assert (await scaler.IsActive(_ref())).result is False
    async with dial(activator):
        await held(activator, 1)
        assert (await scaler.IsActive(_ref())).result is True
        assert (await scaler.IsActive(_ref(agent="billing"))).result is False
    await held(activator, 0)
    assert (await scaler.IsActive(_ref())).result is False

    await backends.set_ready(AGENT, [Address("127.0.0.1", facades[0].port)])
    async with connect(facades[0].url.replace("http", "ws") + "/ws", proxy=None) as ws:
        await ws.recv()
        assert (await scaler.IsActive(_ref())).result is True


async def test_get_metrics_is_held_connections_plus_those_the_facades_report(
    activator: ActivatorServer, scaler: pb_grpc.ExternalScalerStub, backends: MemoryBackends,
    facades: list[FacadeServer],
) -> None:
    request = pb.GetMetricsRequest(scaledObjectRef=_ref(), metricName="active_connections")
    async with dial(activator), dial(activator):
        await held(activator, 2)
        values = (await scaler.GetMetrics(request)).metricValues
        assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in values] == [
            ("active_connections", 2, 2.0)
        ]

    # Three connections on two facades, and a third "pod" that does not answer: it counts 0.
    await backends.set_ready(AGENT, [Address("127.0.0.1", server.port) for server in facades]
                             + [Address("127.0.0.1", _closed_port())])
    urls = [facades[0].url, facades[0].url, facades[1].url]
    sockets = [await connect(url.replace("http", "ws") + "/ws", proxy=None) for url in urls]
    try:
        for ws in sockets:
            await ws.recv()
        values = (await scaler.GetMetrics(request)).metricValues
        assert [(v.metricValue, v.metricValueFloat) for v in values] == [(3, 3.0)]
    finally:
        for ws in sockets:
            await ws.close()


async def test_get_metric_spec_is_active_connections_with_the_target(
    scaler: pb_grpc.ExternalScalerStub,
) -> None:
    specs = (await scaler.GetMetricSpec(_ref(targetValue="2.5"))).metricSpecs
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in specs] == [("active_connections", 3, 2.5)]


async def test_stream_metric_spec_is_unimplemented_quietly_so_keda_keeps_to_get_metric_spec(
    activator: ActivatorServer, scaler: pb_grpc.ExternalScalerStub, caplog: pytest.LogCaptureFixture
) -> None:
    """KEDA opens this stream for every external-push trigger; only UNIMPLEMENTED makes it stop asking.

    The generated base class answers UNIMPLEMENTED too, but by raising: gRPC
    then logs an error with a traceback each time a ScaledObject is set up.
    """
    stream = scaler.StreamMetricSpec(_ref())
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stream.read()
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "GetMetricSpec" in (failed.value.details() or "")


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        pytest.param({"targetValue": "many"}, "targetValue 'many' is not a positive number", id="not a number"),
        pytest.param({"targetValue": "0"}, "not a positive number", id="zero"),
        pytest.param({"targetValue": "nan"}, "not a positive number", id="nan"),
        pytest.param({"metricName": "memory"}, "metricName 'memory' is not served", id="other metric"),
    ],
)
async def test_bad_trigger_metadata_is_invalid_argument_naming_the_field(
    scaler: pb_grpc.ExternalScalerStub, metadata: dict[str, str], says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scaler.GetMetricSpec(_ref(**metadata))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in (refused.value.details() or "")


def test_agent_and_namespace_default_to_the_scaled_objects() -> None:
    trigger = parse_trigger(pb.ScaledObjectRef(name="support-agent", namespace="team-a",
                                               scalerMetadata={"targetValue": "10"}))
    assert (str(trigger.agent), trigger.metric_name, trigger.target) == ("team-a/support-agent",
                                                                          "active_connections", 10.0)
    with pytest.raises(InvalidMetadata, match="must name the agent"):
        parse_trigger(pb.ScaledObjectRef(scalerMetadata={}))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
