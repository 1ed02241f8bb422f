"""The activator against a real API server: EndpointSlices, AgentRuntimes, and its least-privilege rights.

The slices are written by hand, as the EndpointSlice controller and the
operator write them in a cluster; the activator reads them under a
ServiceAccount bound to the read-only rules docs/scaling.md lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omnia._proto.externalscaler import externalscaler_pb2 as pb  # noqa: E402
from omnia._proto.externalscaler import externalscaler_pb2_grpc as pb_grpc  # noqa: E402
from omnia.activator.backends import Address  # noqa: E402
from omnia.activator.backends.kubernetes import KubernetesBackends  # noqa: E402
from omnia.activator.hosts import AgentRef  # noqa: E402
from omnia.operator import applying, credentials  # noqa: E402
from tests.operator import harness  # noqa: E402

pytestmark = pytest.mark.cluster

AGENT = "support-agent"
ACCOUNT = "omnia-activator"
RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": ["omnia.altairalabs.ai"], "resources": ["agentruntimes"], "verbs": ["list"]},
]


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture
def kubeconfig(control_plane, crds, namespace) -> Path:
    """The activator's ServiceAccount, bound cluster-wide to nothing but ``RULES``."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"omnia-activator-{namespace}"}, "rules": RULES}
    harness.apply(control_plane, role, namespace=namespace)
    control_plane.kubectl("create", "serviceaccount", ACCOUNT, f"--namespace={namespace}", check=True)
    control_plane.kubectl("create", "clusterrolebinding", f"omnia-activator-{namespace}",
                          f"--clusterrole=omnia-activator-{namespace}",
                          f"--serviceaccount={namespace}:{ACCOUNT}", check=True)
    token = control_plane.create_token(namespace=namespace, service_account=ACCOUNT)
    return control_plane.kubeconfig_for_token(token, name=f"activator-{namespace}")


def _agent(namespace: str, *, min_replicas: int) -> dict:
    return {
        "apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
        "metadata": {"name": AGENT, "namespace": namespace},
        "spec": {"promptPackRef": {"name": "prompts"},
                 "autoscaling": {"enabled": True, "engine": "keda", "minReplicas": min_replicas,
                                 "maxReplicas": 3}},
    }


def _slice(namespace: str, name: str, address: str, *, ready: bool) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": AGENT}},
        "addressType": "IPv4",
        "ports": [{"name": "ws", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}],
    }


async def _next_change(watch, previous):
    while True:
        addresses = await asyncio.wait_for(anext(watch), timeout=30)
        if addresses != previous:
            return addresses


async def test_ready_pods_are_seen_through_a_watch_and_the_activators_slice_is_not(
    control_plane, kubeconfig, namespace
) -> None:
    backends = KubernetesBackends(applying.http_client(credentials.Kubeconfig.load(str(kubeconfig))))
    agent = AgentRef(namespace=namespace, name=AGENT)
    try:
        harness.apply(control_plane, _agent(namespace, min_replicas=0), namespace=namespace)
        assert await backends.scale_to_zero_namespaces(AGENT) == [namespace]

        harness.apply(control_plane, _slice(namespace, f"{AGENT}-activator", "10.0.9.1", ready=True),
                      namespace=namespace)
        watch = backends.watch(agent)
        assert await asyncio.wait_for(anext(watch), timeout=30) == ()

        harness.apply(control_plane, _slice(namespace, f"{AGENT}-x7k2p", "10.0.0.5", ready=False),
                      namespace=namespace)
        harness.apply(control_plane, _slice(namespace, f"{AGENT}-x7k2p", "10.0.0.5", ready=True),
                      namespace=namespace)
        assert await _next_change(watch, ()) == (Address("10.0.0.5", 8080),)
        assert await backends.ready(agent) == (Address("10.0.0.5", 8080),)

        control_plane.kubectl("delete", "endpointslice", f"{AGENT}-x7k2p", f"--namespace={namespace}", check=True)
        assert await _next_change(watch, (Address("10.0.0.5", 8080),)) == ()
        await watch.aclose()

        harness.apply(control_plane, _agent(namespace, min_replicas=1), namespace=namespace)
        assert await backends.scale_to_zero_namespaces(AGENT) == []
    finally:
        await backends.aclose()


async def test_omnia_activator_holds_a_connection_reports_it_to_keda_and_drains_on_sigterm(
    control_plane, kubeconfig, namespace, spawned, tmp_path
) -> None:
    harness.apply(control_plane, _agent(namespace, min_replicas=0), namespace=namespace)
    port, scaler_port = harness.free_port(), harness.free_port()
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    with open(tmp_path / "activator.log", "wb") as log:
        process = spawned([sys.executable, "-m", "omnia", "activator", f"--kubeconfig={kubeconfig}",
                           "--host=127.0.0.1", f"--port={port}", f"--scaler-port={scaler_port}"],
                          env=env, stdout=log, stderr=log)
    ref = pb.ScaledObjectRef(name=AGENT, namespace=namespace,
                             scalerMetadata={"metricName": "active_connections", "targetValue": "10"})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler_port}") as channel:
            scaler = pb_grpc.ExternalScalerStub(channel)
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
            stream = scaler.StreamIsActive(ref)
            assert (await stream.read()).result is False
            uri = f"ws://{AGENT}.{namespace}.svc:{port}/ws"
            async with connect(uri, host="127.0.0.1", port=port, proxy=None) as ws:
                assert (await asyncio.wait_for(stream.read(), timeout=30)).result is True
                assert (await scaler.IsActive(ref)).result is True
                process.send_signal(signal.SIGTERM)
                error = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            stream.cancel()
        assert (error["code"], ws.close_code) == ("DRAINING", 1012)
        assert process.wait(timeout=30) == 0
    finally:
        print((tmp_path / "activator.log").read_text(errors="replace"))
