"""The test control plane behaves like a real cluster where the operator's tests rely on it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import controlplane

pytestmark = pytest.mark.cluster


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_apiserver_reports_its_real_version(control_plane: controlplane.ControlPlane) -> None:
    """The binaries are stamped with their release, so version-dependent clients see 1.35.4, not v0.0.0."""
    with control_plane.http_client() as client:
        version = client.get("/version").raise_for_status().json()
    assert (version["gitVersion"], version["major"], version["minor"]) == (controlplane.KUBERNETES_VERSION, "1", "35")

    both = _json(control_plane.kubectl("version", "--output=json"))
    assert both["clientVersion"]["gitVersion"] == controlplane.KUBERNETES_VERSION
    assert both["serverVersion"]["gitVersion"] == controlplane.KUBERNETES_VERSION


def test_fake_nodes_are_ready_with_room_for_pods(control_plane: controlplane.ControlPlane) -> None:
    """KWOK keeps the registered nodes Ready and they advertise allocatable capacity."""
    nodes = _json(control_plane.kubectl("get", "nodes", "--output=json"))["items"]
    assert sorted(node["metadata"]["name"] for node in nodes) == sorted(control_plane.node_names)
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", node["metadata"]["name"]
        assert int(node["status"]["allocatable"]["pods"]) >= 100
        assert not [taint for taint in node["spec"].get("taints", []) if taint["effect"] == "NoSchedule"]


def test_plain_deployment_reaches_available_replicas(
    control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    """controller-manager creates the pods, the scheduler binds them and KWOK reports them Running and Ready."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(deployment), check=True)
    control_plane.kubectl(
        "wait", "--for=condition=Available", "deployment/web", f"--namespace={namespace}", "--timeout=120s",
        check=True, timeout=150,
    )

    status = _json(control_plane.kubectl("get", "deployment/web", f"--namespace={namespace}", "--output=json"))
    assert status["status"]["availableReplicas"] == 2
    pods = _json(control_plane.kubectl("get", "pods", f"--namespace={namespace}", "-l", "app=web", "--output=json"))
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in control_plane.node_names
        assert pod["status"]["podIP"].startswith("10.244.")


def test_rbac_denies_an_unprivileged_user(control_plane: controlplane.ControlPlane) -> None:
    """A certificate user outside system:masters with no bindings may authenticate but not read pods."""
    jane = control_plane.add_user("jane", groups=["developers"])

    denied = control_plane.kubectl("get", "pods", "--namespace=default", kubeconfig=jane.kubeconfig)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert 'User "jane"' in denied.stderr

    with control_plane.http_client(jane) as client:
        response = client.get("/api/v1/namespaces/default/pods")
    assert response.status_code == 403
    assert response.json()["reason"] == "Forbidden"


def test_rbac_grants_a_group_exactly_what_its_role_binding_allows(
    control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    """Least-privilege credentials: a group bound to a read-only Role reads pods there and nothing more."""
    control_plane.kubectl(
        "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", f"--namespace={namespace}",
        check=True,
    )
    control_plane.kubectl(
        "create", "rolebinding", "readers", "--role=pod-reader", "--group=auditors", f"--namespace={namespace}",
        check=True,
    )
    auditor = control_plane.add_user("ann", groups=["auditors"])

    def can(*args: str) -> str:
        return control_plane.kubectl("auth", "can-i", *args, kubeconfig=auditor.kubeconfig).stdout.strip()

    assert can("list", "pods", f"--namespace={namespace}") == "yes"
    assert can("create", "pods", f"--namespace={namespace}") == "no"
    assert can("list", "pods", "--namespace=default") == "no"
    assert control_plane.kubectl(
        "get", "pods", f"--namespace={namespace}", kubeconfig=auditor.kubeconfig
    ).returncode == 0


def test_service_account_token_authenticates_as_the_account(
    control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    """Tokens are signed by the configured key, so an operator can run under its own ServiceAccount."""
    control_plane.kubectl("create", "serviceaccount", "operator", f"--namespace={namespace}", check=True)
    token = control_plane.create_token(namespace=namespace, service_account="operator", duration="10m")
    kubeconfig = control_plane.kubeconfig_for_token(token, name="operator")

    review = _json(control_plane.kubectl("auth", "whoami", "--output=json", kubeconfig=kubeconfig))
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:operator"

    with control_plane.token_http_client(token) as client:
        assert client.get(f"/api/v1/namespaces/{namespace}/pods").status_code == 403


def test_failed_start_reports_the_component_log_and_leaves_no_process(
    control_plane_binaries: controlplane.Binaries, tmp_path: Path
) -> None:
    """A component that dies at start-up fails start() with its log, and what did start is stopped."""
    fake = tmp_path / "cache"
    (fake / "bin").mkdir(parents=True)
    (fake / "kwok").mkdir()
    for name in controlplane.REQUIRED_BINARIES:
        (fake / "bin" / name).symlink_to(control_plane_binaries.path(name))
    (fake / "kwok" / "stages-fast.yaml").symlink_to(control_plane_binaries.kwok_stages)
    broken = fake / "bin" / "kube-apiserver"
    broken.unlink()
    broken.write_text("#!/bin/sh\necho 'refusing these flags' >&2\nexit 3\n")
    broken.chmod(0o755)
    workdir = tmp_path / "plane"

    plane = controlplane.ControlPlane(binaries=controlplane.Binaries(fake), workdir=workdir, ready_timeout=60)
    with pytest.raises(controlplane.ControlPlaneError, match=r"(?s)kube-apiserver exited with code 3.*refusing"):
        plane.start()

    assert plane.pids() == {}
    assert _processes_mentioning(str(workdir)) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
