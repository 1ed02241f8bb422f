"""The real test node: pods run containers, Services route, the cluster domain resolves.

These are the node's own acceptance tests; the agent tests on real pods
(tests/cluster/test_real_pods.py) rely on each of these facts.
"""

from __future__ import annotations

import importlib.metadata
import json
import time

import pytest

pytestmark = pytest.mark.cluster


def wait_pod_phase(plane, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        result = plane.kubectl("get", "pod", name, f"--namespace={namespace}", "-o", "json")
        if result.returncode == 0:
            pod = json.loads(result.stdout)
            if pod.get("status", {}).get("phase") in phases:
                return pod
        time.sleep(0.5)
    raise AssertionError(f"pod {name} not in {phases} after {timeout}s: {json.dumps(pod.get('status'), indent=1)}")


def run_pod(plane, namespace: str, name: str, *, command: list[str], image: str, **spec) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    **spec,
                }
            ],
        },
    }
    plane.kubectl("apply", f"--namespace={namespace}", "-f", "-", input=json.dumps(pod), check=True)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["omnia", "version"], id="version"),
        pytest.param(["omnia", "operator", "--help"], id="operator"),
        pytest.param(["omnia", "facade", "--help"], id="facade"),
        pytest.param(["omnia", "runtime", "--help"], id="runtime"),
    ],
)
def test_each_entrypoint_of_the_image_runs_as_a_container_on_the_real_node(
    control_plane, real_namespace, built_images, command
):
    """Why: the image has to start its three components as a non-root user on a read-only root."""
    run_pod(control_plane, real_namespace, "entry", command=command, image=built_images.image)
    pod = wait_pod_phase(control_plane, real_namespace, "entry", ("Succeeded", "Failed"))
    logs = control_plane.kubectl("logs", "entry", f"--namespace={real_namespace}").stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    assert pod["spec"]["nodeName"] == "localhost"
    expected = "Usage" if "--help" in command else importlib.metadata.version("omnia")
    assert expected in logs, logs


def test_services_route_and_the_cluster_domain_resolves(control_plane, real_namespace, built_images):
    """Why: agents reach their session store and tools by Service DNS name, through kube-proxy."""
    run_pod(
        control_plane, real_namespace, "web", image=built_images.image,
        command=["python3", "-m", "http.server", "8000", "--directory", "/opt/omnia"],
    )
    wait_pod_phase(control_plane, real_namespace, "web", ("Running",))
    control_plane.kubectl(
        "expose", "pod", "web", f"--namespace={real_namespace}", "--port=80", "--target-port=8000", check=True
    )
    url = f"http://web.{real_namespace}.svc.cluster.local/"
    run_pod(
        control_plane, real_namespace, "client", image=built_images.image,
        command=["python3", "-c", (
            "import sys, time, urllib.request\n"
            "for attempt in range(60):\n"
            "    try:\n"
            f"        print(urllib.request.urlopen({url!r}, timeout=2).status); sys.exit(0)\n"
            "    except Exception as error:\n"
            "        print(error, flush=True); time.sleep(1)\n"
            "sys.exit(1)\n"
        )],
    )
    pod = wait_pod_phase(control_plane, real_namespace, "client", ("Succeeded", "Failed"), timeout=120)
    logs = control_plane.kubectl("logs", "client", f"--namespace={real_namespace}").stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    assert logs.strip().splitlines()[-1] == "200", logs


def test_names_outside_the_cluster_domain_do_not_resolve(control_plane, real_namespace, built_images):
    """Why: pods on the test node must not reach, or even look up, anything beyond the machine."""
    run_pod(
        control_plane, real_namespace, "lookup", image=built_images.image,
        command=["python3", "-c", (
            "import socket\n"
            "try:\n"
            "    print(socket.gethostbyname('pypi.org'))\n"
            "except OSError as error:\n"
            "    print('unresolved', error)\n"
        )],
    )
    wait_pod_phase(control_plane, real_namespace, "lookup", ("Succeeded", "Failed"))
    logs = control_plane.kubectl("logs", "lookup", f"--namespace={real_namespace}").stdout
    assert logs.startswith("unresolved"), logs
