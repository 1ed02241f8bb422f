"""An agent's ready addresses are read from its Service's EndpointSlices, the activator's own left out."""

from __future__ import annotations

import json

import httpx
import pytest

from omnia.activator.backends import Address
from omnia.activator.backends.kubernetes import KubernetesBackends, ready_addresses, scales_to_zero
from omnia.activator.hosts import AgentRef


def _slice(name: str, *endpoints: tuple[str, bool | None], port: int = 8080, port_name: str = "ws") -> dict:
    return {
        "metadata": {"name": name},
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [address], **({"conditions": {"ready": ready}} if ready is not None else {})}
            for address, ready in endpoints
        ],
    }


def test_ready_endpoints_of_the_agents_slices_are_its_addresses() -> None:
    slices = [
        _slice("support-agent-x7k2p", ("10.0.0.5", True), ("10.0.0.6", False), ("10.0.0.7", None)),
        _slice("support-agent-9qz1m", ("10.0.1.5", True)),
    ]
    assert ready_addresses("support-agent", slices) == (
        Address("10.0.0.5", 8080), Address("10.0.0.7", 8080), Address("10.0.1.5", 8080),
    )


def test_the_activators_own_slice_is_not_a_pod_of_the_agent() -> None:
    """While the agent is at zero, its Service's only endpoints are the activator's: that is no wake-up."""
    slices = [_slice("support-agent-activator", ("10.0.9.1", True)), _slice("support-agent-x7k2p")]
    assert ready_addresses("support-agent", slices) == ()


def test_the_port_is_the_facade_port_by_name() -> None:
    slices = [{
        "metadata": {"name": "support-agent-x7k2p"},
        "ports": [{"name": "metrics", "port": 9000}, {"name": "ws", "port": 8081}],
        "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}],
    }]
    assert ready_addresses("support-agent", slices) == (Address("10.0.0.5", 8081),)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0}}, True, id="min 0"),
        pytest.param({"autoscaling": {"enabled": True, "minReplicas": 1}}, False, id="min 1"),
        pytest.param({"autoscaling": {"enabled": True}}, False, id="default min"),
        pytest.param({"autoscaling": {"enabled": False, "minReplicas": 0}}, False, id="autoscaling off"),
        pytest.param({}, False, id="no autoscaling"),
    ],
)
def test_scale_to_zero_agents_are_those_autoscaled_from_zero(spec: dict, expected: bool) -> None:
    assert scales_to_zero({"spec": spec}) is expected


async def test_watch_lists_follows_events_and_lists_again_after_an_expired_watch() -> None:
    """Against httpx's in-process transport: the API server's answers, scripted."""
    pod = _slice("support-agent-x7k2p", ("10.0.0.5", True))
    lists = iter([
        {"metadata": {"resourceVersion": "10"}, "items": [_slice("support-agent-activator", ("10.0.9.1", True))]},
        {"metadata": {"resourceVersion": "20"}, "items": [pod]},
    ])
    watches = iter([
        [{"type": "ADDED", "object": pod}, {"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
        [{"type": "DELETED", "object": pod}],
    ])
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.params.get("watch") == "true":
            return httpx.Response(200, content="".join(json.dumps(event) + "\n" for event in next(watches)))
        return httpx.Response(200, json=next(lists))

    http = httpx.AsyncClient(base_url="https://api.test", transport=httpx.MockTransport(answer))
    backends = KubernetesBackends(http, retry_seconds=0)
    watch = backends.watch(AgentRef("team-a", "support-agent"))
    seen = [await anext(watch) for _ in range(4)]
    await watch.aclose()
    await backends.aclose()
    assert seen == [(), (Address("10.0.0.5", 8080),), (Address("10.0.0.5", 8080),), ()]
    assert [(r.url.path, r.url.params.get("resourceVersion")) for r in requests] == [
        ("/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices", None),
        ("/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices", "10"),
        ("/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices", None),
        ("/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices", "20"),
    ]
    assert {r.url.params["labelSelector"] for r in requests} == {"kubernetes.io/service-name=support-agent"}
