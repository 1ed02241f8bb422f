"""Agent pods as ``kubectl get pod -o json`` shows them on a real cluster (containerd, Kubernetes 1.35).

Builders for the pod statuses of the operator's tests: containers running,
waiting with the kubelet's reason, or terminated, at times relative to
:data:`NOW`.
"""

from __future__ import annotations

import datetime
from typing import Any

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
LABELS = {"app.kubernetes.io/name": "omnia-agent", "app.kubernetes.io/instance": "agent",
          "app.kubernetes.io/managed-by": "omnia-operator", "omnia.altairalabs.ai/agent": "agent"}


def ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def running(*, since: float = 600, ready: bool = True, started: bool = True, restarts: int = 0,
            last: dict | None = None) -> dict:
    return {"ready": ready, "started": started, "restartCount": restarts,
            "state": {"running": {"startedAt": ago(since)}}, "lastState": {"terminated": last} if last else {}}


def waiting(reason: str, message: str, *, restarts: int = 0, last: dict | None = None) -> dict:
    return {"ready": False, "started": False, "restartCount": restarts,
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {"terminated": last} if last else {}}


def terminated(reason: str, *, code: int, message: str = "", finished: float = 30) -> dict:
    found = {"exitCode": code, "reason": reason, "startedAt": ago(finished + 5), "finishedAt": ago(finished),
             "containerID": "containerd://9c1e0b5f3d2a"}
    if message:
        found["message"] = message
    return found


def pod(name: str = "agent-7d9f8b6c5-x2x8k", *, facade: dict | None = None, runtime: dict | None = None,
        phase: str = "Running", deleting: bool = False, unready_since: float | None = None) -> dict:
    """An agent pod: facade and runtime containers, as the operator's Deployment makes them."""
    statuses = []
    for container, state in (("facade", facade or running()), ("runtime", runtime or running())):
        statuses.append({"name": container, "image": "ghcr.io/altairalabs/omnia:0.1.0",
                         "imageID": "ghcr.io/altairalabs/omnia@sha256:5b0f", "containerID": "containerd://4f2a",
                         **state})
    all_ready = all(s["ready"] for s in statuses)
    transition = ago(unready_since) if unready_since is not None else ago(900)
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ago(900)},
        {"type": "Initialized", "status": "True", "lastTransitionTime": ago(900)},
        {"type": "Ready", "status": str(all_ready), "lastTransitionTime": transition},
        {"type": "ContainersReady", "status": str(all_ready), "lastTransitionTime": transition},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(900)},
    ]
    for condition in conditions[2:4]:
        if not all_ready:
            unready = ",".join(s["name"] for s in statuses if not s["ready"])
            condition |= {"reason": "ContainersNotReady", "message": f"containers with unready status: [{unready}]"}
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a", "labels": LABELS, "uid": f"uid-{name}"}
    if deleting:
        metadata |= {"deletionTimestamp": ago(5), "deletionGracePeriodSeconds": 45}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [
            {"name": "facade", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
            {"name": "runtime", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
        ]},
        "status": {"phase": phase, "conditions": conditions, "hostIP": "10.0.0.4", "podIP": "10.244.1.7",
                   "startTime": ago(900), "qosClass": "Burstable", "containerStatuses": statuses},
    }
