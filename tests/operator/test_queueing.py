"""The work queue: coalescing, one reconcile per key at a time, retries with backoff."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from omnia.operator import queueing


async def test_a_key_added_twice_is_queued_once():
    queue = queueing.WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert [(await queue.get())[0], (await queue.get())[0]] == ["a", "b"]


async def test_a_key_added_during_its_reconcile_runs_once_more_afterwards():
    """Bursts of events coalesce into one more reconcile, which reads the latest state."""
    queue = queueing.WorkQueue()
    queue.add("a")
    key, _ = await queue.get()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1 and queue._ready.empty()
    queue.done(key)
    assert (await queue.get())[0] == "a"


async def test_add_after_keeps_the_earliest_deadline_and_add_cancels_it():
    queue = queueing.WorkQueue()
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)
    assert queue.delayed == 1
    assert (await asyncio.wait_for(queue.get(), 1))[0] == "a"
    queue.done("a")
    queue.add_after("b", 10)
    queue.add("b")
    assert queue.delayed == 0
    assert (await queue.get())[0] == "b"


async def test_add_soon_gathers_a_burst_into_one_reconcile_and_leaves_a_queued_key_alone():
    """A Deployment's and its pods' events within the delay cost one reconcile, not one each."""
    queue = queueing.WorkQueue()
    queue.add_soon("a", 0.05)
    queue.add_soon("a", 0.05)
    queue.add_soon("a", 0.05)
    assert (len(queue), queue.delayed) == (0, 1)
    assert (await asyncio.wait_for(queue.get(), 1))[0] == "a"
    queue.done("a")
    queue.add("b")
    queue.add_soon("b", 10)
    assert (len(queue), queue.delayed) == (1, 0)


async def test_a_postponed_key_is_postponed_until_it_is_taken_again():
    queue = queueing.WorkQueue()
    queue.postpone("a", 0.01)
    assert queue.postponed("a")
    assert (await asyncio.wait_for(queue.get(), 1))[0] == "a"
    assert not queue.postponed("a")
    queue.done("a")


def test_backoff_doubles_up_to_a_cap_and_resets_on_success():
    backoff = queueing.Backoff(base=1, cap=5)
    assert [backoff.next("a") for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset("a")
    assert backoff.next("a") == 1


@pytest.mark.parametrize(
    ("outcome", "delayed", "failures"),
    [
        pytest.param(None, 0, 0, id="success"),
        pytest.param(30.0, 1, 0, id="requeue-after"),
        pytest.param(kopf.TemporaryError("wait", delay=None), 1, 1, id="temporary-error-backs-off"),
        pytest.param(kopf.TemporaryError("wait", delay=7), 1, 1, id="temporary-error-with-delay"),
        pytest.param(kopf.PermanentError("never"), 0, 1, id="permanent-error-waits-for-a-change"),
        pytest.param(RuntimeError("boom"), 1, 1, id="unexpected-error-backs-off"),
        pytest.param(queueing.Postponed(1.0), 1, 0, id="postponed-is-not-a-failure"),
    ],
)
async def test_worker_outcomes(outcome, delayed, failures):
    queue = queueing.WorkQueue()
    stats = queueing.Stats()

    async def reconcile(key):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    queue.add("a")
    worker = asyncio.create_task(queueing.work(queue, reconcile, backoff=queueing.Backoff(), stats=stats))
    while stats.reconciles + stats.postponed == 0:
        await asyncio.sleep(0.01)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    assert (queue.delayed, stats.failures) == (delayed, failures)
    queue.close()


def test_stats_percentiles():
    stats = queueing.Stats()
    for millis in range(1, 101):
        stats.record(duration=millis / 1000, waited=0, failed=False)
    summary = stats.summary()
    assert (summary["reconciles"], round(summary["reconcile_p50_ms"]), round(summary["reconcile_p99_ms"])) == (100, 50, 99)
