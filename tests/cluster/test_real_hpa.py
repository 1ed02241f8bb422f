"""Autoscaling evaluated on the real node: the HPA of a real agent reads live metrics and moves its pods.

Everything a cluster would run is here: metrics-server scrapes the real
kubelet (memory), KEDA's operator and metrics API server serve the HPA it
makes for the agent's ScaledObject, and the activator runs as a pod and
answers KEDA's external scaler with the ``active_connections`` it reads from
the agent's facades. The operator (a process of the test, deploy/rbac's
rights) writes the ScaledObject. The test opens WebSockets until the target is
crossed, watches the Deployment grow, closes them and watches it shrink once
the (shortened) scale-down window has passed.

KEDA's operator runs on the host, where ``*.svc`` names do not resolve; it
dials the activator's Service by name, so it runs in a mount namespace of its
own whose ``/etc/resolv.conf`` names the node's CoreDNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from websockets.sync.client import ClientConnection, connect

import autoscaling
import realnode
import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

API = "omnia.altairalabs.ai/v1alpha1"
AGENT = "busy-agent"
ACTIVATOR = "omnia-activator"
SELECTOR = f"app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance={AGENT}"
TARGET = 2  # active connections per pod
CONNECTIONS = 5  # ceil(5 / 2) = 3 pods, the maximum
WINDOW = 20  # seconds; production default 300
HPA_SYNC_PERIOD = 15  # kube-controller-manager's default, which the test control plane keeps


def activator_objects(namespace: str, image: str) -> list[dict]:
    """deploy/rbac/activator.yaml's identity and rights, and the chart's Deployment and Service, in ``namespace``."""
    rbac = [doc for doc in yaml.safe_load_all((harness.REPO / "deploy" / "rbac" / "activator.yaml").read_text())
            if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    for obj in rbac:
        if obj["kind"] == "ServiceAccount":
            obj["metadata"]["namespace"] = namespace
        # Cluster-wide objects named for this namespace: the chart's own
        # (omnia-activator) may be installed in the same cluster.
        if obj["kind"] == "ClusterRole":
            obj["metadata"]["name"] = f"{ACTIVATOR}-{namespace}"
        if obj["kind"] == "ClusterRoleBinding":
            obj["metadata"]["name"] = f"{ACTIVATOR}-{namespace}"
            obj["roleRef"]["name"] = f"{ACTIVATOR}-{namespace}"
            for subject in obj["subjects"]:
                subject["namespace"] = namespace
    labels = {"app.kubernetes.io/name": "omnia", "app.kubernetes.io/component": "activator"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": ACTIVATOR, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": ACTIVATOR,
                "enableServiceLinks": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "activator", "image": image, "imagePullPolicy": "Never",
                    "args": ["activator", "--port=8080", "--scaler-port=9090"],
                    "ports": [{"name": "http", "containerPort": 8080}, {"name": "scaler", "containerPort": 9090}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                                  "limits": {"cpu": "500m", "memory": "256Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": ACTIVATOR, "labels": labels},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": "http"},
                                                      {"name": "scaler", "port": 9090, "targetPort": "scaler"}]}}
    return [*rbac, deployment, service]


def agent_manifests() -> list[dict]:
    pack = {"apiVersion": API, "kind": "PromptPack", "metadata": {"name": "busy-prompts"},
            "spec": {"version": "1.0.0", "systemPrompt": "You are busy."}}
    provider = {"apiVersion": API, "kind": "Provider", "metadata": {"name": "mock"}, "spec": {"type": "mock"}}
    agent = {"apiVersion": API, "kind": "AgentRuntime", "metadata": {"name": AGENT},
             "spec": {"promptPackRef": {"name": "busy-prompts"}, "providerRef": {"name": "mock"},
                      "autoscaling": {
                          "enabled": True, "engine": "keda", "minReplicas": 1, "maxReplicas": 3,
                          "scaleDownStabilizationSeconds": WINDOW,
                          "metrics": [
                              # Far above what an idle pod uses: read and shown, never the reason to scale.
                              {"type": "memory", "target": "2Gi"},
                              {"type": "custom", "name": "active_connections", "target": TARGET},
                          ]}}}
    return [pack, provider, agent]


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture(scope="module")
def autoscaled(control_plane, real_node, built_images, crds, tmp_path_factory) -> Iterator[str]:
    """The agent, its activator, KEDA and metrics-server, all up; yields the namespace."""
    plane = control_plane
    missing = autoscaling.missing_binaries(plane.binaries, [*autoscaling.KEDA_BINARIES,
                                                            autoscaling.METRICS_SERVER_BINARY])
    if missing:
        # As conftest's fixtures do: skip on a developer's machine, fail in CI.
        message = f"missing {', '.join(missing)}; run scripts/build-control-plane keda metrics-server"
        in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        (pytest.fail if in_ci else pytest.skip)(message)
    workdir = tmp_path_factory.mktemp("real-hpa")
    namespace = f"hpa-{os.urandom(3).hex()}"
    plane.kubectl("create", "namespace", namespace, check=True)
    plane.kubectl("annotate", "namespace", namespace, "--overwrite",
                  *(f"{key}={value}" for key, value in real_node.namespace_annotations().items()), check=True)
    operator = None
    with autoscaling.MetricsServer(plane), \
            autoscaling.Keda(plane, cluster_dns=realnode.GATEWAY, cluster_domain=realnode.CLUSTER_DOMAIN):
        try:
            harness.apply(plane, activator_objects(namespace, built_images.image), namespace=namespace)
            # Before the agent's ScaledObject exists: KEDA (2.21) asks the
            # external scaler for its metric spec once, when it first builds
            # the HPA, and an activator not yet up leaves active_connections
            # out of the HPA until the ScaledObject changes (docs/scaling.md).
            wait_for(lambda: realpods.ready_pods(plane, namespace, "app.kubernetes.io/component=activator"),
                     timeout=120, what="the activator's pod ready")
            kubeconfig = harness.operator_kubeconfig(plane, home=namespace, namespaces=[namespace])
            operator = harness.OperatorProcess(
                kubeconfig=kubeconfig, namespaces=[namespace], log_file=workdir / "operator.log",
                image=built_images.image, extra_args=[f"--activator-service={namespace}/{ACTIVATOR}"],
            )
            operator.start()
            harness.apply(plane, agent_manifests(), namespace=namespace)
            wait_for(lambda: condition(get(plane, f"agentruntime/{AGENT}", namespace), "Ready").get("status")
                     == "True", timeout=180, what=f"{AGENT} Ready on the real node",
                     explain=lambda: (get(plane, f"agentruntime/{AGENT}", namespace) or {}).get("status"))
            yield namespace
        finally:
            if operator is not None:
                operator.stop()
                print(f"--- operator log ---\n{operator.log_tail(80)}")
            plane.kubectl("delete", "namespace", namespace, "--wait=false")
            plane.kubectl("delete", "clusterrolebinding", f"{ACTIVATOR}-{namespace}", "--ignore-not-found")
            plane.kubectl("delete", "clusterrole", f"{ACTIVATOR}-{namespace}", "--ignore-not-found")


def hpa(plane, namespace: str) -> dict:
    return get(plane, f"hpa/keda-hpa-{AGENT}", namespace) or {}


def current(found: dict) -> dict[str, dict]:
    """The HPA's current values by metric: ``memory`` and the external metric's name."""
    values = {}
    for metric in (found.get("status") or {}).get("currentMetrics") or []:
        if metric["type"] == "Resource":
            values[metric["resource"]["name"]] = metric["resource"]["current"]
        elif metric["type"] == "External":
            values[metric["external"]["metric"]["name"]] = metric["external"]["current"]
    return values


def replicas(plane, namespace: str) -> int:
    deployment = get(plane, f"deployment/{AGENT}", namespace) or {}
    return deployment.get("spec", {}).get("replicas", 0)


def open_connections(stack: contextlib.ExitStack, url: str, count: int) -> list[ClientConnection]:
    """``count`` WebSockets, each past ``connected``, closed when ``stack`` closes."""
    clients = []
    for _ in range(count):
        ws = stack.enter_context(connect(url, open_timeout=20))
        frame = json.loads(ws.recv(timeout=20))
        assert frame["type"] == "connected", frame
        clients.append(ws)
    return clients


def test_the_hpa_reads_memory_and_active_connections_and_moves_the_pods(control_plane, autoscaled):
    """Why: an HPA that is only written may never act; here it must show live values from the real kubelet and
    the facades, grow the agent when connections cross the target and shrink it after the window."""
    namespace = autoscaled
    plane = control_plane
    explain = lambda: {"hpa": (hpa(plane, namespace).get("status")),  # noqa: E731
                       "scaledobject": (get(plane, f"scaledobject/{AGENT}", namespace) or {}).get("status")}
    found = wait_for(lambda: hpa(plane, namespace) or None, timeout=60, what="KEDA's HPA for the agent",
                     explain=explain)
    assert found["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == WINDOW
    assert (found["spec"]["minReplicas"], found["spec"]["maxReplicas"]) == (1, 3)

    def live() -> dict[str, dict] | None:
        values = current(hpa(plane, namespace))
        memory = values.get("memory", {}).get("averageValue")
        external = [v for name, v in values.items() if name.endswith("active_connections")]
        return values if memory and external else None

    values = wait_for(live, timeout=120, what="current memory and active_connections on the HPA", explain=explain)
    memory = values["memory"]["averageValue"]
    assert memory not in ("0", "<unknown>"), values
    assert condition(hpa(plane, namespace), "ScalingActive").get("status") == "True", explain()
    assert replicas(plane, namespace) == 1

    url = realpods.service_url(plane, AGENT, namespace=namespace)
    with contextlib.ExitStack() as stack:
        opened = time.monotonic()
        open_connections(stack, url, CONNECTIONS)
        wait_for(lambda: len(realpods.ready_pods(plane, namespace, SELECTOR)) == 3, timeout=120,
                 what=f"3 ready pods for {CONNECTIONS} connections at a target of {TARGET}", explain=explain)
        grown_after = time.monotonic() - opened
        (connections,) = [v for name, v in current(hpa(plane, namespace)).items()
                          if name.endswith("active_connections")]
        assert connections["averageValue"] != "0", connections
    closed = time.monotonic()
    reasons = set()

    def shrunk() -> bool:
        found = hpa(plane, namespace)
        reasons.add(condition(found, "AbleToScale").get("reason"))
        return replicas(plane, namespace) == 1

    wait_for(shrunk, timeout=WINDOW + 90, interval=1, what="back to 1 replica after the window", explain=explain)
    shrunk_after = time.monotonic() - closed
    # Meanwhile the HPA kept the highest recommendation of the window. Its
    # last high one was made at most one HPA sync period before the close.
    assert "ScaleDownStabilized" in reasons, reasons
    assert shrunk_after >= WINDOW - HPA_SYNC_PERIOD, f"scaled down {shrunk_after:.0f}s after the close"
    print(f"memory per pod {memory}; 3 ready pods {grown_after:.0f}s after {CONNECTIONS} connections opened; "
          f"1 replica {shrunk_after:.0f}s after they closed (window {WINDOW}s)")
    wait_for(lambda: len(realpods.pods(plane, namespace, SELECTOR)) == 1, timeout=60, what="the extra pods gone")
