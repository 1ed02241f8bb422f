"""Traces from agent pods: the installation's collector, overridden per agent, as standard OTEL_* variables."""

from __future__ import annotations

import json

import pytest

from omnia.api.v1alpha1 import SecretKeySelector
from omnia.operator import builders, hashing
from tests.operator import manifests
from tests.operator.manifests import model
from tests.operator.test_builders import by_kind, config_for, objects_for

COLLECTOR = "http://otel-collector.observability.svc:4317"
INSTALLED = builders.Defaults(
    image="registry.example/omnia:1",
    tracing=builders.TracingDefaults(
        endpoint=COLLECTOR, headers=SecretKeySelector(name="otlp", key="headers"), sampling_ratio=0.5
    ),
)


def containers(agent, *, defaults=INSTALLED) -> dict[str, dict]:
    deployment = by_kind(objects_for(agent, defaults=defaults))["Deployment"]
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def test_no_collector_no_tracing_variables():
    """An installation without a collector leaves the pods as they were (and their config hash too)."""
    agent = model(manifests.agent())
    assert builders.tracing(agent, defaults=builders.TracingDefaults()) is None
    for container in containers(agent, defaults=builders.Defaults(image="registry.example/omnia:1")).values():
        assert not any(name.startswith("OTEL_") for name in env_of(container))


def test_both_containers_export_to_the_installations_collector():
    agent = model(manifests.agent("helper"))
    for name, container in containers(agent).items():
        env = env_of(container)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": COLLECTOR}
        assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
        assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.5"
        assert env["OTEL_SERVICE_NAME"]["value"] == "helper"
        attributes = dict(item.split("=", 1) for item in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
        assert attributes == {
            "service.namespace": "$(OMNIA_POD_NAMESPACE)",
            "k8s.namespace.name": "$(OMNIA_POD_NAMESPACE)",
            "k8s.deployment.name": "helper",
            "k8s.pod.name": "$(OMNIA_POD_NAME)",
            "k8s.container.name": name,
        }


def test_downward_api_variables_come_before_the_attributes_that_expand_them():
    """Kubernetes expands $(VAR) only from variables defined earlier in the list."""
    for container in containers(model(manifests.agent())).values():
        names = [item["name"] for item in container["env"]]
        assert names.index("OMNIA_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
        assert names.index("OMNIA_POD_NAMESPACE") < names.index("OTEL_RESOURCE_ATTRIBUTES")
        assert env_of(container)["OMNIA_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_headers_reach_both_containers_by_secret_key_ref_and_never_a_configmap():
    agent = model(manifests.agent())
    objects = objects_for(agent, defaults=INSTALLED)
    for container in containers(agent).values():
        assert env_of(container)["OTEL_EXPORTER_OTLP_HEADERS"] == {
            "name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {"name": "otlp", "key": "headers"}}}
    text = json.dumps([obj for obj in objects.objects if obj["kind"] == "ConfigMap"])
    assert "otlp" not in text and "OTEL_" not in text


@pytest.mark.parametrize(
    ("tracing", "expected"),
    [
        pytest.param(None, builders.Tracing(COLLECTOR, SecretKeySelector(name="otlp", key="headers"), 0.5),
                     id="installation"),
        pytest.param({"enabled": False}, None, id="turned-off"),
        pytest.param({"samplingRatio": 0.05}, builders.Tracing(COLLECTOR, SecretKeySelector(name="otlp", key="headers"),
                                                               0.05), id="own-ratio"),
        pytest.param({"headersSecretRef": {"name": "mine", "key": "h"}},
                     builders.Tracing(COLLECTOR, SecretKeySelector(name="mine", key="h"), 0.5), id="own-headers"),
        pytest.param({"endpoint": "http://team-collector:4317"},
                     builders.Tracing("http://team-collector:4317", None, 0.5),
                     id="own-endpoint-never-gets-the-installations-headers"),
        pytest.param({"endpoint": "https://vendor.example:443", "headersSecretRef": {"name": "vendor", "key": "h"}},
                     builders.Tracing("https://vendor.example:443", SecretKeySelector(name="vendor", key="h"), 0.5),
                     id="own-endpoint-own-headers"),
    ],
)
def test_spec_tracing_overrides_the_installation(tracing, expected):
    spec = {} if tracing is None else {"tracing": tracing}
    assert builders.tracing(model(manifests.agent(**spec)), defaults=INSTALLED.tracing) == expected


def test_an_agent_can_name_a_collector_when_the_installation_has_none():
    agent = model(manifests.agent(tracing={"endpoint": "http://team-collector:4317"}))
    assert builders.tracing(agent, defaults=builders.TracingDefaults()) == builders.Tracing(
        "http://team-collector:4317", None, 1.0)


@pytest.mark.parametrize(
    "tracing",
    [
        pytest.param({"samplingRatio": 1.5}, id="ratio-above-one"),
        pytest.param({"samplingRatio": -0.1}, id="negative-ratio"),
        pytest.param({"endpoint": ""}, id="empty-endpoint"),
        pytest.param({"headersSecretRef": {"name": "otlp"}}, id="headers-without-key"),
        pytest.param({"collector": "x"}, id="unknown-field"),
    ],
)
def test_invalid_tracing_specs_are_refused(tracing):
    with pytest.raises(ValueError):
        model(manifests.agent(tracing=tracing))


def test_a_change_of_collector_or_sampling_rolls_the_pods():
    """The variables are on the pod template, the settings in the config hash."""
    agent = model(manifests.agent())
    config = config_for(agent)

    def hash_with(tracing):
        return hashing.config_hash(config, secret_versions={}, images=["i"],
                                   tracing=tracing.to_dict() if tracing else None)

    base = builders.Tracing(COLLECTOR, None, 1.0)
    hashes = {
        hash_with(None),
        hash_with(base),
        hash_with(builders.Tracing("http://other:4317", None, 1.0)),
        hash_with(builders.Tracing(COLLECTOR, None, 0.1)),
        hash_with(builders.Tracing(COLLECTOR, SecretKeySelector(name="otlp", key="headers"), 1.0)),
    }
    assert len(hashes) == 5
    assert hash_with(None) == hashing.config_hash(config, secret_versions={}, images=["i"])
