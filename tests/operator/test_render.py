"""``omnia render``: offline, the objects the operator would create, from the same builders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omnia.cli import app
from omnia.manifests import load
from omnia.operator import builders, labels
from omnia.operator import render as rendering
from omnia.operator.sessionstores import DefaultStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-agent"
REDIS = DefaultStore(type="redis", namespace="omnia-system", name="omnia-session-redis", key="url")
DEFAULT_REDIS = "--default-session-secret=redis=omnia-system/omnia-session-redis:url"


def test_support_agent_renders_its_snapshot_and_every_owned_object():
    defaults = builders.Defaults(image="omnia:test", session_stores={"redis": REDIS})
    objects = rendering.render(load([EXAMPLE]), defaults=defaults)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "support-prompts-1.0.0-" + objects[0]["metadata"]["name"].rsplit("-", 1)[1]),
        ("Secret", "support-agent-session-store"),
        ("ServiceAccount", "support-agent"), ("ConfigMap", "support-agent-config"), ("Service", "support-agent"),
        ("Deployment", "support-agent"), ("HorizontalPodAutoscaler", "support-agent"),
        ("PodDisruptionBudget", "support-agent"), ("NetworkPolicy", "support-agent"),
    ]
    deployment = objects[5]
    assert deployment["spec"]["replicas"] == 2  # starts at minReplicas; then left to the HPA
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "omnia:test"


def test_the_default_session_stores_mirror_is_printed_without_its_value():
    """The value lives in the cluster's Secret; offline, the mirror shows where it comes from and no data."""
    defaults = builders.Defaults(image="omnia:test", session_stores={"redis": REDIS})
    mirror = rendering.render(load([EXAMPLE]), defaults=defaults)[1]
    assert "data" not in mirror
    assert mirror["metadata"]["annotations"] == {labels.SESSION_STORE_SOURCE: "omnia-system/omnia-session-redis:url"}
    runtime = rendering.render(load([EXAMPLE]), defaults=defaults)[5]["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "OMNIA_SESSION_URL",
            "valueFrom": {"secretKeyRef": {"name": "support-agent-session-store", "key": "url"}}} in runtime["env"]


def test_render_prints_multi_document_yaml_that_kubectl_can_apply():
    result = CliRunner().invoke(app, ["render", str(EXAMPLE), "--image", "omnia:test", DEFAULT_REDIS])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert len(documents) == 9 and all({"apiVersion", "kind", "metadata"} <= set(d) for d in documents)
    assert "agent.json: |" in result.output  # readable in a GitOps diff


def test_without_a_default_session_store_render_says_what_the_operator_would_report(tmp_path):
    """The operator would roll nothing out (SessionStoreNotConfigured): render exits 2 with the same advice."""
    result = CliRunner().invoke(app, ["render", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "agentruntime.yaml (document 1): spec.session: SessionStoreNotConfigured:" in result.output
    assert "--default-session-secret redis=NAMESPACE/NAME:KEY" in result.output


def test_a_malformed_default_session_secret_exits_2():
    for command in ("render", "operator"):
        result = CliRunner().invoke(app, [command, *([str(EXAMPLE)] if command == "render" else []),
                                          "--default-session-secret", "redis=omnia-session-redis"])
        assert result.exit_code == 2, (command, result.output)
        assert "TYPE=NAMESPACE/NAME:KEY" in result.output


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
    result = subprocess.run([sys.executable, "-m", "omnia", "operator", "--help"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})  # rich shortens long option names to fit
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--namespace", "--all-namespaces", "--liveness", "--image",
                                                      "--default-session-secret", "--otlp-endpoint",
                                                      "--otlp-headers-secret", "--trace-sampling-ratio"))


def test_render_takes_the_operators_tracing_options():
    """``omnia render`` prints the pods the operator would make with the chart's ``tracing`` values."""
    result = CliRunner().invoke(app, ["render", str(EXAMPLE), "--image", "omnia:test", DEFAULT_REDIS,
                                      "--otlp-endpoint", "http://collector:4317",
                                      "--otlp-headers-secret", "otlp:headers", "--trace-sampling-ratio", "0.2"])
    assert result.exit_code == 0, result.output
    deployment = next(obj for obj in yaml.safe_load_all(result.output) if obj["kind"] == "Deployment")
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        env = {item["name"]: item for item in container["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://collector:4317"
        assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.2"
        assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {"secretKeyRef": {"name": "otlp", "key": "headers"}}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--otlp-endpoint", "http://c:4317", "--otlp-headers-secret", "otlp"], "is not NAME:KEY",
                     id="headers-without-key"),
        pytest.param(["--otlp-headers-secret", "otlp:headers"], "needs --otlp-endpoint", id="headers-without-endpoint"),
        pytest.param(["--trace-sampling-ratio", "2"], "--trace-sampling-ratio", id="ratio-above-one"),
    ],
)
def test_malformed_tracing_options_exit_2(arguments, message):
    for command in ("render", "operator"):
        result = CliRunner().invoke(app, [command, *([str(EXAMPLE)] if command == "render" else []), *arguments])
        assert result.exit_code == 2, (command, result.output)
        assert message in result.output


@pytest.mark.parametrize(("arguments", "ingress", "scrape"), [
    pytest.param([], ("ingress-nginx",), ("monitoring",), id="defaults"),
    pytest.param(["--ingress-namespace", "traefik", "--ingress-namespace", "gateways", "--scrape-namespace", ""],
                 ("traefik", "gateways"), (), id="given"),
])
def test_operator_network_policy_options_reach_the_builders(monkeypatch, arguments, ingress, scrape):
    """The namespaces admitted by default are installation choices, passed as options."""
    from omnia.operator import main

    seen = {}
    monkeypatch.setattr(main, "run", lambda **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(app, ["operator", *arguments])
    assert result.exit_code == 0, result.output
    defaults = seen["defaults"]
    assert (defaults.ingress_namespaces, defaults.scrape_namespaces) == (ingress, scrape)


@pytest.mark.parametrize(("arguments", "activator", "prometheus"), [
    pytest.param([], None, None, id="neither-by-default"),
    pytest.param(["--activator-service", "omnia-system/omnia-activator", "--prometheus-url", "http://prom:9090"],
                 builders.ActivatorService(namespace="omnia-system", name="omnia-activator"), "http://prom:9090",
                 id="given"),
])
def test_operator_scaling_options_reach_the_builders(monkeypatch, arguments, activator, prometheus):
    """No Prometheus is assumed any more: KEDA's prometheus triggers need --prometheus-url."""
    from omnia.operator import main

    seen = {}
    monkeypatch.setattr(main, "run", lambda **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(app, ["operator", *arguments])
    assert result.exit_code == 0, result.output
    assert (seen["defaults"].activator, seen["defaults"].prometheus_url) == (activator, prometheus)


@pytest.mark.parametrize("value", ["omnia-activator", "omnia-system/", "/omnia-activator", "a/b/c", "Omnia/x"])
def test_a_malformed_activator_service_exits_2(value):
    for command in ("render", "operator"):
        result = CliRunner().invoke(app, [command, *([str(EXAMPLE)] if command == "render" else []),
                                          "--activator-service", value])
        assert result.exit_code == 2, (command, result.output)
        assert f"--activator-service: {value!r} " in result.output, result.output


def test_render_takes_the_operators_scaling_options(tmp_path):
    """A scale-to-zero agent renders, as the operator would make it, only with an activator or a Prometheus."""
    for name in ("promptpack.yaml", "provider.yaml"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    agent = yaml.safe_load((EXAMPLE / "agentruntime.yaml").read_text())
    agent["spec"]["autoscaling"] |= {"engine": "keda", "minReplicas": 0}
    (tmp_path / "agentruntime.yaml").write_text(yaml.safe_dump(agent))

    refused = CliRunner().invoke(app, ["render", str(tmp_path), DEFAULT_REDIS])
    assert refused.exit_code == 2
    assert "needs a Prometheus" in refused.output

    result = CliRunner().invoke(app, ["render", str(tmp_path), DEFAULT_REDIS,
                                      "--activator-service", "omnia-system/omnia-activator"])
    assert result.exit_code == 0, result.output
    scaled = next(obj for obj in yaml.safe_load_all(result.output) if obj["kind"] == "ScaledObject")
    assert [trigger["type"] for trigger in scaled["spec"]["triggers"]] == ["memory", "external-push"]
    assert scaled["spec"]["triggers"][1]["metadata"]["scalerAddress"] == "omnia-activator.omnia-system.svc:9090"
