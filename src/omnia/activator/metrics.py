"""The activator's own Prometheus metrics, on a registry the caller owns.

Every ``result`` series exists from the start at 0, so ``rate()`` and alerts
work before the first connection. No label names an agent: the series count
does not grow with the number of agents.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from omnia.activator.demand import Demand
from omnia.activator.proxying import Outcome


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
        for result in Outcome:
            self.connections.labels(result)
        self.requests = Counter("omnia_activator_http_requests",
                                "Plain HTTP requests for an agent at zero, answered 503 with Retry-After.",
                                registry=registry)
