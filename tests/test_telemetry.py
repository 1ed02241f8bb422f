"""The tracer provider the standard OpenTelemetry variables describe, as the operator sets them in pods."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import sampling

from omnia import telemetry

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.observability.svc:4317"}


def test_no_endpoint_no_provider():
    """Without a collector tracing stays the API's no-op, whatever else is set."""
    assert telemetry.tracer_provider(service_name="omnia-runtime", env={"OTEL_SERVICE_NAME": "helper"}) is None


def test_service_name_and_resource_attributes_come_from_the_mapping():
    env = {
        **ENDPOINT,
        "OTEL_SERVICE_NAME": "helper",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=team-a,k8s.container.name=runtime,note=a%2Cb",
    }
    provider = telemetry.tracer_provider(service_name="omnia-runtime", env=env)
    try:
        attributes = provider.resource.attributes
        assert attributes["service.name"] == "helper"
        assert attributes["k8s.namespace.name"] == "team-a"
        assert attributes["k8s.container.name"] == "runtime"
        assert attributes["note"] == "a,b"
    finally:
        provider.shutdown()


def test_service_name_defaults_to_the_component():
    provider = telemetry.tracer_provider(service_name="omnia-facade", env=ENDPOINT)
    try:
        assert provider.resource.attributes["service.name"] == "omnia-facade"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("env", "description"),
    [
        pytest.param({}, "ParentBased{root:AlwaysOnSampler", id="sdk-default"),
        pytest.param({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
                     "ParentBased{root:TraceIdRatioBased{0.25}", id="parent-based-ratio"),
        pytest.param({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
                     "TraceIdRatioBased{0.0}", id="ratio-zero"),
        pytest.param({"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler", id="off"),
    ],
)
def test_sampler_from_the_mapping(env, description):
    assert telemetry.sampler(env).get_description().startswith(description)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, id="unknown-sampler"),
        pytest.param({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, id="ratio-above-one"),
        pytest.param({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, id="not-a-number"),
    ],
)
def test_sampler_refuses_what_it_cannot_honour(env):
    """A pod told to sample in a way it cannot must not start tracing differently: it says which variable."""
    with pytest.raises(telemetry.TracingConfigError, match="OTEL_TRACES_SAMPLER"):
        telemetry.sampler(env)


def test_sampler_is_an_sdk_sampler():
    assert isinstance(telemetry.sampler({}), sampling.Sampler)
