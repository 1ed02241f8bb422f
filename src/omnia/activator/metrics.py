"""The activator's own Prometheus metrics, on a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from omnia.activator.demand import Demand


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, demand: Demand) -> None:
        held = Gauge("omnia_activator_held_connections", "WebSocket connections waiting for their agent's pod.",
                     registry=registry)
        held.set_function(lambda: demand.total_held)
        self.relaying = Gauge("omnia_activator_relayed_connections",
                              "WebSocket connections relayed to an agent's pod now.", registry=registry)
        self.connections = Counter(
            "omnia_activator_connections",
            "WebSocket connections by how they ended: proxied, timeout, refused, client_gone, drained, "
            "full (over --max-held), misdirected (a Host naming no scale-to-zero agent).",
            ["result"],
            registry=registry,
        )
        self.requests = Counter("omnia_activator_http_requests",
                                "Plain HTTP requests for an agent at zero, answered 503 with Retry-After.",
                                registry=registry)
