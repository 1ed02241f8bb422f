"""The facade's Prometheus metrics, registered on a registry the caller owns.

No global registry: two facades in one process (as in the tests) must not see
each other's numbers. Labels are all bounded — outcomes, codes and frame
types are fixed sets; provider and model come from the agent's configuration;
tool names come from the model, which a client can steer, so only the first
``MAX_TOOL_LABELS`` distinct names get a series of their own and the rest are
counted as ``OTHER`` — so no client can grow the series count.

``active_connections`` is deliberately unprefixed: it is the name the
AgentRuntime's autoscaling section and the generated HPA refer to.
``omnia_active_connections`` carries the same value under the naming of the
rest of the metrics. Both carry an ``agent`` label, the AgentRuntime's name,
so that KEDA's query selects an agent's pods by a label match rather than a
regular expression over pod names (which an agent called ``support`` would
share with one called ``support-eu``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from omnia._proto.omnia.runtime.v1.runtime_pb2 import BudgetStanding

TURN_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
FIRST_CHUNK_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

CLIENT_FRAME_TYPES = ("message", "tool_result", "approval", "cancel", "ping", "refused")
MAX_TOOL_LABELS = 100


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, agent: str) -> None:
        # The children exist from the start, so an idle agent reports 0
        # rather than no series at all (which KEDA would read as no data).
        self.active_connections = Gauge(
            "active_connections",
            "Open WebSocket connections and running turns of the open protocols "
            "(the autoscaling metric), by agent.",
            ["agent"],
            registry=registry,
        ).labels(agent)
        self.omnia_active_connections = Gauge(
            "omnia_active_connections",
            "Open WebSocket connections and running turns of the open protocols, by agent.",
            ["agent"],
            registry=registry,
        ).labels(agent)
        self.connections = Counter(
            "omnia_connections",
            "WebSocket connections by how they ended up: accepted or rejected and why.",
            ["result"],
            registry=registry,
        )
        self.turns = Counter(
            "omnia_turns",
            "Turns by outcome: done, cancelled, error, aborted (stream lost or client gone).",
            ["outcome"],
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "omnia_turn_duration_seconds",
            "Time from a user message to its done or error frame.",
            buckets=TURN_SECONDS_BUCKETS,
            registry=registry,
        )
        self.first_chunk_seconds = Histogram(
            "omnia_time_to_first_chunk_seconds",
            "Time from a user message to the first streamed chunk of the reply.",
            buckets=FIRST_CHUNK_SECONDS_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "omnia_tokens",
            "LLM tokens by provider, model and direction (input, output).",
            ["provider", "model", "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "omnia_cost_usd",
            "LLM cost in US dollars by provider and model.",
            ["provider", "model"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "omnia_tool_calls",
            "Tool calls the runtime announced, by tool.",
            ["tool"],
            registry=registry,
        )
        self.errors = Counter(
            "omnia_errors",
            "Error frames sent to clients, by code.",
            ["code"],
            registry=registry,
        )
        self.messages_received = Counter(
            "omnia_messages_received",
            "Frames received from clients, by type "
            "('refused': invalid, oversized or over the rate limit).",
            ["type"],
            registry=registry,
        )
        self.budget_spent = Gauge(
            "omnia_budget_spent",
            "Spent in the current UTC day or month, by budget scope and unit (tokens, costUSD), "
            "as of this replica's last turn; the total of all replicas.",
            ["scope", "period", "unit"],
            registry=registry,
        )
        self.budget_limit = Gauge(
            "omnia_budget_limit",
            "Configured budget limit, by scope, period (day, month) and unit (tokens, costUSD).",
            ["scope", "period", "unit"],
            registry=registry,
        )
        self._tool_names: set[str] = set()
        # Children resolved once: the per-frame path is then one locked add.
        self.received_by_type = {
            kind: self.messages_received.labels(kind) for kind in CLIENT_FRAME_TYPES
        }
        # Children resolved on first use and kept (every label set here is
        # bounded, see above): ``labels()`` takes a lock and checks its
        # arguments on every call, on the path of every connection and turn.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once; only for bounded label values."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def connection_result(self, result: str) -> None:
        """Count a WebSocket connection by how it ended up (``omnia_connections``)."""
        self.child(self.connections, result).inc()

    def error_sent(self, code: str) -> None:
        """Count an error frame sent to a client, by code (a known code or ``OTHER``)."""
        self.child(self.errors, code).inc()

    def tool_called(self, name: str) -> None:
        if name not in self._tool_names:
            if len(self._tool_names) >= MAX_TOOL_LABELS:
                name = "OTHER"
            else:
                self._tool_names.add(name)
        self.child(self.tool_calls, name).inc()

    def budget_standings(self, standings: Iterable[BudgetStanding]) -> None:
        """Record each budget's totals reported with a turn's ``done`` (scopes come from the agent's configuration)."""
        for standing in standings:
            scope, period = standing.scope, standing.period
            self.child(self.budget_spent, scope, period, "tokens").set(standing.tokens)
            self.child(self.budget_spent, scope, period, "costUSD").set(standing.cost_usd)
            if standing.HasField("limit_tokens"):
                self.child(self.budget_limit, scope, period, "tokens").set(standing.limit_tokens)
            if standing.HasField("limit_cost_usd"):
                self.child(self.budget_limit, scope, period, "costUSD").set(standing.limit_cost_usd)

    def connection_opened(self) -> None:
        self.active_connections.inc()
        self.omnia_active_connections.inc()

    def connection_closed(self) -> None:
        self.active_connections.dec()
        self.omnia_active_connections.dec()

    def turn_finished(
        self,
        *,
        outcome: str,
        seconds: float,
        provider: str = "",
        model: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        self.child(self.turns, outcome).inc()
        self.turn_seconds.observe(seconds)
        if input_tokens:
            self.child(self.tokens, provider, model, "input").inc(input_tokens)
        if output_tokens:
            self.child(self.tokens, provider, model, "output").inc(output_tokens)
        if cost:
            self.child(self.cost, provider, model).inc(cost)
