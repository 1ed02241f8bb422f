"""Routing an agent at zero to the activator: which addresses, which slice, and when."""

from __future__ import annotations

import pytest

from omnia.operator import builders, labels, routing
from tests.operator import manifests
from tests.operator.manifests import model

ACTIVATOR = builders.ActivatorService(namespace="omnia-system", name="omnia-activator")
TO_ZERO = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 3,
           "metrics": [{"type": "custom", "name": "active_connections", "target": 10}]}


def activator_slice(*endpoints: dict, address_type: str = "IPv4") -> dict:
    return {"addressType": address_type, "endpoints": list(endpoints)}


def endpoint(address: str, **conditions: bool) -> dict:
    found = {"addresses": [address]}
    if conditions:
        found["conditions"] = conditions
    return found


def test_ready_addresses_are_the_ready_ipv4_endpoints_of_every_slice_once_sorted():
    """Unset ready counts as Ready (the EndpointSlice API's rule); terminating and not-ready pods do not."""
    slices = [
        activator_slice(endpoint("10.0.0.9", ready=True), endpoint("10.0.0.2"), endpoint("10.0.0.5", ready=False)),
        activator_slice(endpoint("10.0.0.2", ready=True), endpoint("10.0.0.7", ready=False, terminating=True)),
        activator_slice(endpoint("fd00::1", ready=True), address_type="IPv6"),
    ]
    assert routing.ready_addresses(slices) == ["10.0.0.2", "10.0.0.9"]
    assert routing.ready_addresses([]) == []


def test_the_slice_joins_the_agents_service_and_leads_to_the_activators_http_port():
    agent = model(manifests.agent("support-agent", autoscaling=TO_ZERO))
    built = routing.build_activator_slice(agent, addresses=["10.0.0.2", "10.0.0.9"])
    assert (built["apiVersion"], built["kind"]) == ("discovery.k8s.io/v1", "EndpointSlice")
    metadata = built["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("support-agent-activator", "team-a")
    assert metadata["labels"]["kubernetes.io/service-name"] == "support-agent"
    assert metadata["labels"]["endpointslice.kubernetes.io/managed-by"] == "operator.omnia.altairalabs.ai"
    assert metadata["labels"].items() >= labels.agent_labels("support-agent").items()
    assert metadata["ownerReferences"] == [builders.owner_reference(agent)]
    assert built["addressType"] == "IPv4"
    assert built["endpoints"] == [{"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                                  {"addresses": ["10.0.0.9"], "conditions": {"ready": True}}]
    service_port = builders.build_service(agent)["spec"]["ports"][0]["name"]
    assert built["ports"] == [{"name": service_port, "port": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize(("autoscaling", "activator", "exists", "ready", "expected"), [
    pytest.param(TO_ZERO, ACTIVATOR, True, 0, True, id="at-zero"),
    pytest.param(TO_ZERO, ACTIVATOR, True, 1, False, id="a-pod-is-ready"),
    pytest.param(TO_ZERO, ACTIVATOR, False, 0, False, id="not-rolled-out-yet"),
    pytest.param(TO_ZERO, None, True, 0, False, id="no-activator"),
    pytest.param({**TO_ZERO, "minReplicas": 1}, ACTIVATOR, True, 0, False, id="not-scale-to-zero"),
    pytest.param({**TO_ZERO, "enabled": False}, ACTIVATOR, True, 0, False, id="autoscaling-off"),
])
def test_the_service_leads_to_the_activator_only_while_a_scale_to_zero_agent_has_no_ready_pod(
    autoscaling, activator, exists, ready, expected
):
    agent = model(manifests.agent(autoscaling=autoscaling))
    assert routing.wanted(agent, activator=activator, deployment_exists=exists, ready_replicas=ready) is expected


def test_a_slice_summary_knows_its_controller():
    body = {"metadata": {"uid": "s-1", "ownerReferences": [{"uid": "other"}, {"uid": "a-1", "controller": True}]}}
    assert routing.SliceSummary.from_body(body) == routing.SliceSummary(uid="s-1", controller="a-1")
