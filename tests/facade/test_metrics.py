"""The facade's metrics object, without a server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from omnia.facade.metrics import MAX_TOOL_LABELS, Metrics


def test_tool_names_steered_by_clients_cannot_grow_the_series_without_bound():
    """Tool names come from the model; a client can make it invent them. After
    MAX_TOOL_LABELS distinct names, new ones are counted under OTHER."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, agent="support-agent")
    for i in range(MAX_TOOL_LABELS + 50):
        metrics.tool_called(f"invented_{i}")
    metrics.tool_called("invented_0")
    samples = {
        s.labels["tool"]: s.value
        for family in registry.collect()
        if family.name == "omnia_tool_calls"
        for s in family.samples
        if s.name == "omnia_tool_calls_total"
    }
    assert len(samples) == MAX_TOOL_LABELS + 1
    assert samples["OTHER"] == 50 and samples["invented_0"] == 2
