"""Rendering and linting the Helm chart with a real helm, for the chart tests.

helm is the one scripts/build-control-plane builds beside kube-apiserver (the
chart tests on the control plane need both). Its configuration, cache and
data folders point into a folder the caller gives, so nothing is read from or
written to the developer's own helm setup.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "omnia"


class HelmError(subprocess.CalledProcessError):
    """helm failed; unlike its base class, the message carries helm's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


class Helm:
    """One helm binary, isolated in ``home``, rendering for ``kube_version``.

    ``kube_version`` matters because a helm built from Go modules has no
    Kubernetes version compiled in and would assume v1.20, which the chart's
    ``kubeVersion`` refuses.
    """

    def __init__(self, *, binary: Path, home: Path, kube_version: str) -> None:
        self.binary = binary
        self.home = home
        self.kube_version = kube_version
        home.mkdir(parents=True, exist_ok=True)
        self._env = {key: value for key, value in os.environ.items() if not key.startswith("HELM_")}
        self._env.pop("KUBECONFIG", None)
        self._env |= {
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._values_count = 0

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.binary), *args]
        if kubeconfig is not None:
            command.append(f"--kubeconfig={kubeconfig}")
        result = subprocess.run(
            command, capture_output=True, text=True, env=self._env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise HelmError(result.returncode, command, output=result.stdout, stderr=result.stderr)
        return result

    def values_file(self, values: Mapping[str, Any] | None) -> Path:
        """``values`` written as a file for ``--values``."""
        self._values_count += 1
        path = self.home / f"values-{self._values_count}.yaml"
        path.write_text(yaml.safe_dump(dict(values or {})))
        return path

    def lint(self, values: Mapping[str, Any] | None = None, *, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
        return self.run(
            "lint", str(chart), "--strict", f"--kube-version={self.kube_version}",
            f"--values={self.values_file(values)}", check=False,
        )

    def template_text(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "omnia",
        namespace: str = "omnia-system",
        chart: Path = CHART,
        extra: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template", release, str(chart), f"--namespace={namespace}", f"--kube-version={self.kube_version}",
            f"--values={self.values_file(values)}", *extra, check=check,
        )

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "omnia",
        namespace: str = "omnia-system",
        chart: Path = CHART,
    ) -> list[dict[str, Any]]:
        """The objects the templates render (CRDs excluded, as ``helm template`` does)."""
        text = self.template_text(values, release=release, namespace=namespace, chart=chart).stdout
        return [obj for obj in yaml.safe_load_all(text) if obj]


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Mapping[str, Any]]:
    """The objects of ``kind`` (and ``name``, when given)."""
    return [
        obj for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> Mapping[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rule_set(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """RBAC rules as (apiGroup, resource, verb, resourceNames) grants: equal sets grant the same."""
    grants = set()
    for rule in rules:
        names = tuple(sorted(rule.get("resourceNames") or ()))
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                for verb in rule.get("verbs") or ():
                    grants.add((group, resource, verb, names))
    return grants
