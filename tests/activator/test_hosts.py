"""The agent a connection is for is read off its Host header."""

from __future__ import annotations

import pytest

from omnia.activator import hosts
from omnia.activator.hosts import HostError, Target


@pytest.mark.parametrize(
    ("host", "target"),
    [
        pytest.param("support-agent", Target("support-agent"), id="bare name"),
        pytest.param("support-agent:8080", Target("support-agent"), id="bare name with port"),
        pytest.param("support-agent.team-a", Target("support-agent", "team-a"), id="name.namespace"),
        pytest.param("support-agent.team-a.svc", Target("support-agent", "team-a"), id="svc"),
        pytest.param("support-agent.team-a.svc.cluster.local:8080", Target("support-agent", "team-a"),
                     id="fully qualified with port"),
        pytest.param("support-agent.team-a.svc.corp.example.", Target("support-agent", "team-a"),
                     id="other cluster domain, trailing dot"),
        pytest.param("Support-Agent.Team-A", Target("support-agent", "team-a"), id="case-insensitive"),
    ],
)
def test_host_names_the_agent(host: str, target: Target) -> None:
    assert hosts.parse(host) == target


@pytest.mark.parametrize(
    ("host", "says"),
    [
        pytest.param(None, "no Host header", id="missing"),
        pytest.param("", "no Host header", id="empty"),
        pytest.param("10.0.0.7:8080", "is an address", id="IPv4"),
        pytest.param("[fd00::7]:8080", "is an address", id="IPv6"),
        pytest.param("support_agent", "not a DNS name", id="underscore"),
        pytest.param("support-agent.team-a.example.com", "names no agent Service", id="not a Service name"),
        pytest.param("a..b", "not a DNS name", id="empty label"),
    ],
)
def test_host_naming_no_agent_is_refused_with_the_reason(host: str | None, says: str) -> None:
    with pytest.raises(HostError, match=says):
        hosts.parse(host)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        pytest.param("10.1.2.3", True, id="IPv4"),
        pytest.param("10.1.2.3:8080", True, id="IPv4 with port"),
        pytest.param("[::1]:8080", True, id="IPv6 with port"),
        pytest.param("support-agent.team-a", False, id="name"),
    ],
)
def test_addresses_are_the_activators_own_requests(host: str, address: bool) -> None:
    """kubelet probes and Prometheus scrapes name the pod by IP; agents are named by their Service."""
    assert hosts.is_address(host) is address
