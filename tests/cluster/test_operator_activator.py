"""Routing agents at zero to the activator, on a real control plane.

The operator runs as a process under deploy/rbac's rights, serving one
namespace and told of an activator Service in another (``--activator-service``),
whose EndpointSlice the test writes as the EndpointSlice controller would
for the activator's pods. KEDA is not running: the test scales the agent's
Deployment itself, as KEDA would, and KWOK makes the pods Ready; the
kube-controller-manager collects the garbage. What is checked is the
``<agent>-activator`` EndpointSlice the operator keeps beside the agent's
Service, which is what kube-proxy routes by.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

API = "omnia.altairalabs.ai/v1alpha1"
ACTIVATOR = "omnia-activator"
TO_ZERO = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 3,
           "metrics": [{"type": "custom", "name": "active_connections", "target": 10}]}


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture(scope="module")
def keda(control_plane):
    """KEDA's ScaledObject CRD, from KEDA's Go module (scripts/fetch-keda-crd caches it outside the repo)."""
    fetched = subprocess.run([str(harness.REPO / "scripts" / "fetch-keda-crd")], capture_output=True, text=True)
    if fetched.returncode != 0:
        pytest.fail(f"could not fetch KEDA's CRD: {fetched.stderr.strip()}")
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", fetched.stdout.strip(), check=True)
    control_plane.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s",
                          check=True)


@pytest.fixture
def activator_namespace(control_plane, namespace):
    """The activator's own namespace, with the operator's rights there from deploy/rbac/activator.yaml only."""
    home = f"{namespace}-act"
    control_plane.kubectl("create", "namespace", home, check=True)
    yield home
    control_plane.kubectl("delete", "namespace", home, "--wait=false")


@pytest.fixture
def operator(control_plane, crds, keda, namespace, activator_namespace, tmp_path):
    """An operator serving ``namespace`` (its ClusterRole bound there only) and told of the activator."""
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    rbac = [doc for doc in yaml.safe_load_all((harness.REPO / "deploy" / "rbac" / "activator.yaml").read_text())
            if doc["kind"] in ("Role", "RoleBinding")]
    for obj in rbac:
        obj["metadata"]["namespace"] = activator_namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
    harness.apply(control_plane, rbac, namespace=activator_namespace)
    harness.apply(control_plane, [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": ACTIVATOR},
         "spec": {"ports": [{"name": "http", "port": 8080}, {"name": "scaler", "port": 9090}]}},
        activator_slice("10.1.0.5", not_ready=["10.1.0.6"]),
    ], namespace=activator_namespace)
    process = harness.OperatorProcess(
        kubeconfig=kubeconfig, namespaces=[namespace], log_file=tmp_path / "operator.log",
        extra_args=[f"--activator-service={activator_namespace}/{ACTIVATOR}"])
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


def activator_slice(*ready: str, not_ready: list[str] = ()) -> dict:
    """The activator Service's EndpointSlice, as the EndpointSlice controller writes it for its pods."""
    endpoints = [{"addresses": [address], "conditions": {"ready": True}} for address in ready]
    endpoints += [{"addresses": [address], "conditions": {"ready": False}} for address in not_ready]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{ACTIVATOR}-abcde",
                         "labels": {"kubernetes.io/service-name": ACTIVATOR,
                                    "endpointslice.kubernetes.io/managed-by": "tests.omnia.altairalabs.ai"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def agent(name: str, autoscaling: dict) -> dict:
    return {"apiVersion": API, "kind": "AgentRuntime", "metadata": {"name": name},
            "spec": {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"},
                     "autoscaling": autoscaling}}


def basics() -> list[dict]:
    return [{"apiVersion": API, "kind": "Provider", "metadata": {"name": "mock"}, "spec": {"type": "mock"}},
            {"apiVersion": API, "kind": "PromptPack", "metadata": {"name": "prompts"},
             "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}}]


def addresses(slice_: dict | None) -> list[str] | None:
    if slice_ is None:
        return None
    return [address for endpoint in slice_.get("endpoints") or [] for address in endpoint["addresses"]]


def scale(plane, namespace: str, name: str, replicas: int) -> None:
    """What KEDA would do."""
    plane.kubectl("scale", f"deployment/{name}", f"--replicas={replicas}", f"--namespace={namespace}", check=True)


def test_an_agent_at_zero_is_routed_to_the_activator_until_a_pod_is_ready(
    control_plane, namespace, activator_namespace, operator
):
    """A scale-to-zero agent at 0 Ready pods gets <agent>-activator with the activator's Ready addresses under
    its Service's port name; a Ready pod removes it, zero again brings it back; the activator's addresses are
    followed; a deleted slice is put back; an agent that does not scale to zero never gets one; an agent that
    stops scaling to zero loses it; deleting the agent collects it."""
    harness.apply(control_plane, [*basics(), agent("sleepy", TO_ZERO),
                                  agent("steady", {**TO_ZERO, "minReplicas": 1})], namespace=namespace)

    def routed(name: str = "sleepy") -> dict | None:
        return get(control_plane, f"endpointslice/{name}-activator", namespace)

    explain = lambda: (get(control_plane, "deployment/sleepy", namespace) or {}).get("status")  # noqa: E731
    found = wait_for(routed, timeout=60, what="sleepy-activator", explain=explain)
    assert addresses(found) == ["10.1.0.5"]
    service = get(control_plane, "service/sleepy", namespace)
    assert found["ports"] == [{"name": service["spec"]["ports"][0]["name"], "port": 8080, "protocol": "TCP"}]
    assert found["addressType"] == "IPv4"
    assert found["metadata"]["labels"]["kubernetes.io/service-name"] == "sleepy"
    assert found["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "operator.omnia.altairalabs.ai"
    uid = get(control_plane, "agentruntime/sleepy", namespace)["metadata"]["uid"]
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in found["metadata"]["ownerReferences"]] == [
        ("AgentRuntime", "sleepy", uid, True)]
    # The Service's own slices (its selector's pods, none) are the EndpointSlice controller's, beside ours.
    scaled = get(control_plane, "scaledobject/sleepy", namespace)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"]["scalerAddress"] == f"{ACTIVATOR}.{activator_namespace}.svc:9090"
    assert (trigger["metadata"]["agent"], trigger["metadata"]["namespace"]) == ("sleepy", namespace)

    # The activator's pods change: a new one is Ready, the old one is not.
    harness.apply(control_plane, activator_slice("10.1.0.7", not_ready=["10.1.0.5"]), namespace=activator_namespace)
    wait_for(lambda: addresses(routed()) == ["10.1.0.7"], timeout=60, what="the activator's new address",
             explain=lambda: routed())

    # KEDA wakes the agent: once a pod is Ready, connections go straight to it.
    scale(control_plane, namespace, "sleepy", 1)
    wait_for(lambda: routed() is None, timeout=90, what="sleepy-activator deleted once a pod is Ready", explain=explain)
    assert get(control_plane, "deployment/sleepy", namespace)["status"]["readyReplicas"] == 1

    # Idle again: back to zero, back to the activator.
    scale(control_plane, namespace, "sleepy", 0)
    wait_for(lambda: addresses(routed()) == ["10.1.0.7"], timeout=90, what="sleepy-activator again", explain=explain)

    # Someone deletes it: it is put back.
    control_plane.kubectl("delete", "endpointslice/sleepy-activator", f"--namespace={namespace}", check=True)
    wait_for(lambda: (s := routed()) and s["metadata"]["uid"] != found["metadata"]["uid"], timeout=60,
             what="sleepy-activator put back")

    # An agent whose floor is one pod is never routed to the activator, even with no Ready pod.
    wait_for(lambda: (get(control_plane, "deployment/steady", namespace) or {}).get("status", {}).get(
        "readyReplicas") == 1, timeout=90, what="steady's pod Ready")
    scale(control_plane, namespace, "steady", 0)
    wait_for(lambda: (a := get(control_plane, "agentruntime/steady", namespace))
             and not a["status"].get("replicas") and not a["status"].get("readyReplicas"),
             timeout=90, what="steady at zero in its status")
    assert routed("steady") is None

    # sleepy stops scaling to zero: its slice goes, though it still has no pod.
    patch = {"spec": {"autoscaling": {"minReplicas": 1}}}
    control_plane.kubectl("patch", "agentruntime/sleepy", f"--namespace={namespace}", "--type=merge",
                          "-p", json.dumps(patch), check=True)
    wait_for(lambda: routed() is None, timeout=60, what="sleepy-activator deleted after minReplicas 1")

    control_plane.kubectl("patch", "agentruntime/sleepy", f"--namespace={namespace}", "--type=merge",
                          "-p", json.dumps({"spec": {"autoscaling": {"minReplicas": 0}}}), check=True)
    scale(control_plane, namespace, "sleepy", 0)
    wait_for(routed, timeout=90, what="sleepy-activator once it scales to zero again", explain=explain)

    # Deleting the agent collects its slice with everything else it owns.
    control_plane.kubectl("delete", "agentruntime/sleepy", f"--namespace={namespace}", check=True)
    wait_for(lambda: routed() is None, timeout=90, what="the garbage collector")
    assert operator.alive()


def test_without_an_activator_agents_at_zero_are_not_routed_and_need_a_prometheus(
    control_plane, crds, keda, namespace, tmp_path
):
    """Today's behaviour, stated: no slice; and with neither an activator nor a Prometheus, scale to zero is
    refused with a condition that says what to give the operator."""
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    process = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace],
                                      log_file=tmp_path / "operator.log").start()
    try:
        harness.apply(control_plane, [*basics(), agent("sleepy", TO_ZERO)], namespace=namespace)
        found = wait_for(lambda: (a := get(control_plane, "agentruntime/sleepy", namespace))
                         and harness.condition(a, "Ready").get("reason") == "InvalidSpec" and a,
                         timeout=60, what="InvalidSpec")
        message = harness.condition(found, "Ready")["message"]
        assert "--prometheus-url" in message and "--activator-service" in message
        assert get(control_plane, "endpointslice/sleepy-activator", namespace) is None
        assert process.alive()
    finally:
        process.stop()
        print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(80)}")
