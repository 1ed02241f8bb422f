"""The user's path on a real node: helm install with the built image, then the examples.

Unlike tests/cluster/test_helm_chart.py, the operator here is not a local
process: the chart's Deployment runs it as a real pod, under the chart's
ServiceAccount, reaching the API server through the ``kubernetes`` Service
from inside the pod network, and it reconciles agents onto the real node.
This follows docs/install.md, "Your first agent on a cluster", step by step.
The installation itself (fixture ``installed``, conftest.py) serves the whole
session: test_real_scaling.py wakes agents through the same chart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

EXAMPLES = harness.REPO / "examples"


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
