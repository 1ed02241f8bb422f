"""Pod health is agent health, on a real control plane (SPEC §9).

KWOK plays the kubelet and makes every pod Running and Ready; here the test
writes, as the kubelet would (the pod's status subresource, as an admin),
what a real one writes when a container cannot start, and checks that the
operator, under its least-privilege ClusterRole, shows it in the
AgentRuntime's Ready condition and an Event, and takes it back when the pod
recovers. KWOK leaves a Running pod's status alone, so nothing overwrites
what the test wrote. What a real kubelet writes is covered by the real-node
tests.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

MESSAGE = ("session store 'redis' needs its URL in the environment variable OMNIA_SESSION_URL, "
           "which is unset or empty (set spec.session.secretRef to a Secret key holding the URL)")


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture
def operator(control_plane, crds, namespace, tmp_path):
    """An operator serving ``namespace`` with deploy/rbac's ClusterRole; its log is printed afterwards."""
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    process = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace], log_file=tmp_path / "operator.log")
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


def objects() -> list[dict]:
    group = "omnia.altairalabs.ai/v1alpha1"
    return [
        {"apiVersion": group, "kind": "Provider", "metadata": {"name": "mock"}, "spec": {"type": "mock"}},
        {"apiVersion": group, "kind": "PromptPack", "metadata": {"name": "prompts"},
         "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
        {"apiVersion": group, "kind": "AgentRuntime", "metadata": {"name": "agent"},
         "spec": {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"}}},
    ]


def agent_ready(plane, namespace: str) -> dict:
    return condition(get(plane, "agentruntime/agent", namespace), "Ready")


def the_pod(plane, namespace: str) -> dict:
    pods = harness.kubectl_json(plane, "get", "pods", f"--namespace={namespace}",
                                "--selector=app.kubernetes.io/instance=agent")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    return running[0]


def write_status(plane, namespace: str, pod: str, status: dict) -> None:
    plane.kubectl("patch", f"pod/{pod}", f"--namespace={namespace}", "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}), check=True)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_crash_looping_runtime_turns_the_agent_not_ready_with_its_termination_message_and_back(
    control_plane, namespace, operator
):
    harness.apply(control_plane, objects(), namespace=namespace)
    wait_for(lambda: agent_ready(control_plane, namespace).get("status") == "True", timeout=120,
             what="agent Ready", explain=lambda: (get(control_plane, "agentruntime/agent", namespace) or {}).get("status"))
    pod = the_pod(control_plane, namespace)
    name = pod["metadata"]["name"]
    healthy = pod["status"]
    now = datetime.datetime.now(datetime.timezone.utc)

    # What the kubelet writes after the runtime exited twice with a termination message.
    facade, runtime = healthy["containerStatuses"]
    assert (facade["name"], runtime["name"]) == ("facade", "runtime")
    crashing = {
        **runtime, "ready": False, "started": False, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": f"back-off 20s restarting failed container=runtime pod={name}"}},
        "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": MESSAGE,
                                     "startedAt": stamp(now), "finishedAt": stamp(now)}},
    }
    unready = {"status": "False", "reason": "ContainersNotReady", "lastTransitionTime": stamp(now),
               "message": "containers with unready status: [runtime]"}
    conditions = [c | unready if c["type"] in ("Ready", "ContainersReady") else c for c in healthy["conditions"]]
    write_status(control_plane, namespace, name, {"conditions": conditions, "containerStatuses": [facade, crashing]})

    ready = wait_for(lambda: (c := agent_ready(control_plane, namespace)).get("reason") == "CrashLoopBackOff" and c,
                     timeout=30, what="Ready False with reason CrashLoopBackOff",
                     explain=lambda: agent_ready(control_plane, namespace))
    assert ready["status"] == "False"
    assert ready["message"].startswith(f"pod {name} container runtime: CrashLoopBackOff, restarted 2 times")
    assert MESSAGE in ready["message"]
    assert get(control_plane, "agentruntime/agent", namespace)["status"]["phase"] == "Degraded"
    warnings = harness.kubectl_json(control_plane, "get", "events", f"--namespace={namespace}",
                                    "--field-selector=involvedObject.name=agent,type=Warning")["items"]
    assert any(e["reason"] == "CrashLoopBackOff" and MESSAGE in e["message"] for e in warnings)

    # The next start succeeds: the kubelet reports it running and ready again.
    recovered = {**runtime, "restartCount": 3, "state": {"running": {"startedAt": stamp(now)}},
                 "lastState": crashing["lastState"]}
    write_status(control_plane, namespace, name,
                 {"conditions": healthy["conditions"], "containerStatuses": [facade, recovered]})
    ready = wait_for(lambda: (c := agent_ready(control_plane, namespace)).get("status") == "True" and c,
                     timeout=30, what="Ready True again", explain=lambda: agent_ready(control_plane, namespace))
    assert ready["reason"] == "AgentReady"
    normal = harness.kubectl_json(control_plane, "get", "events", f"--namespace={namespace}",
                                  "--field-selector=involvedObject.name=agent,type=Normal")["items"]
    assert "AgentReady" in {e["reason"] for e in normal}


def test_the_operator_may_watch_pods_but_not_change_them(control_plane, namespace, operator):
    def can(*args: str) -> str:
        return control_plane.kubectl("auth", "can-i", *args, kubeconfig=operator.kubeconfig).stdout.strip()

    assert can("watch", "pods", f"--namespace={namespace}") == "yes"
    assert can("list", "pods", f"--namespace={namespace}") == "yes"
    assert can("patch", "pods", f"--namespace={namespace}") == "no"
    assert can("delete", "pods", f"--namespace={namespace}") == "no"
    assert can("get", "pods", "--subresource=log", f"--namespace={namespace}") == "no"
