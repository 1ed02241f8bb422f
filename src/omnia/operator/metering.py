"""Metering: reading the budget counters the runtimes write, for the agents' status.

The runtimes count each turn in the agent's session store (``omnia.budgets``);
the operator reads the same counters with the same code, in the store the
agent's pods use: the Secret key of ``spec.session.secretRef``, or the
installation's default store (``sessionstores``). Agents with
``session.type: memory`` count in each pod's memory, which nothing outside
the pod can read, so their budgets are not shown.

When: every ``interval`` seconds for every agent with a budget, and soon
after each reconcile of an agent (:meth:`Meter.soon`), so a new or edited
budget shows without waiting for the next round. A reading that differs
from the last one queues the agent's reconcile, which writes the status
(``standings``): the reconciler stays the only writer of an AgentRuntime's
status, and a reading that changed nothing costs no write.

Store URLs are secrets: one counter (one small connection pool) is kept per
Secret key and store type, built from the value read when the Secret's
resourceVersion changes; the value itself is not kept, logged or written
anywhere else. The reads need nothing new from RBAC: the operator lists
Secrets already (``applying.KubeClient.secret_data``).

A store that cannot be reached, or a Secret that cannot be read, is logged
once (and once more when it answers again), counted in
``omnia_operator_budget_reads{result="unavailable"}``, and the agent's
status keeps what it showed: a status is never cleared for an outage.
Agents sharing a store that failed in a round are not tried again in that
round, so a store that is down costs one timeout per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from omnia import budgets
from omnia.api.v1alpha1 import AgentRuntime
from omnia.budgets import CounterKey, Spent, UsageCounter
from omnia.budgets.base import StoreUnavailable
from omnia.operator import metrics, sessionstores, standings
from omnia.operator.applying import ApiError, KubeApi
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from omnia.operator.standings import Reading
from omnia.operator.summaries import Parsed, SecretSummary
from omnia.sessions import URL_SCHEMES

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0
"""Default of ``omnia operator --budget-interval``."""


class Cache(Protocol):
    def agents(self) -> list[Ref]: ...

    def agent(self, namespace: str, name: str) -> Parsed | None: ...

    def secret(self, namespace: str, name: str) -> SecretSummary | None: ...


@dataclass(frozen=True)
class Source:
    """Where an agent's store URL is: a Secret key, and the store type it is a URL of."""

    type: str
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.type} store of Secret {self.namespace}/{self.name} key {self.key!r}"


class Unreadable(Exception):
    """The store's URL cannot be had: its Secret or key is missing, or the URL is not one of the type's."""


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Meter:
    """The readings of every budgeted agent's counters, kept current by :meth:`run`.

    One task runs :meth:`run`; :meth:`reading` and :meth:`soon` are called
    by the reconcilers on the same event loop. Cancelling :meth:`run` stops
    it between or during reads (a read is bounded by the counter's timeout);
    :meth:`aclose` closes the counters afterwards.
    """

    def __init__(
        self,
        *,
        cache: Cache,
        api: KubeApi,
        session_stores: Mapping[str, DefaultStore],
        enqueue: Callable[[Iterable[Ref]], None],
        measured: metrics.Metrics,
        interval: float = INTERVAL_SECONDS,
        connect: Callable[[str, str], UsageCounter] = budgets.connect,
        clock: Callable[[], datetime.datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._api = api
        self._stores = session_stores
        self._enqueue = enqueue
        self._metrics = measured
        self.interval = interval
        self._connect = connect
        self._clock = clock
        self._monotonic = monotonic
        self._readings: dict[Ref, dict[CounterKey, Spent]] = {}
        self._counters: dict[Source, tuple[str, UsageCounter]] = {}
        self._failing: set[Source] = set()
        self._due: set[Ref] = set()
        self._wake = asyncio.Event()

    def reading(self, ref: Ref) -> Reading | None:
        """The agent's totals as last read, or None when they have not been read (yet)."""
        return self._readings.get(ref)

    def soon(self, ref: Ref) -> None:
        """Read the agent's counters at the next turn of :meth:`run` rather than at the next round."""
        self._due.add(ref)
        self._wake.set()

    async def run(self) -> None:
        """Read every budgeted agent each ``interval``, and the agents asked for by :meth:`soon` meanwhile."""
        next_round = self._monotonic()
        while True:
            wait = next_round - self._monotonic()
            if wait > 0 and not self._due:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            if self._monotonic() >= next_round:
                next_round = self._monotonic() + self.interval
                await self.read_all()
            else:
                due, self._due = self._due, set()
                await self.read(due)

    async def read_all(self) -> None:
        """One round: every agent with a budget; forgets the readings and counters nothing uses any more."""
        self._due.clear()
        agents = self._cache.agents()
        for ref in set(self._readings) - set(agents):
            del self._readings[ref]
        await self.read(agents)
        used = {source for ref in agents if (source := self._source_of(ref)) is not None}
        for source in set(self._counters) - used:
            _, counter = self._counters.pop(source)
            await _close(counter)
            self._failing.discard(source)

    async def read(self, refs: Iterable[Ref]) -> None:
        """Read the counters of ``refs``; queues the reconcile of each agent whose totals changed."""
        down: set[Source] = set()
        changed = []
        for ref in sorted(refs):
            parsed = self._cache.agent(ref.namespace, ref.name)
            agent = parsed.resource if parsed is not None else None
            keys = self._keys(agent) if agent is not None else []
            source = self._source(agent) if agent is not None else None
            if not keys or source is None:
                if self._readings.pop(ref, None) is not None:
                    changed.append(ref)
                continue
            if source in down:
                continue
            try:
                counter = await self._counter(source)
                totals = await counter.spent(keys)
            except (StoreUnavailable, Unreadable, ApiError, httpx.HTTPError) as exc:
                down.add(source)
                self._failed(source, exc)
                continue
            self._answered(source)
            reading = dict(zip(keys, totals, strict=True))
            if self._readings.get(ref) != reading:
                self._readings[ref] = reading
                changed.append(ref)
        if changed:
            self._enqueue(changed)

    async def aclose(self) -> None:
        for _, counter in self._counters.values():
            await _close(counter)
        self._counters.clear()

    def _keys(self, agent: AgentRuntime) -> list[CounterKey]:
        """The counters of the agent's limited scopes in the current day and month."""
        scopes = dict.fromkeys(limit.scope for limit in standings.limits(agent))
        return [CounterKey(scope, period) for scope in scopes for period in budgets.periods(self._clock())]

    def _source_of(self, ref: Ref) -> Source | None:
        parsed = self._cache.agent(ref.namespace, ref.name)
        return self._source(parsed.resource) if parsed is not None and parsed.resource is not None else None

    def _source(self, agent: AgentRuntime) -> Source | None:
        """The Secret key with the agent's store URL; None for memory, or a default store not configured."""
        session = agent.spec.session
        if session.type not in sessionstores.TYPES:
            return None
        if session.secret_ref is not None:
            return Source(session.type, agent.metadata.namespace or "", session.secret_ref.name,
                          session.secret_ref.key)
        store = self._stores.get(session.type)
        return Source(session.type, store.namespace, store.name, store.key) if store is not None else None

    async def _counter(self, source: Source) -> UsageCounter:
        """The source's counter, built anew when its Secret changed since."""
        summary = self._cache.secret(source.namespace, source.name)
        if summary is None or source.key not in summary.keys:
            raise Unreadable("the Secret or its key is not there")
        held = self._counters.get(source)
        if held is not None and held[0] == summary.resource_version:
            return held[1]
        if held is not None:
            del self._counters[source]
            await _close(held[1])
        data = await self._api.secret_data(namespace=source.namespace, name=source.name)
        url = (data or {}).get(source.key, "").strip()
        if not url.startswith(URL_SCHEMES[source.type]):
            # The URL is a secret: never echo it, not even in part.
            raise Unreadable(f"the value is not a URL starting with {' or '.join(URL_SCHEMES[source.type])}")
        try:
            counter = self._connect(source.type, url)
        except ValueError:
            raise Unreadable("the driver cannot parse the URL") from None
        self._counters[source] = (summary.resource_version, counter)
        return counter

    def _failed(self, source: Source, exc: Exception) -> None:
        self._metrics.budget_reads.labels("unavailable").inc()
        if source not in self._failing:
            self._failing.add(source)
            log.warning("cannot read the budget counters in the %s: %s; the agents using it keep the budgets "
                        "their status shows until it answers", source, exc)

    def _answered(self, source: Source) -> None:
        self._metrics.budget_reads.labels("ok").inc()
        if source in self._failing:
            self._failing.discard(source)
            log.info("the budget counters in the %s answer again", source)


async def _close(counter: UsageCounter) -> None:
    with contextlib.suppress(StoreUnavailable, OSError):
        await counter.aclose()

