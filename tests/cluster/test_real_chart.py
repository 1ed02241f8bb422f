"""The user's path on a real node: helm install with the built image, then the examples.

Unlike tests/cluster/test_helm_chart.py, the operator here is not a local
process: the chart's Deployment runs it as a real pod, under the chart's
ServiceAccount, reaching the API server through the ``kubernetes`` Service
from inside the pod network, and it reconciles agents onto the real node.
This follows docs/install.md, "Your first agent on a cluster", step by step.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402
from tests.packaging import charts, tools  # noqa: E402

pytestmark = pytest.mark.cluster

EXAMPLES = harness.REPO / "examples"


@pytest.fixture(scope="module")
def helm(control_plane_binaries, tmp_path_factory) -> charts.Helm:
    import controlplane

    return charts.Helm(
        binary=tools.helm(control_plane_binaries),
        home=tmp_path_factory.mktemp("helm"),
        kube_version=controlplane.KUBERNETES_VERSION,
    )


@pytest.fixture(scope="module")
def installed(control_plane, real_node, built_images, helm) -> Iterator[tuple[str, str]]:
    """The chart installed by helm into a namespace of the real node, with a default Redis store."""
    plane = control_plane
    namespace = "omnia-real"
    plane.kubectl("create", "namespace", namespace, check=True)
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True)
    plane.kubectl("annotate", "namespace", namespace, "--overwrite",
                  *(f"{key}={value}" for key, value in real_node.namespace_annotations().items()), check=True)
    harness.apply(plane, realpods.redis_objects(image=built_images.services), namespace=namespace)
    harness.apply(plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "session-store"},
                          "stringData": {"url": realpods.redis_url(namespace)}}, namespace=namespace)
    repository, tag = built_images.image.rsplit(":", 1)
    values = helm.values_file({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "userRoles": {"create": False},
        "sessionStore": {"redis": {"secretRef": {"name": "session-store", "key": "url"}}},
    })
    release = "omnia"
    try:
        helm.run("install", release, str(charts.CHART), f"--values={values}", f"--namespace={namespace}",
                 "--wait", "--timeout=4m", kubeconfig=plane.kubeconfig, timeout=300)
        yield namespace, release
    finally:
        logs = plane.kubectl("logs", f"deployment/{release}-operator", f"--namespace={namespace}", "--tail=80")
        print(f"--- operator pod log ---\n{logs.stdout}{logs.stderr}")
        helm.run("uninstall", release, f"--namespace={namespace}", "--wait", kubeconfig=plane.kubeconfig,
                 timeout=240, check=False)
        plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_the_operator_runs_as_a_real_pod_under_its_service_account(control_plane, installed):
    """Why: the operator's own image, identity and API access are only proven by running it in a pod."""
    namespace, release = installed
    (pod,) = realpods.ready_pods(control_plane, namespace, "app.kubernetes.io/component=operator")
    assert pod["spec"]["nodeName"] == "localhost"
    assert pod["spec"]["serviceAccountName"] == f"{release}-operator"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0


def example_manifests(name: str) -> list[dict]:
    documents = []
    for path in sorted((EXAMPLES / name).glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def test_the_quickstart_runs_on_the_local_model_and_answers(control_plane, installed):
    """Why: the README's first agent, applied to a cluster as it is, answers from the model inside the pod."""
    namespace, _ = installed
    harness.apply(control_plane, example_manifests("quickstart"), namespace=namespace)
    wait_for(lambda: condition(get(control_plane, "agentruntime/quickstart", namespace), "Ready").get("status")
             == "True", timeout=300, what="quickstart Ready",
             explain=lambda: (get(control_plane, "agentruntime/quickstart", namespace) or {}).get("status"))
    with realpods.port_forward(control_plane, "service/quickstart", namespace=namespace, port=8080) as port:
        connected, frames = realpods.chat_once(f"ws://127.0.0.1:{port}/ws", "Say hello.")
    assert connected["type"] == "connected"
    assert frames[-1]["type"] == "done", frames
    assert "".join(f["content"] for f in frames if f["type"] == "chunk").strip()


def test_the_support_agent_example_reaches_ready_with_the_installed_default_store(control_plane, installed):
    """Why: the brief's example, as the docs tell a user to apply it (a key Secret, then the folder)."""
    namespace, _ = installed
    harness.apply(control_plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic-api-key"},
                                  "stringData": {"api-key": "sk-test-not-a-real-key"}}, namespace=namespace)
    harness.apply(control_plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-api"},
                                  "stringData": {"authorization": "Bearer test"}}, namespace=namespace)
    harness.apply(control_plane, example_manifests("support-agent"), namespace=namespace)
    wait_for(lambda: condition(get(control_plane, "agentruntime/support-agent", namespace), "Ready").get("status")
             == "True", timeout=300, what="support-agent Ready",
             explain=lambda: (get(control_plane, "agentruntime/support-agent", namespace) or {}).get("status"))
    pods = realpods.ready_pods(control_plane, namespace,
                               "app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance=support-agent")
    assert len(pods) >= 2 and all(pod["spec"]["nodeName"] == "localhost" for pod in pods)
    mirrored = json.loads(control_plane.kubectl("get", "secret", "support-agent-session-store",
                                                f"--namespace={namespace}", "-o", "json", check=True).stdout)
    assert mirrored["metadata"]["ownerReferences"][0]["name"] == "support-agent"
