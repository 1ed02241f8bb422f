"""Helpers for tests whose agents run as real pods on the real test node.

A Redis server as a pod behind a Service, ``kubectl port-forward`` as a
context manager, WebSocket turns, and the host PID of a container (so that a
test can kill or freeze a process the way a node's trouble would).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from websockets.sync.client import ClientConnection, connect

REDIS_PORT = 6379


def redis_objects(*, image: str, name: str = "redis") -> list[dict[str, Any]]:
    """A Redis Deployment (no persistence: test data) and its Service, under the restricted profile."""
    labels = {"app": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "redis",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT),
                                            "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                            "--dir", "/data"],
                                "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 2},
                                "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}]},
        },
    ]


def redis_url(namespace: str, name: str = "redis") -> str:
    """The URL agents use: the Service by its cluster DNS name."""
    return f"redis://{name}.{namespace}.svc.cluster.local:{REDIS_PORT}/0"


@contextlib.contextmanager
def port_forward(plane, target: str, *, namespace: str, port: int) -> Iterator[int]:
    """``kubectl port-forward TARGET :PORT`` on 127.0.0.1; yields the local port, stops kubectl after."""
    process = subprocess.Popen(
        [str(plane.binaries.path("kubectl")), f"--kubeconfig={plane.kubeconfig}", "port-forward",
         f"--namespace={namespace}", "--address=127.0.0.1", target, f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        local = None
        while local is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if found:
                local = int(found.group(1))
        if local is None:
            raise AssertionError(f"kubectl port-forward {target} did not start (exit {process.poll()})")
        yield local
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def turn(ws: ClientConnection, content: str, *, timeout: float = 60) -> list[dict[str, Any]]:
    """Send a message; the frames up to and including ``done`` or ``error``."""
    ws.send(json.dumps({"type": "message", "content": content}))
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=timeout))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def chat_once(url: str, content: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Connect, take ``connected``, run one turn; returns both."""
    with connect(url, open_timeout=20) as ws:
        connected = json.loads(ws.recv(timeout=20))
        return connected, turn(ws, content)


def container_host_pid(node, pod: dict[str, Any], container: str) -> int:
    """The host PID of ``container``'s main process in ``pod`` (from containerd's task list)."""
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    for line in node.ctr("tasks", "list").stdout.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"no task for container {container} ({container_id}) of {pod['metadata']['name']}")


def pods(plane, namespace: str, selector: str) -> list[dict[str, Any]]:
    result = plane.kubectl("get", "pods", f"--namespace={namespace}", f"--selector={selector}", "-o", "json",
                           check=True)
    return json.loads(result.stdout)["items"]


def ready_pods(plane, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Running pods whose every container is ready (and that are not being deleted)."""
    found = []
    for pod in pods(plane, namespace, selector):
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if (pod["status"].get("phase") == "Running" and statuses and all(s.get("ready") for s in statuses)
                and not pod["metadata"].get("deletionTimestamp")):
            found.append(pod)
    return found


def service_url(plane, service: str, *, namespace: str, path: str = "/ws") -> str:
    """ws:// URL of a Service's ClusterIP: the host reaches it through kube-proxy, as a pod would."""
    svc = json.loads(plane.kubectl("get", "service", service, f"--namespace={namespace}", "-o", "json",
                                   check=True).stdout)
    port = svc["spec"]["ports"][0]["port"]
    return f"ws://{svc['spec']['clusterIP']}:{port}{path}"


def proxied_to(namespace: str, service: str, port: str) -> set[str]:
    """``IP:PORT`` destinations kube-proxy's iptables rules send ``namespace/service:port`` to now.

    A Service whose endpoints just changed answers from the old rules until
    kube-proxy has written the new ones (its minimum sync period and an
    ``iptables-restore``): a test that must meet the new routing waits for it
    here. kube-proxy tags each endpoint's DNAT rule with ``"NAMESPACE/SERVICE:PORT"``.
    """
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    tag = f'--comment "{namespace}/{service}:{port}"'
    return {found.group(1) for line in rules.splitlines()
            if tag in line and (found := re.search(r"--to-destination (\S+)", line))}
