"""The operator's Prometheus metrics, registered on a registry the caller owns.

No global registry: several operators in one process (as in the tests) must
not see each other's numbers. The numbers come from where the operator
already measures: the work queue times every reconcile and every wait once,
for its liveness counters, and hands the same outcome here
(:meth:`Metrics.reconciled`); the queue's depth is read when scraped.

Labels are bounded: ``kind`` is one of the four reconciled kinds, ``result``
a fixed set. No label names an object, so thousands of agents cost no more
series than one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from omnia import tools
from omnia.operator import queueing, references
from omnia.operator.references import Ref

RECONCILE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_WAIT_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)

DISCOVERY_RESULTS = ("ready", "degraded", "failed")
BUDGET_READ_RESULTS = ("ok", "unavailable")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "omnia_operator_reconciles",
            "Reconciles by kind and result: success, retry (asked to run again after a delay), "
            "error (failed until the next change, or failed unexpectedly).",
            ["kind", "result"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "omnia_operator_reconcile_duration_seconds",
            "Time one reconcile took, by kind.",
            ["kind"],
            buckets=RECONCILE_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "omnia_operator_queue_depth",
            "Objects waiting in the work queue for a free worker.",
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "omnia_operator_queue_wait_seconds",
            "Time an object waited in the work queue before a worker reconciled it.",
            buckets=QUEUE_WAIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.leader = Gauge(
            "omnia_operator_leader",
            "1 while this replica reconciles (holds the leader Lease, or runs without leader election).",
            registry=registry,
        )
        self.discoveries = Counter(
            "omnia_operator_discovery",
            "ToolRegistry discoveries that asked the tool servers, by result: ready, degraded, failed.",
            ["result"],
            registry=registry,
        )
        self.budget_reads = Counter(
            "omnia_operator_budget_reads",
            "Readings of an agent's budget counters for its status, by result: ok, or unavailable "
            "(the session store did not answer, or its URL could not be read from its Secret).",
            ["result"],
            registry=registry,
        )
        # Series that exist from the start read 0 rather than being absent,
        # so rate() and alerts work before the first reconcile of each kind.
        for kind in references.RECONCILED_KINDS:
            self.reconcile_seconds.labels(kind)
            for result in queueing.RESULTS:
                self.reconciles.labels(kind, result)
        for result in DISCOVERY_RESULTS:
            self.discoveries.labels(result)
        for result in BUDGET_READ_RESULTS:
            self.budget_reads.labels(result)

    def watch_queue(self, queue: queueing.WorkQueue) -> None:
        """Report ``queue``'s depth at every scrape.

        The scrape runs in the metrics server's thread while the event loop
        changes the queue; the read is two set sizes, atomic each under the
        GIL, so at worst one key off for an instant.
        """
        self.queue_depth.set_function(lambda: len(queue))

    def reconciled(self, ref: Ref, outcome: queueing.Outcome) -> None:
        self.reconciles.labels(ref.kind, outcome.result).inc()
        self.reconcile_seconds.labels(ref.kind).observe(outcome.duration)
        self.queue_wait_seconds.observe(outcome.waited)

    def discovered(self, discovery: tools.Discovery) -> None:
        self.discoveries.labels(discovery.phase.lower()).inc()
