"""Leader election over a coordination.k8s.io Lease, as client-go does it.

With ``--leader-elect`` several operator replicas can run: one holds the
Lease and reconciles, the others wait and take over when it stops renewing.
A leader that cannot renew within the renew deadline stops reconciling and
exits, so that two replicas never reconcile at once for long (a reconcile in
flight may still finish: every write is idempotent, so that overlap is safe).

:func:`decide` is the pure part: given the Lease as read, what to do.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from omnia.operator.applying import ApiError, Conflict, KubeClient

log = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"


class Action(enum.Enum):
    CREATE = "create"
    TAKE = "take"
    RENEW = "renew"
    WAIT = "wait"


def decide(lease: dict[str, Any] | None, *, identity: str, now: datetime.datetime) -> Action:
    """What a candidate does with the Lease as it read it."""
    if lease is None:
        return Action.CREATE
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return Action.RENEW
    if not holder:
        return Action.TAKE
    renewed = _parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = datetime.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    if renewed is None or now > renewed + duration:
        return Action.TAKE
    return Action.WAIT


@dataclass
class Elector:
    """Acquires and keeps one Lease for ``identity``.

    Methods are coroutines on one event loop; ``keep`` runs until the lease
    is lost or the task is cancelled (cancellation releases the lease).
    """

    client: KubeClient
    namespace: str
    name: str = "omnia-operator"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    lease_seconds: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)
    lost: bool = False

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        announced = False
        while not await self._try():
            if not announced:
                log.info("waiting for the leader lease %s/%s", self.namespace, self.name)
                announced = True
            await asyncio.sleep(self.retry_period)
        log.info("leader lease %s/%s acquired by %s", self.namespace, self.name, self.identity)

    async def keep(self, *, on_lost: Callable[[], None]) -> None:
        """Renew every ``retry_period``; call ``on_lost`` once renewal has failed for ``renew_deadline``."""
        last = asyncio.get_running_loop().time()
        try:
            while True:
                await asyncio.sleep(self.retry_period)
                try:
                    renewed = await self._try()
                except Exception as exc:  # noqa: BLE001 - any failure to renew counts against the deadline
                    log.warning("could not renew the leader lease: %s", exc)
                    renewed = False
                now = asyncio.get_running_loop().time()
                if renewed:
                    last = now
                elif now - last > self.renew_deadline:
                    log.error("leader lease %s/%s lost: stopping", self.namespace, self.name)
                    self.lost = True
                    on_lost()
                    return
        except asyncio.CancelledError:
            await self._release()
            raise

    async def _try(self) -> bool:
        lease = await self.client.get(LEASE_API, "Lease", namespace=self.namespace, name=self.name)
        now = self.clock()
        action = decide(lease, identity=self.identity, now=now)
        if action is Action.WAIT:
            return False
        stamp = _format_time(now)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds, "renewTime": stamp}
        try:
            if action is Action.CREATE:
                await self.client.create({"apiVersion": LEASE_API, "kind": "Lease",
                                          "metadata": {"name": self.name, "namespace": self.namespace},
                                          "spec": {**spec, "acquireTime": stamp, "leaseTransitions": 0}})
            else:
                assert lease is not None
                old = lease.get("spec") or {}
                if action is Action.TAKE:
                    spec |= {"acquireTime": stamp, "leaseTransitions": int(old.get("leaseTransitions") or 0) + 1}
                await self.client.replace({**lease, "spec": {**old, **spec}})
        except Conflict:
            return False  # someone else wrote it first; read again next time
        return True

    async def _release(self) -> None:
        """Let a waiting replica take over at once instead of after the lease duration."""
        try:
            lease = await self.client.get(LEASE_API, "Lease", namespace=self.namespace, name=self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                await self.client.replace({**lease, "spec": spec})
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("could not release the leader lease: %s", exc)


def _format_time(moment: datetime.datetime) -> str:
    """A MicroTime, as Leases store them."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
