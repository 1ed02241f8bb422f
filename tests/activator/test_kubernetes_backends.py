"""An agent's ready addresses are read from its Service's EndpointSlices, the activator's own left out."""

from __future__ import annotations

import pytest

from omnia.activator.backends import Address
from omnia.activator.backends.kubernetes import ready_addresses, scales_to_zero


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
