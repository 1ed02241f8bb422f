"""Scale from zero for real: the chart's operator and activator as pods, KEDA, and a client at zero.

The whole chain of docs/scaling.md runs here: the operator (a pod, installed
by the chart) writes the agent's ScaledObject with an ``external-push``
trigger naming the activator's Service; KEDA (host processes that resolve
cluster names through the node's CoreDNS, ``keda_on_real_node``) takes the
agent to zero; the operator points the agent's Service at the activator (a
pod too); a client then dials the agent's Service by its ClusterIP, with the
Host a pod's client would send, and must get ``connected`` and a streamed
reply, never a refused connection. KEDA, told by the activator, wakes the
agent; the activator relays the connection once a pod is Ready. After the
client leaves, the agent goes back to zero.

The time from the connection at zero to ``connected`` is printed (run with
``-s``); bench/RESULTS.md keeps the figures.
"""

from __future__ import annotations

import datetime
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

API = "omnia.altairalabs.ai/v1alpha1"
AGENT = "wake"
REPLY = "Awake, and answering from a pod that did not exist a moment ago."
SELECTOR = f"app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance={AGENT}"
IDLE = "20s"
"""The agent's ``scaleToZeroAfter``: short, so that the return to zero is seen within the test."""


def agent_objects() -> list[dict]:
    return [
        {"apiVersion": API, "kind": "Provider", "metadata": {"name": f"{AGENT}-mock"},
         "spec": {"type": "mock", "mock": {"replies": [{"text": REPLY, "chunkSize": 8, "chunkDelayMs": 50}]}}},
        {"apiVersion": API, "kind": "PromptPack", "metadata": {"name": f"{AGENT}-prompts"},
         "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
        {"apiVersion": API, "kind": "AgentRuntime", "metadata": {"name": AGENT},
         "spec": {"promptPackRef": {"name": f"{AGENT}-prompts"}, "providerRef": {"name": f"{AGENT}-mock"},
                  "session": {"type": "memory"},
                  "autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 2,
                                  "scaleToZeroAfter": IDLE,
                                  "metrics": [{"type": "custom", "name": "active_connections", "target": 10}]}}},
    ]


def replicas(plane, namespace: str) -> int | None:
    deployment = get(plane, f"deployment/{AGENT}", namespace)
    return None if deployment is None else deployment["spec"].get("replicas")


def agent_pods(plane, namespace: str) -> list[dict]:
    return realpods.pods(plane, namespace, SELECTOR)


def activator_endpoints(plane, namespace: str) -> set[str]:
    """``IP:PORT`` of the ready endpoints in the operator's ``<agent>-activator`` slice (empty: no slice)."""
    slice_ = get(plane, f"endpointslice/{AGENT}-activator", namespace)
    if slice_ is None:
        return set()
    ports = [port["port"] for port in slice_.get("ports") or []]
    return {f"{address}:{port}" for endpoint in slice_.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready") for address in endpoint["addresses"] for port in ports}


def routed_to_activator(plane, namespace: str) -> bool:
    """The agent's Service leads to the activator: the operator's slice is there and kube-proxy follows it."""
    endpoints = activator_endpoints(plane, namespace)
    return bool(endpoints) and realpods.proxied_to(namespace, AGENT, "ws") == endpoints


def wait_at_zero(plane, namespace: str, *, timeout: float, what: str) -> float:
    """Wait until the agent has no pod and its Service leads to the activator; returns the seconds it took
    kube-proxy to follow the operator's slice (connections meanwhile are refused: nothing serves them)."""
    wait_for(lambda: replicas(plane, namespace) == 0 and not agent_pods(plane, namespace)
             and activator_endpoints(plane, namespace), timeout=timeout, what=what, explain=explain(plane, namespace))
    sliced = time.monotonic()
    wait_for(lambda: routed_to_activator(plane, namespace), timeout=30,
             what="kube-proxy routing the agent's Service to the activator", explain=explain(plane, namespace))
    return time.monotonic() - sliced


def wait_routed_to(namespace: str, endpoints: set[str], *, timeout: float, interval: float = 0.2) -> float:
    """Follow kube-proxy's rules for the agent's Service until they lead to ``endpoints`` only.

    Returns how long, on the way, they led nowhere (a connection then is
    refused): the window between the last pod leaving and the activator's
    slice taking over, read from the rules themselves.
    """
    deadline = time.monotonic() + timeout
    nowhere, since = 0.0, None
    while (destinations := realpods.proxied_to(namespace, AGENT, "ws")) != endpoints:
        now = time.monotonic()
        if not destinations and since is None:
            since = now
        elif destinations and since is not None:
            nowhere, since = nowhere + now - since, None
        assert now < deadline, f"kube-proxy still leads {namespace}/{AGENT} to {destinations}, not {endpoints}"
        time.sleep(interval)
    return nowhere + (time.monotonic() - since if since is not None else 0.0)


def explain(plane, namespace: str):
    return lambda: {
        "replicas": replicas(plane, namespace),
        "pods": [(p["metadata"]["name"], p["status"].get("phase")) for p in agent_pods(plane, namespace)],
        "scaledobject": (get(plane, f"scaledobject/{AGENT}", namespace) or {}).get("status"),
        "agent": (get(plane, f"agentruntime/{AGENT}", namespace) or {}).get("status"),
        "activator slice": sorted(activator_endpoints(plane, namespace)),
        "kube-proxy": sorted(realpods.proxied_to(namespace, AGENT, "ws")),
    }


def pod_timeline(plane, namespace: str, since: datetime.datetime) -> str:
    """When the woken pod was created, its containers started and it became Ready, after ``since``."""
    (pod,) = realpods.pods(plane, namespace, SELECTOR)
    # The API server keeps whole seconds: count from the second it started in.
    since = since.replace(microsecond=0)

    def after(stamp: str | None) -> str:
        if not stamp:
            return "?"
        return f"+{(datetime.datetime.fromisoformat(stamp) - since).total_seconds():.0f} s"

    started = [s["state"].get("running", {}).get("startedAt") for s in pod["status"]["containerStatuses"]]
    return (f"pod created {after(pod['metadata']['creationTimestamp'])}, containers running "
            f"{', '.join(after(stamp) for stamp in started)}, Ready {after(condition(pod, 'Ready').get('lastTransitionTime'))}")


@pytest.fixture
def agent_namespace(control_plane, installed, keda_on_real_node) -> Iterator[str]:
    """The agent applied in the chart's namespace; deleted while KEDA still runs to remove its finalizer."""
    namespace, _ = installed
    harness.apply(control_plane, agent_objects(), namespace=namespace)
    yield namespace
    control_plane.kubectl("delete", f"--namespace={namespace}", "--wait=true", "--timeout=60s",
                          f"agentruntime/{AGENT}", f"provider/{AGENT}-mock", f"promptpack/{AGENT}-prompts")
    wait_for(lambda: get(control_plane, f"scaledobject/{AGENT}", namespace) is None, timeout=60,
             what="the ScaledObject collected")


@pytest.mark.timeout(900)
def test_an_agent_at_zero_answers_its_first_websocket_and_goes_back_to_zero(control_plane, agent_namespace):
    """Why: the acceptance of scale to zero is a client at zero that is answered, not refused, on a real node.

    Every part is the product's own, as deployed: only the client is the
    test's. It dials the ClusterIP and sends the Service's DNS name as Host
    (what a client in a pod sends; the activator routes by it).
    """
    plane = control_plane
    namespace = agent_namespace
    started = time.monotonic()
    wait_for(lambda: condition(get(plane, f"scaledobject/{AGENT}", namespace), "Ready").get("status") == "True",
             timeout=120, what="the ScaledObject Ready", explain=explain(plane, namespace))
    lag = wait_at_zero(plane, namespace, timeout=120, what="the new agent at zero, with the activator's slice")
    activator = activator_endpoints(plane, namespace)
    print(f"\n[scale to zero] created -> at zero and routed to the activator: {time.monotonic() - started:.1f} s "
          f"(kube-proxy followed the slice after {lag:.1f} s)")

    service = get(plane, f"service/{AGENT}", namespace)
    assert service is not None
    address = (service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"])
    host = f"{AGENT}.{namespace}.svc.cluster.local"

    dialled, dialled_at = time.monotonic(), datetime.datetime.now(datetime.UTC)
    sock = socket.create_connection(address, timeout=10)
    with connect(f"ws://{host}:{address[1]}/ws", sock=sock, open_timeout=10) as ws:
        connected = json.loads(ws.recv(timeout=90))
        woken = time.monotonic() - dialled
        assert connected["type"] == "connected", connected
        print(f"[scale to zero] wake from zero: {woken:.2f} s from the connection at zero to `connected`")
        print(f"[scale to zero] of which (API server times, whole seconds): {pod_timeline(plane, namespace, dialled_at)}")
        frames = realpods.turn(ws, "Are you there?")
        assert frames[-1]["type"] == "done", frames
        chunks = [f["content"] for f in frames if f["type"] == "chunk"]
        assert len(chunks) > 1 and "".join(chunks) == REPLY

        # Once a pod is Ready the Service leads straight to it again.
        wait_for(lambda: get(plane, f"endpointslice/{AGENT}-activator", namespace) is None, timeout=60,
                 what="the activator slice removed while the agent has a pod", explain=explain(plane, namespace))
        (pod,) = realpods.ready_pods(plane, namespace, SELECTOR)
        wait_for(lambda: realpods.proxied_to(namespace, AGENT, "ws") == {f"{pod['status']['podIP']}:8080"},
                 timeout=30, what="kube-proxy routing the Service to the pod", explain=explain(plane, namespace))

    left = time.monotonic()
    # scaleToZeroAfter, plus KEDA's polling interval (30 s) and the
    # activator's re-reading of the pods (10 s), with room for a loaded machine.
    gap = wait_routed_to(namespace, activator, timeout=180)
    print(f"[scale to zero] last connection closed -> Service routed to the activator again: "
          f"{time.monotonic() - left:.1f} s (scaleToZeroAfter {IDLE}); kube-proxy's rules led nowhere "
          f"(connections refused) for {gap:.1f} s on the way")
    wait_for(lambda: replicas(plane, namespace) == 0 and not agent_pods(plane, namespace), timeout=60,
             what="the agent's last pod gone", explain=explain(plane, namespace))
