"""The generated CRDs on a real kube-apiserver: installed, enforced, and shown by kubectl.

Everything here goes through kubectl against the test control plane, as a
user would: objects are really created (a dry run would skip parts of
admission), and rejections are judged by the message a user reads.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from omnia.api import crds
from omnia.api.v1alpha1 import AgentRuntimeStatus, Condition, parse_manifest
from tests.api.cases import BRIEF_EXAMPLE, REPO, InvalidCase, example_files, invalid_cases

if TYPE_CHECKING:
    from controlplane import ControlPlane

pytestmark = pytest.mark.cluster

CRD_NAMES = [crd["metadata"]["name"] for crd in crds.custom_resource_definitions()]


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Iterator[Any]:
    """kubectl with the committed CRDs installed and Established."""
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy" / "crds"), check=True
    )
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in CRD_NAMES), check=True
    )
    yield control_plane.kubectl


@pytest.fixture(scope="module")
def shared_namespace(kubectl: Any) -> Iterator[str]:
    """One namespace for the objects the API server is expected to refuse."""
    name = "omnia-crd-rejections"
    kubectl("create", "namespace", name, check=True)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def _create(kubectl: Any, namespace: str, manifest: str | dict[str, Any]) -> Any:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    return kubectl("create", "--namespace", namespace, "-f", "-", input=text)


def _get(kubectl: Any, namespace: str, resource: str) -> dict[str, Any]:
    result = kubectl("get", "--namespace", namespace, resource, "--output=json", check=True)
    return json.loads(result.stdout)


def test_crds_install_and_become_established(kubectl: Any) -> None:
    for name in CRD_NAMES:
        crd = json.loads(kubectl("get", f"crd/{name}", "--output=json", check=True).stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", name
        assert conditions["NamesAccepted"] == "True", name
        assert conditions.get("NonStructuralSchema") is None, name


def test_brief_example_is_created_unchanged(kubectl: Any, namespace: str) -> None:
    """The product contract: the brief's manifest applies as written."""
    result = _create(kubectl, namespace, BRIEF_EXAMPLE)
    assert result.returncode == 0, result.stderr

    agent = _get(kubectl, namespace, "agentruntime/support-agent")
    assert [m["target"] for m in agent["spec"]["autoscaling"]["metrics"]] == ["70%", 100]
    assert agent["spec"]["session"] == {"type": "redis", "ttl": "24h", "maxTurns": 1000, "maxBytes": 4194304}
    assert agent["spec"]["facade"]["port"] == 8080
    assert agent["spec"]["autoscaling"]["engine"] == "hpa"


@pytest.mark.parametrize("path", example_files(), ids=lambda path: str(path.relative_to(REPO / "examples")))
def test_example_manifests_are_created(kubectl: Any, namespace: str, path: Path) -> None:
    """What the docs show must work on a real cluster, not only in omnia run."""
    result = kubectl("create", "--namespace", namespace, "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_objects_read_back_from_the_server_parse(kubectl: Any, namespace: str) -> None:
    """The operator reads objects as the server stores them, server-side defaults included."""
    for path in example_files():
        kubectl("create", "--namespace", namespace, "-f", str(path), check=True)
    for resource in ("agentruntimes", "promptpacks", "providers", "toolregistries"):
        for item in _get(kubectl, namespace, resource)["items"]:
            parsed = parse_manifest(item)
            assert parsed.metadata.generation == 1


@pytest.mark.parametrize("case", invalid_cases())
def test_invalid_manifest_is_rejected_with_a_readable_message(
    kubectl: Any, shared_namespace: str, case: InvalidCase
) -> None:
    """Each schema constraint and CEL rule is enforced, with the field path and the rule's message."""
    result = _create(kubectl, shared_namespace, case.manifest)
    assert result.returncode != 0, f"accepted: {case.id}"
    for fragment in case.expect + case.expect_server:
        assert fragment in result.stderr


def _explain(kubectl: Any, field: str) -> str:
    # The API server publishes a new CRD's OpenAPI a few seconds after it is Established.
    deadline = time.monotonic() + 60
    while True:
        result = kubectl("explain", field)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return " ".join(result.stdout.split())
        time.sleep(1)


@pytest.mark.parametrize(
    ("field", "fragments"),
    [
        pytest.param(
            "agentruntime.spec.autoscaling",
            ["Horizontal autoscaling of the agent's pods", "minReplicas", "(scale to zero) needs engine keda"],
            id="autoscaling",
        ),
        pytest.param("agentruntime.spec.autoscaling.metrics.target", ["70%", "average per pod"], id="metric-target"),
        pytest.param("provider.spec.credentials.secretRef", ["Secret key holding the API key."], id="provider-secret"),
        pytest.param("promptpack.spec.rollout.steps", ["weight", "pause"], id="rollout-steps"),
        pytest.param("toolregistry.spec.handlers.requireApproval", ["approve each call"], id="require-approval"),
    ],
)
def test_kubectl_explain_shows_the_model_descriptions(kubectl: Any, field: str, fragments: list[str]) -> None:
    text = _explain(kubectl, field)
    for fragment in fragments:
        assert fragment in text


def _patch_status(kubectl: Any, namespace: str, resource: str, status: dict[str, Any]) -> Any:
    return kubectl(
        "patch", "--namespace", namespace, resource, "--subresource=status", "--type=merge",
        "--patch", json.dumps({"status": status}),
    )


def test_status_written_from_the_python_model_is_accepted(kubectl: Any, namespace: str) -> None:
    """The operator serialises status with the models; the server's schema must agree."""
    _create(kubectl, namespace, BRIEF_EXAMPLE)
    status = AgentRuntimeStatus(
        phase="Running",
        replicas=3,
        ready_replicas=2,
        updated_replicas=3,
        selector="app.kubernetes.io/instance=support-agent",
        active_prompt_versions=["1.0.0", "1.1.0"],
        endpoint="ws://support-agent.default.svc:8080/ws",
        config_hash="abc123",
        observed_generation=1,
        conditions=[
            Condition(
                type="Ready",
                status="False",
                reason="ReplicasNotReady",
                message="2 of 3 pods are ready",
                last_transition_time=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
                observed_generation=1,
            )
        ],
    )
    result = _patch_status(
        kubectl, namespace, "agentruntime/support-agent", status.model_dump(mode="json", exclude_none=True)
    )
    assert result.returncode == 0, result.stderr

    stored = _get(kubectl, namespace, "agentruntime/support-agent")["status"]
    assert AgentRuntimeStatus.model_validate(stored) == status


def test_status_conditions_are_validated(kubectl: Any, namespace: str) -> None:
    _create(kubectl, namespace, BRIEF_EXAMPLE)
    condition = {"type": "Ready", "status": "Maybe", "reason": "X", "lastTransitionTime": "2025-01-01T00:00:00Z"}
    bad = {"conditions": [condition]}
    result = _patch_status(kubectl, namespace, "agentruntime/support-agent", bad)
    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr


def test_kubectl_get_shows_the_printer_columns(kubectl: Any, namespace: str) -> None:
    _create(kubectl, namespace, BRIEF_EXAMPLE)
    _patch_status(
        kubectl,
        namespace,
        "agentruntime/support-agent",
        {"phase": "Running", "replicas": 3, "readyReplicas": 3, "activePromptVersions": ["1.0.0"],
         "budgetPercentUsed": 42},
    )

    lines = kubectl("get", "--namespace", namespace, "agentruntimes", check=True).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "REPLICAS", "READY", "PROVIDER", "PROMPT", "BUDGET", "AGE"]
    row = lines[1].split()
    assert row[:5] == ["support-agent", "Running", "3", "3", "claude-provider"]
    assert "1.0.0" in row[5]
    assert row[6] == "42"

    wide = kubectl("get", "--namespace", namespace, "ar", "--output=wide", check=True).stdout.splitlines()
    assert wide[0].split()[-1] == "ENDPOINT"


def test_short_names_and_category_list_omnia_objects(kubectl: Any, namespace: str) -> None:
    for path in example_files():
        kubectl("create", "--namespace", namespace, "-f", str(path), check=True)
    listed = kubectl("get", "--namespace", namespace, "omnia", "--output=name", check=True).stdout.split()
    kinds = {name.split("/")[0].split(".")[0] for name in listed}
    assert kinds == {"agentruntime", "promptpack", "provider", "toolregistry"}
    for short_name in ("agent", "ar", "pp", "tr", "prov"):
        result = kubectl("get", "--namespace", namespace, short_name)
        assert result.returncode == 0, result.stderr


def test_kubectl_scale_changes_spec_replicas(kubectl: Any, namespace: str) -> None:
    """The scale subresource lets kubectl scale (and an HPA) drive an AgentRuntime."""
    _create(kubectl, namespace, BRIEF_EXAMPLE)
    _patch_status(
        kubectl, namespace, "agentruntime/support-agent",
        {"replicas": 3, "selector": "app.kubernetes.io/instance=support-agent"},
    )

    kubectl("scale", "--namespace", namespace, "agentruntime/support-agent", "--replicas=5", check=True)

    assert _get(kubectl, namespace, "agentruntime/support-agent")["spec"]["replicas"] == 5
    scale = _get(kubectl, namespace, "agentruntime/support-agent")
    assert scale["status"]["selector"] == "app.kubernetes.io/instance=support-agent"
