"""Leader election over a Lease: who may reconcile."""

from __future__ import annotations

import asyncio
import copy
import datetime

import pytest

from omnia.operator import leading
from omnia.operator.applying import Conflict
from omnia.operator.leading import Action

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


def lease(holder: str, *, renewed: datetime.datetime = NOW, seconds: int = 15) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "omnia-operator", "namespace": "omnia-system", "resourceVersion": "1"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


@pytest.mark.parametrize(
    ("current", "now", "action"),
    [
        pytest.param(None, NOW, Action.CREATE, id="no-lease"),
        pytest.param(lease("me"), NOW, Action.RENEW, id="mine"),
        pytest.param(lease("other"), NOW + datetime.timedelta(seconds=10), Action.WAIT, id="held"),
        pytest.param(lease("other"), NOW + datetime.timedelta(seconds=16), Action.TAKE, id="expired"),
        pytest.param(lease(""), NOW, Action.TAKE, id="released"),
    ],
)
def test_decide(current, now, action):
    assert leading.decide(current, identity="me", now=now) == action


class FakeLeases:
    """A Lease store with optimistic concurrency, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.version = 0

    async def get(self, api_version, kind, *, namespace, name):
        return copy.deepcopy(self.lease)

    async def create(self, obj):
        if self.lease is not None:
            raise Conflict(409, "AlreadyExists", "exists")
        self.version += 1
        self.lease = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        return self.lease

    async def replace(self, obj):
        if obj["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "changed")
        self.version += 1
        self.lease = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        return self.lease

    async def aclose(self):
        pass


async def test_one_of_two_candidates_leads_and_the_other_takes_over_after_release():
    leases = FakeLeases()
    first = leading.Elector(leases, namespace="omnia-system", identity="a", retry_period=0.01)
    second = leading.Elector(leases, namespace="omnia-system", identity="b", retry_period=0.01)
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done() and leases.lease["spec"]["holderIdentity"] == "a"

    keeper = asyncio.create_task(first.keep(on_lost=lambda: None))
    await asyncio.sleep(0.05)
    keeper.cancel()  # a clean stop releases the lease
    await asyncio.gather(keeper, return_exceptions=True)
    await asyncio.wait_for(waiting, 1)
    assert leases.lease["spec"]["holderIdentity"] == "b"
    assert leases.lease["spec"]["leaseTransitions"] == 1


async def test_a_leader_that_cannot_renew_gives_up_after_the_deadline():
    leases = FakeLeases()
    elector = leading.Elector(leases, namespace="omnia-system", identity="a", retry_period=0.01, renew_deadline=0.05)
    await elector.acquire()
    leases.lease["spec"]["holderIdentity"] = "someone-else"  # stolen, e.g. after a long pause
    lost = asyncio.Event()
    await asyncio.wait_for(elector.keep(on_lost=lost.set), 1)
    assert lost.is_set() and elector.lost
