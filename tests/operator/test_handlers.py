"""Which watch events queue a reconcile (kopf glue, without kopf running)."""

from __future__ import annotations

import asyncio
import inspect

import kopf
import pytest

from omnia.operator import builders, handlers
from omnia.operator.references import Ref

AGENT = Ref("AgentRuntime", "ns", "agent")


def meta(**changes) -> dict:
    return {"uid": "uid-1", "generation": 1, "labels": {"team": "a"}, "annotations": {}, "resourceVersion": "10",
            "managedFields": [{"manager": "omnia-operator", "time": "2026-01-01T00:00:00Z"}], **changes}


def test_an_agent_event_that_changed_only_its_status_queues_nothing():
    """The operator's own status writes come back as events: reconciling for them found nothing to do."""
    operator = handlers.Operator(defaults=builders.Defaults())
    assert handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())
    status_write = meta(resourceVersion="11",
                        managedFields=[{"manager": "omnia-operator", "time": "2026-01-01T00:00:05Z"}])
    assert not handlers._agent_inputs_changed(operator, AGENT, type="MODIFIED", meta=status_write)


def test_a_spec_label_or_annotation_change_queues_the_agent():
    operator = handlers.Operator(defaults=builders.Defaults())
    handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())
    for changed in (meta(generation=2), meta(generation=2, labels={"team": "b"}),
                    meta(generation=2, labels={"team": "b"}, annotations={"note": "x"})):
        assert handlers._agent_inputs_changed(operator, AGENT, type="MODIFIED", meta=changed)


def test_a_deleted_agent_and_a_recreated_one_are_queued():
    operator = handlers.Operator(defaults=builders.Defaults())
    handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())
    assert handlers._agent_inputs_changed(operator, AGENT, type="DELETED", meta=meta())
    assert handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())


async def test_an_agent_waiting_for_a_postponed_reconcile_is_queued_by_any_event():
    """A reconcile postponed until the cache shows the operator's last status write runs at that write's event."""
    operator = handlers.Operator(defaults=builders.Defaults())
    handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())
    operator.queue.postpone(AGENT, 60)
    try:
        assert handlers._agent_inputs_changed(operator, AGENT, type="MODIFIED", meta=meta(resourceVersion="11"))
    finally:
        operator.queue.close()


async def test_a_key_waiting_for_a_retry_is_not_postponed_so_status_events_do_not_queue_it():
    operator = handlers.Operator(defaults=builders.Defaults())
    handlers._agent_inputs_changed(operator, AGENT, type="ADDED", meta=meta())
    operator.queue.add_after(AGENT, 60)
    try:
        assert not handlers._agent_inputs_changed(operator, AGENT, type="MODIFIED", meta=meta(resourceVersion="11"))
    finally:
        operator.queue.close()


def test_every_event_handler_runs_on_the_event_loop():
    """kopf runs plain functions in a thread pool; the work queue and its timers belong to the event loop.

    Queued from a thread, a key did not wake a waiting worker at once, and a
    delayed add failed ("no running event loop"), which left agents unreconciled.
    """
    registry = kopf.OperatorRegistry()
    handlers.register(registry, operator=handlers.Operator(defaults=builders.Defaults()))
    found = registry._watching.get_all_handlers()
    assert found and all(inspect.iscoroutinefunction(handler.fn) for handler in found), \
        [handler.id for handler in found if not inspect.iscoroutinefunction(handler.fn)]


PACK = Ref("PromptPack", "ns", "prompts")


def pack_body(**status) -> dict:
    return {"metadata": {"uid": "uid-p", "generation": 1, "annotations": {"omnia.altairalabs.ai/rollout": "{}"},
                         "resourceVersion": "5"},
            "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."},
            "status": {"stableVersion": "1.0.0", "consumers": [], **status}}


def test_a_pack_event_that_changed_only_its_consumers_does_not_reach_its_agents():
    """Every agent created changes the pack's consumers; no agent reads them."""
    operator = handlers.Operator(defaults=builders.Defaults())
    assert handlers._pack_changed_for_agents(operator, PACK, type=None, body=pack_body())
    assert not handlers._pack_changed_for_agents(operator, PACK, type="MODIFIED", body=pack_body(consumers=["a"]))


@pytest.mark.parametrize("changed", [
    pytest.param(pack_body(stableVersion="1.1.0"), id="stable-version"),
    pytest.param(pack_body(canaryVersion="1.1.0", canaryWeight=20), id="canary"),
    pytest.param({**pack_body(), "spec": {"version": "1.1.0", "systemPrompt": "x"}}, id="spec"),
    pytest.param({**pack_body(), "metadata": {**pack_body()["metadata"], "annotations": {}}}, id="rollout-state"),
])
def test_a_pack_event_that_changed_what_agents_read_reaches_them(changed):
    operator = handlers.Operator(defaults=builders.Defaults())
    handlers._pack_changed_for_agents(operator, PACK, type=None, body=pack_body())
    assert handlers._pack_changed_for_agents(operator, PACK, type="MODIFIED", body=changed)
