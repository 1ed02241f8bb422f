"""The A2A endpoint's task store keeps a bounded number of tasks.

The SDK's in-memory store keeps every task, each with its whole reply, for the
life of the process: a client sending messages in a loop (or just steady use)
grows the facade until its pod is killed for memory.
"""

from __future__ import annotations

import asyncio

from a2a.helpers.proto_helpers import new_task
from a2a.server.context import ServerCallContext
from a2a.types import a2a_pb2 as a2a

from omnia.facade import a2a_server, auth

RUNNING = a2a.TaskState.TASK_STATE_WORKING
FINISHED = a2a.TaskState.TASK_STATE_COMPLETED


def _context(subject: str) -> ServerCallContext:
    return ServerCallContext(user=a2a_server._PrincipalUser(auth.Principal(method="apiKey", subject=subject)))


def _task(task_id: str, state: a2a.TaskState) -> a2a.Task:
    return new_task(task_id, f"context-{task_id}", state, history=[])


async def _save_all(store, tasks, context):
    for task in tasks:
        await store.save(task, context)


def test_past_the_limit_the_oldest_finished_tasks_are_forgotten():
    store = a2a_server.BoundedTaskStore(limit=3)
    alice = _context("alice")

    async def scenario():
        await _save_all(store, [_task(f"t{i}", FINISHED) for i in range(5)], alice)
        return [await store.get(f"t{i}", alice) is not None for i in range(5)]

    assert asyncio.run(scenario()) == [False, False, True, True, True]
    assert len(store) == 3


def test_a_running_task_is_kept_however_old_and_forgotten_once_finished_and_old():
    store = a2a_server.BoundedTaskStore(limit=2)
    alice = _context("alice")

    async def scenario():
        await store.save(_task("running", RUNNING), alice)
        await _save_all(store, [_task(f"t{i}", FINISHED) for i in range(3)], alice)
        kept_while_running = await store.get("running", alice) is not None
        await store.save(_task("running", FINISHED), alice)  # now the newest
        await _save_all(store, [_task(f"u{i}", FINISHED) for i in range(2)], alice)
        return kept_while_running, await store.get("running", alice) is not None

    assert asyncio.run(scenario()) == (True, False)
    assert len(store) == 2


def test_owners_stay_apart_and_each_task_is_counted_once():
    store = a2a_server.BoundedTaskStore(limit=10)
    alice, bob = _context("alice"), _context("bob")

    async def scenario():
        await store.save(_task("same-id", FINISHED), alice)
        await store.save(_task("same-id", FINISHED), bob)
        await store.save(_task("same-id", FINISHED), bob)  # an update, not a new task
        await store.delete("same-id", alice)
        return await store.get("same-id", alice), await store.get("same-id", bob)

    missing, kept = asyncio.run(scenario())
    assert missing is None and kept is not None
    assert len(store) == 1
