"""The operator's Prometheus metrics: what the work queue and the reconcilers count, and how they are served."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry

from omnia.operator import builders, main, metrics, queueing, reconciling
from omnia.operator.references import Ref
from tests.operator import harness, manifests
from tests.operator.fakes import MemoryApi, MemoryCache, offline_discover, with_status

NS = manifests.NAMESPACE
AGENT = Ref("AgentRuntime", NS, "agent")
PROVIDER = Ref("Provider", NS, "mock")
REGISTRY = Ref("ToolRegistry", NS, "tools")


def measured() -> tuple[CollectorRegistry, metrics.Metrics]:
    registry = CollectorRegistry()
    return registry, metrics.Metrics(registry)


def reconciles(registry: CollectorRegistry, kind: str, result: str) -> float:
    return registry.get_sample_value("omnia_operator_reconciles_total", {"kind": kind, "result": result})


async def drain(queue: queueing.WorkQueue, reconcile, *, stats: queueing.Stats, observe) -> None:
    """Run one worker until every queued key has been reconciled once (delayed ones are left alone)."""
    worker = asyncio.create_task(queueing.work(queue, reconcile, backoff=queueing.Backoff(), stats=stats,
                                               observe=observe))
    while len(queue) or queue._active:
        await asyncio.sleep(0.01)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    queue.close()


async def test_reconciles_are_counted_by_kind_and_result():
    """The three results of the real reconcilers: a Provider that is fine, an agent missing its
    references (retried), an agent whose spec is invalid (waits for an edit)."""
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.provider())
    cache.put(manifests.agent())
    cache.put(manifests.agent("broken", replicas=-1))
    ctx = reconciling.Context(cache=cache, api=api, defaults=builders.Defaults(image="omnia:test"),
                              discover=offline_discover())
    registry, gauges = measured()
    queue, stats = queueing.WorkQueue(), queueing.Stats()
    for ref in (PROVIDER, AGENT, Ref("AgentRuntime", NS, "broken")):
        queue.add(ref)
    await drain(queue, lambda ref: reconciling.reconcile(ref, ctx), stats=stats, observe=gauges.reconciled)
    assert {
        (kind, result): reconciles(registry, kind, result)
        for kind in ("Provider", "AgentRuntime") for result in queueing.RESULTS
    } == {
        ("Provider", "success"): 1, ("Provider", "retry"): 0, ("Provider", "error"): 0,
        ("AgentRuntime", "success"): 0, ("AgentRuntime", "retry"): 1, ("AgentRuntime", "error"): 1,
    }
    assert registry.get_sample_value("omnia_operator_reconcile_duration_seconds_count", {"kind": "AgentRuntime"}) == 2
    assert registry.get_sample_value("omnia_operator_queue_wait_seconds_count") == 3


@pytest.mark.parametrize(
    ("raised", "result"),
    [
        pytest.param(RuntimeError("boom"), "error", id="unexpected-error-is-an-error"),
        pytest.param(queueing.Postponed(5.0), None, id="postponed-is-not-a-reconcile"),
    ],
)
async def test_outcomes_the_reconcilers_rarely_give(raised, result):
    registry, gauges = measured()
    queue, stats = queueing.WorkQueue(), queueing.Stats()

    async def reconcile(ref):
        raise raised

    queue.add(AGENT)
    await drain(queue, reconcile, stats=stats, observe=gauges.reconciled)
    counted = {name: reconciles(registry, "AgentRuntime", name) for name in queueing.RESULTS}
    assert counted == {name: float(name == result) for name in queueing.RESULTS}
    assert stats.reconciles == (result is not None)


def test_the_same_timing_feeds_the_liveness_counters_and_the_metrics():
    """One clock reading per reconcile: /healthz's percentiles and the histogram cannot disagree."""
    registry, gauges = measured()
    gauges.reconciled(AGENT, queueing.Outcome(result=queueing.SUCCESS, duration=0.2, waited=0.03))
    assert registry.get_sample_value("omnia_operator_reconcile_duration_seconds_sum", {"kind": "AgentRuntime"}) == 0.2
    assert registry.get_sample_value("omnia_operator_reconcile_duration_seconds_bucket",
                                     {"kind": "AgentRuntime", "le": "0.25"}) == 1
    assert registry.get_sample_value("omnia_operator_queue_wait_seconds_sum") == 0.03


def test_every_kind_and_result_reads_zero_before_the_first_reconcile():
    """So that rate() and alerts on errors work from the start, not from the first failure."""
    registry, _ = measured()
    assert reconciles(registry, "ToolRegistry", "error") == 0
    assert registry.get_sample_value("omnia_operator_discovery_total", {"result": "failed"}) == 0


def test_queue_depth_is_read_when_scraped():
    registry, gauges = measured()
    queue = queueing.WorkQueue()
    gauges.watch_queue(queue)
    assert registry.get_sample_value("omnia_operator_queue_depth") == 0
    queue.add(AGENT)
    queue.add(PROVIDER)
    assert registry.get_sample_value("omnia_operator_queue_depth") == 2


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        pytest.param(lambda request: httpx.Response(200, json={"openapi": "3.0.0", "paths": {}}), "ready",
                     id="server-answers"),
        pytest.param(lambda request: httpx.Response(503), "failed", id="server-down"),
    ],
)
async def test_discoveries_that_ask_the_servers_are_counted_by_result(answer, result):
    """Only discoveries that ask the servers count: a reconcile that reuses the last one does not."""
    cache, api = MemoryCache(), MemoryApi()
    tools = manifests.registry("tools", {"name": "orders", "type": "openapi",
                                         "openapi": {"specURL": "https://orders.example/openapi.json"}})
    cache.put(tools)
    registry, gauges = measured()
    ctx = reconciling.Context(cache=cache, api=api, defaults=builders.Defaults(image="omnia:test"),
                              discover=offline_discover(answer), metrics=gauges)
    await reconciling.reconcile(REGISTRY, ctx)
    cache.put(with_status(tools, api.statuses[("ToolRegistry", NS, "tools")]))
    await reconciling.reconcile(REGISTRY, ctx)
    counted = {name: registry.get_sample_value("omnia_operator_discovery_total", {"result": name})
               for name in metrics.DISCOVERY_RESULTS}
    assert counted == {name: float(name == result) for name in metrics.DISCOVERY_RESULTS}


def test_the_metrics_are_served_over_http():
    registry, gauges = measured()
    gauges.leader.set(1)
    port = harness.free_port()
    with main.serving_metrics(f"127.0.0.1:{port}", registry=registry):
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "omnia_operator_leader 1.0" in response.text.splitlines()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_taken_port_fails_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError), main.serving_metrics(f"127.0.0.1:{taken.getsockname()[1]}",
                                                          registry=CollectorRegistry()):
            pass
