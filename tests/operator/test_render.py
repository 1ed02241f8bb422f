"""``omnia render``: offline, the objects the operator would create, from the same builders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from omnia.cli import app
from omnia.manifests import load
from omnia.operator import builders
from omnia.operator import render as rendering

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-agent"


def test_support_agent_renders_its_snapshot_and_every_owned_object():
    objects = rendering.render(load([EXAMPLE]), defaults=builders.Defaults(image="omnia:test"))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "support-prompts-1.0.0-" + objects[0]["metadata"]["name"].rsplit("-", 1)[1]),
        ("ServiceAccount", "support-agent"), ("ConfigMap", "support-agent-config"), ("Service", "support-agent"),
        ("Deployment", "support-agent"), ("HorizontalPodAutoscaler", "support-agent"),
        ("PodDisruptionBudget", "support-agent"),
    ]
    deployment = objects[4]
    assert deployment["spec"]["replicas"] == 2  # starts at minReplicas; then left to the HPA
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "omnia:test"


def test_render_prints_multi_document_yaml_that_kubectl_can_apply():
    result = CliRunner().invoke(app, ["render", str(EXAMPLE), "--image", "omnia:test"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert len(documents) == 7 and all({"apiVersion", "kind", "metadata"} <= set(d) for d in documents)
    assert "agent.json: |" in result.output  # readable in a GitOps diff


def test_a_missing_reference_exits_2_naming_the_file_and_the_field(tmp_path):
    (tmp_path / "agent.yaml").write_text((EXAMPLE / "agentruntime.yaml").read_text())
    result = CliRunner().invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 2
    assert "agent.yaml (document 1): spec.promptPackRef: PromptPack 'support-prompts' is not among the manifests" in result.output


def test_an_invalid_manifest_exits_2_naming_the_field(tmp_path):
    (tmp_path / "agent.yaml").write_text((EXAMPLE / "agentruntime.yaml").read_text().replace("replicas: 3", "replicas: -3"))
    result = CliRunner().invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 2
    assert "spec.replicas" in result.output


def test_operator_refuses_namespaces_and_all_namespaces_together():
    result = CliRunner().invoke(app, ["operator", "--namespace", "a", "--all-namespaces"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output


def test_operator_help_lists_its_options():
    result = subprocess.run([sys.executable, "-m", "omnia", "operator", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--namespace", "--all-namespaces", "--liveness", "--image"))
