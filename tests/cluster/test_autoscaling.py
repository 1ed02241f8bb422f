"""KEDA for real on the test control plane: the ScaledObjects the operator writes are accepted and acted on.

KEDA's operator and metrics API server run as processes (``autoscaling.Keda``),
kube-controller-manager evaluates the HPAs KEDA creates through KEDA's
``external.metrics.k8s.io`` API, and KWOK makes the pods Ready. The metric
sources are small servers of the test on loopback: a Prometheus HTTP API that
answers one value and records the queries it was asked, and a KEDA external
scaler (KEDA's own gRPC protocol, through the stubs scripts/gen-protos
generates from the proto in KEDA's Go module). metrics-server needs a real kubelet; here it is started
against the fake nodes only to check that it is served, with no node to scrape.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

import autoscaling

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omnia.api.v1alpha1 import parse_manifest  # noqa: E402
from omnia.operator import builders  # noqa: E402
from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

SESSION_SECRET = "omnia-session-redis"
REDIS_URL = "redis://:not-a-real-password@redis.invalid:6379/0"


# --- the metric sources ------------------------------------------------------------------


class FakePrometheus:
    """Prometheus's instant-query API (``GET /api/v1/query``) on loopback: one value for every query.

    It records each query string it receives, so a test can check what KEDA
    sent, byte for byte.
    """

    def __init__(self, value: float) -> None:
        self.value = value
        self.queries: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                owner.queries.append(query)
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [0, str(owner.value)]}]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-prometheus", daemon=True)

    def __enter__(self) -> FakePrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def externalscaler():
    """The Python modules scripts/gen-protos generates from KEDA's externalscaler.proto."""
    from omnia._proto.externalscaler import externalscaler_pb2, externalscaler_pb2_grpc

    return externalscaler_pb2, externalscaler_pb2_grpc


class ExternalScaler:
    """A KEDA external-push scaler whose activity the test switches; records the calls KEDA makes."""

    def __init__(self, modules) -> None:
        self.pb2, self.pb2_grpc = modules
        self.active = False
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._changed = threading.Condition()
        self._stopping = False
        servicer = self._servicer()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="external-scaler"))
        self.pb2_grpc.add_ExternalScalerServicer_to_server(servicer, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def set_active(self, active: bool) -> None:
        with self._changed:
            self.active = active
            self._changed.notify_all()

    def called(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def _servicer(self):
        scaler = self
        pb2 = self.pb2

        class Servicer(self.pb2_grpc.ExternalScalerServicer):
            def IsActive(self, request, context):  # noqa: N802 - the proto's names
                scaler.calls.append(("IsActive", dict(request.scalerMetadata)))
                return pb2.IsActiveResponse(result=scaler.active)

            def StreamIsActive(self, request, context):  # noqa: N802
                scaler.calls.append(("StreamIsActive", dict(request.scalerMetadata)))
                with scaler._changed:
                    sent = scaler.active
                yield pb2.IsActiveResponse(result=sent)
                while context.is_active() and not scaler._stopping:
                    with scaler._changed:
                        scaler._changed.wait(timeout=0.5)
                        current = scaler.active
                    if current != sent:
                        sent = current
                        yield pb2.IsActiveResponse(result=sent)

            def GetMetricSpec(self, request, context):  # noqa: N802
                scaler.calls.append(("GetMetricSpec", dict(request.scalerMetadata)))
                return pb2.GetMetricSpecResponse(metricSpecs=[pb2.MetricSpec(metricName="held", targetSizeFloat=1)])

            def GetMetrics(self, request, context):  # noqa: N802
                scaler.calls.append(("GetMetrics", dict(request.scaledObjectRef.scalerMetadata)))
                return pb2.GetMetricsResponse(
                    metricValues=[pb2.MetricValue(metricName="held", metricValueFloat=1 if scaler.active else 0)])

        return Servicer()

    def __enter__(self) -> ExternalScaler:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._server.stop(grace=1).wait(timeout=10)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


def omnia_operator(plane, namespace: str, log_file: Path, *extra: str) -> harness.OperatorProcess:
    kubeconfig = harness.operator_kubeconfig(plane, home=namespace, namespaces=[namespace])
    harness.apply(plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SESSION_SECRET},
                          "stringData": {"url": REDIS_URL}}, namespace=namespace)
    return harness.OperatorProcess(
        kubeconfig=kubeconfig, namespaces=[namespace], log_file=log_file,
        extra_args=[f"--default-session-secret=redis={namespace}/{SESSION_SECRET}:url", *extra])


@contextlib.contextmanager
def running(process: harness.OperatorProcess) -> Iterator[harness.OperatorProcess]:
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(80)}")


def agent(name: str, autoscaling_spec: dict) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime", "metadata": {"name": name},
            "spec": {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"},
                     "autoscaling": autoscaling_spec}}


def pack_and_provider() -> list[dict]:
    return [
        {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider", "metadata": {"name": "mock"},
         "spec": {"type": "mock"}},
        {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": "prompts"},
         "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
    ]


def sleeper(name: str, *, replicas: int = 0) -> dict:
    """A Deployment of a pod KWOK makes Ready without running anything."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "registry.invalid/sleeper"}]}}}}


def raw(plane, path: str) -> dict:
    return json.loads(plane.kubectl("get", "--raw", path, check=True).stdout)


def scaled_object_ready(plane, namespace: str, name: str) -> dict | None:
    scaled = get(plane, f"scaledobject/{name}", namespace)
    return scaled if condition(scaled, "Ready").get("status") == "True" else None


def replicas(plane, namespace: str, name: str) -> tuple[int, int]:
    deployment = get(plane, f"deployment/{name}", namespace)
    return deployment["spec"].get("replicas", 1), deployment.get("status", {}).get("readyReplicas", 0)


# --- KEDA accepts and acts on the operator's ScaledObjects ---------------------------------


def test_keda_starts_with_all_its_crds_and_serves_the_external_metrics_api(control_plane, keda_system):
    """Every CRD KEDA's operator watches is installed; its metrics API server is an Available APIService."""
    assert sorted(keda_system.crds) == [
        "cloudeventsources.eventing.keda.sh", "clustercloudeventsources.eventing.keda.sh",
        "clustertriggerauthentications.keda.sh", "scaledjobs.keda.sh", "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
    ]
    listing = raw(control_plane, "/apis/external.metrics.k8s.io/v1beta1")
    assert listing["groupVersion"] == "external.metrics.k8s.io/v1beta1"
    assert f'version="{autoscaling.KEDA_VERSION}"' in next(
        line for line in keda_system.metrics().splitlines() if line.startswith("keda_build_info{"))


def test_an_agents_scaled_object_is_ready_and_its_hpa_follows_the_prometheus_query(
    control_plane, crds, keda_system, namespace, tmp_path
):
    """Engine keda, scale to zero on active_connections: KEDA makes keda-hpa-<agent>, reports Ready, asks
    Prometheus exactly the operator's label-based query, wakes the Deployment from zero and, through its
    external metrics API, kube-controller-manager's HPA scales it to ceil(250 / 100) = 3 replicas."""
    name = "web-agent"
    spec = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 4,
            "metrics": [{"type": "custom", "name": "active_connections", "target": 100}]}
    with FakePrometheus(value=250) as prometheus, \
            running(omnia_operator(control_plane, namespace, tmp_path / "operator.log",
                                   f"--prometheus-url={prometheus.url}")):
        harness.apply(control_plane, [*pack_and_provider(), agent(name, spec)], namespace=namespace)
        scaled = wait_for(lambda: scaled_object_ready(control_plane, namespace, name), timeout=90,
                          what="the ScaledObject Ready",
                          explain=lambda: (get(control_plane, f"scaledobject/{name}", namespace) or {}).get("status"))
        query = builders.prometheus_query("active_connections", namespace=namespace, agent=name)
        assert scaled["spec"]["triggers"][0]["metadata"]["query"] == query
        assert scaled["status"]["hpaName"] == f"keda-hpa-{name}"

        hpa = wait_for(lambda: get(control_plane, f"horizontalpodautoscaler/keda-hpa-{name}", namespace),
                       timeout=60, what="KEDA's HPA")
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"scaledobject.keda.sh/name": name}
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "100"}

        wait_for(lambda: query in prometheus.queries, timeout=60, what="KEDA's query to Prometheus",
                 explain=lambda: prometheus.queries[-3:])
        assert set(prometheus.queries) == {query}
        wait_for(lambda: replicas(control_plane, namespace, name) == (3, 3), timeout=120,
                 what="3 ready replicas", explain=lambda: (
                     replicas(control_plane, namespace, name),
                     get(control_plane, f"horizontalpodautoscaler/keda-hpa-{name}", namespace).get("status")))


@pytest.mark.parametrize("name", [
    pytest.param("support-agent", id="hyphen"),
    pytest.param("support.agent.v2", id="dots"),
    pytest.param("a-b.c-d", id="both"),
])
def test_the_operators_scaled_object_for_any_name_reaches_prometheus_intact(control_plane, keda_system, namespace, name):
    """The ScaledObject the operator's builder writes, for names with '-' and '.', is accepted by KEDA
    (Ready, keda-hpa-<name>) and the query KEDA sends Prometheus is the builder's, unaltered.

    Applied directly rather than through the operator: a name with a '.' is a valid Deployment, HPA and
    ScaledObject name but not a valid Service name, so the operator cannot deploy such an agent.
    """
    spec = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 3,
            "metrics": [{"type": "custom", "name": "active_connections", "target": 10}]}
    runtime = parse_manifest({**agent(name, spec), "metadata": {"name": name, "namespace": namespace}})
    with FakePrometheus(value=0) as prometheus:
        scaled = builders.build_scaled_object(runtime, prometheus_url=prometheus.url)
        query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        assert f'agent="{name}"' in query
        harness.apply(control_plane, [sleeper(name), scaled], namespace=namespace)
        wait_for(lambda: scaled_object_ready(control_plane, namespace, name), timeout=90, what="Ready",
                 explain=lambda: (get(control_plane, f"scaledobject/{name}", namespace) or {}).get("status"))
        hpa = wait_for(lambda: get(control_plane, f"horizontalpodautoscaler/keda-hpa-{name}", namespace),
                       timeout=60, what="KEDA's HPA")
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        wait_for(lambda: prometheus.queries, timeout=60, what="a query to Prometheus")
        assert set(prometheus.queries) == {query}
        # Nothing active (Prometheus answers 0): KEDA says so, and the Deployment stays at zero.
        wait_for(lambda: condition(get(control_plane, f"scaledobject/{name}", namespace), "Active").get("status")
                 == "False", timeout=60, what="Active=False")
        assert replicas(control_plane, namespace, name) == (0, 0)


def test_keda_wakes_a_deployment_from_zero_on_an_external_push_and_lets_it_sleep_again(
    control_plane, keda_system, namespace, externalscaler
):
    """An external-push trigger at a scaler on loopback: at rest nothing runs; the scaler pushes
    active=true and KEDA scales 0 → 1; it turns inactive and, after the cooldown, KEDA scales to 0."""
    name = "sleeper"
    with ExternalScaler(externalscaler) as scaler:
        scaled = {
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 0, "maxReplicaCount": 2,
                     "pollingInterval": 1, "cooldownPeriod": 2,
                     "triggers": [{"type": "external-push", "metadata": {
                         "scalerAddress": scaler.address, "agent": name, "namespace": namespace}}]},
        }
        harness.apply(control_plane, [sleeper(name), scaled], namespace=namespace)
        wait_for(lambda: scaled_object_ready(control_plane, namespace, name), timeout=90, what="Ready",
                 explain=lambda: (get(control_plane, f"scaledobject/{name}", namespace) or {}).get("status"))
        wait_for(lambda: scaler.called("StreamIsActive") and scaler.called("IsActive") >= 2, timeout=60,
                 what="KEDA polling the scaler and holding its stream", explain=lambda: scaler.calls[-5:])
        assert replicas(control_plane, namespace, name) == (0, 0)
        assert ("StreamIsActive", {"scalerAddress": scaler.address, "agent": name, "namespace": namespace}) \
            in scaler.calls

        scaler.set_active(True)
        wait_for(lambda: replicas(control_plane, namespace, name) == (1, 1), timeout=60, what="woken: 1 ready",
                 explain=lambda: replicas(control_plane, namespace, name))
        active = get(control_plane, f"scaledobject/{name}", namespace)
        assert condition(active, "Active").get("status") == "True"

        scaler.set_active(False)
        wait_for(lambda: replicas(control_plane, namespace, name) == (0, 0), timeout=90, what="back to zero",
                 explain=lambda: replicas(control_plane, namespace, name))
        wait_for(lambda: condition(get(control_plane, f"scaledobject/{name}", namespace), "Active").get("status")
                 == "False", timeout=30, what="Active=False")


# --- metrics-server ----------------------------------------------------------------------


def test_metrics_server_is_served_as_the_resource_metrics_api(control_plane, metrics_server_binary):
    """Started by the helper the real node uses: an Available v1beta1.metrics.k8s.io, answering for the
    nodes it scrapes (none here: KWOK's nodes have no kubelet API, and the real node is not started)."""
    with autoscaling.metrics_server(control_plane) as server:
        nodes = raw(control_plane, "/apis/metrics.k8s.io/v1beta1/nodes")
        assert nodes["kind"] == "NodeMetricsList" and nodes["items"] == []
        assert server.process is not None and server.process.exited() is None
    assert control_plane.kubectl("get", "apiservice/v1beta1.metrics.k8s.io").returncode != 0
