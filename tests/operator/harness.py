"""Running the operator against the test control plane, as a real process.

Shared by the cluster tests (tests/cluster/test_operator*.py) and
bench/reconciling.py. The operator runs as ``python -m omnia operator`` under
its own ServiceAccount, bound to the ClusterRole in deploy/rbac/ — never as
the admin — so every test also checks that the RBAC rules are enough.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds"
CLUSTER_ROLE = REPO / "deploy" / "rbac" / "cluster_role.yaml"
OPERATOR_ACCOUNT = "omnia-operator"

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
    explain: Callable[[], Any] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy.

    The failure names ``what`` and shows ``check``'s last exception or value,
    and what ``explain()`` returns (e.g. the object's status).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported below if it persists
            last = exc
        if time.monotonic() > deadline:
            detail = ""
            if explain is not None:
                try:
                    detail = f"\n{explain()!r}"
                except Exception as exc:  # noqa: BLE001
                    detail = f"\n(explain failed: {exc!r})"
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{detail}")
        time.sleep(interval)


def kubectl_json(plane, *args: str, kubeconfig: Path | None = None) -> Any:
    result = plane.kubectl(*args, "--output=json", kubeconfig=kubeconfig)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return json.loads(result.stdout)


def get(plane, resource: str, namespace: str) -> dict | None:
    """One object as JSON, or None when it does not exist."""
    result = plane.kubectl("get", resource, f"--namespace={namespace}", "--output=json")
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise RuntimeError(result.stderr.strip())
    return json.loads(result.stdout)


def apply(plane, manifest: dict | list | str, *, namespace: str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": manifest} if isinstance(manifest, list) else manifest
    )
    plane.kubectl("apply", f"--namespace={namespace}", "-f", "-", input=text, check=True)


def condition(obj: dict | None, type_: str) -> dict:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return item
    return {}


def install_crds(plane) -> None:
    """Omnia's CRDs, established; server-side so that it is idempotent across test modules."""
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS), check=True)
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS), check=True, timeout=90)


def operator_kubeconfig(plane, *, home: str, namespaces: Sequence[str], cluster_wide: bool = False) -> Path:
    """A kubeconfig for a fresh ``omnia-operator`` ServiceAccount in ``home`` with deploy/rbac's ClusterRole.

    Bound with a RoleBinding in each of ``namespaces`` (the ``--namespace``
    mode) or, with ``cluster_wide``, a ClusterRoleBinding.
    """
    plane.kubectl("apply", "-f", str(CLUSTER_ROLE), check=True)
    plane.kubectl("create", "serviceaccount", OPERATOR_ACCOUNT, f"--namespace={home}", check=True)
    subject = f"--serviceaccount={home}:{OPERATOR_ACCOUNT}"
    if cluster_wide:
        plane.kubectl("create", "clusterrolebinding", f"omnia-operator-{home}", "--clusterrole=omnia-operator",
                      subject, check=True)
    for namespace in namespaces:
        plane.kubectl("create", "rolebinding", "omnia-operator", "--clusterrole=omnia-operator", subject,
                      f"--namespace={namespace}", check=True)
    token = plane.create_token(namespace=home, service_account=OPERATOR_ACCOUNT, duration="2h")
    return plane.kubeconfig_for_token(token, name=f"operator-{home}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OperatorProcess:
    """``python -m omnia operator`` as a child process, with its log in a file."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespaces: Sequence[str],
        log_file: Path,
        image: str = "registry.invalid/omnia:test",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces)
        self.log_file = log_file
        self.image = image
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.port = 0
        self.metrics_port = 0
        self._popen: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> OperatorProcess:
        self.port = free_port()
        self.metrics_port = free_port()
        args = [sys.executable, "-m", "omnia", "operator", f"--liveness=127.0.0.1:{self.port}",
                f"--metrics=127.0.0.1:{self.metrics_port}",
                f"--image={self.image}", *self.extra_args]
        for namespace in self.namespaces:
            args.append(f"--namespace={namespace}")
        env = {key: value for key, value in os.environ.items() if key not in ("KUBECONFIG", "OMNIA_IMAGE")}
        env |= {"KUBECONFIG": str(self.kubeconfig), "OMNIA_LOG_LEVEL": "info", **self.env}
        log = self.log_file.open("ab")
        self._popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, cwd=REPO, start_new_session=True)
        log.close()
        if wait:
            wait_for(self.healthy, timeout=60, what=f"the operator's /healthz (log: {self.log_file})")
        return self

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def healthy(self) -> bool:
        if not self.alive():
            raise AssertionError(f"the operator exited with {self._popen.returncode}:\n{self.log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def probe(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).raise_for_status().json()

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """The samples the operator serves at /metrics: (name, labels as a frozenset of pairs) → value."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).raise_for_status().text
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies or the OOM killer strikes."""
        if self.alive():
            os.kill(self._popen.pid, signal.SIGKILL)
            self._popen.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self._popen.terminate()
            try:
                self._popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
