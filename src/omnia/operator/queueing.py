"""The work queue between watch events and reconciles.

kopf delivers events per object; a reconcile, though, is per *target*: one
Secret edit must reconcile a Provider and every agent using it, and one
PromptPack edit two hundred agents. So events only put keys in this queue and
a few workers reconcile them, level-based:

- a key is queued at most once and reconciled by one worker at a time; keys
  added while their reconcile runs are reconciled once more afterwards, so
  bursts of events coalesce into one reconcile that reads the latest state;
- a failed reconcile is retried with exponential backoff; ``kopf.TemporaryError``
  is the way to ask for a retry (with its ``delay`` if it has one), and
  ``kopf.PermanentError`` the way to stop until the next change;
- an event for a key that waits for a retry reconciles it at once: an agent
  waiting for its missing Provider starts the moment the Provider appears.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import kopf

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    """Keys waiting for a reconcile. All methods must be called from the queue's event loop."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._added_at: dict[K, float] = {}
        self._postponed: set[K] = set()

    def __len__(self) -> int:
        return len(self._queued) + len(self._dirty)

    @property
    def delayed(self) -> int:
        return len(self._timers)

    def postponed(self, key: K) -> bool:
        """Whether ``key``'s last reconcile was postponed (:class:`Postponed`) and has not run again yet."""
        return key in self._postponed

    def add(self, key: K) -> None:
        """Reconcile ``key`` as soon as a worker is free; cancels a pending delayed add."""
        self._cancel_timer(key)
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._added_at.setdefault(key, self._clock())
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds, unless something reconciles it earlier."""
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        pending = self._timers.get(key)
        if pending is not None and pending[0] <= due:
            return
        self._cancel_timer(key)
        handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (due, handle)

    def add_soon(self, key: K, delay: float) -> None:
        """Reconcile ``key`` within ``delay`` seconds, so that a burst of events costs one reconcile.

        A key already queued is left as it is: its reconcile has not started,
        so it will read the state this event brought. Otherwise as
        :meth:`add_after`.
        """
        if key not in self._queued:
            self.add_after(key, delay)

    def postpone(self, key: K, delay: float) -> None:
        """:meth:`add_after` for a reconcile that did not run (:class:`Postponed`); see :meth:`postponed`."""
        self._postponed.add(key)
        self.add_after(key, delay)

    async def get(self) -> tuple[K, float]:
        """The next key and how long it waited; waits for one. Call :meth:`done` after."""
        key = await self._ready.get()
        self._queued.discard(key)
        self._postponed.discard(key)
        self._active.add(key)
        waited = self._clock() - self._added_at.pop(key, self._clock())
        return key, waited

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _cancel_timer(self, key: K) -> None:
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()


@dataclass
class Backoff(Generic[K]):
    """Exponential delays per key: base, 2×base, … up to cap; reset by a success."""

    base: float = 1.0
    cap: float = 300.0
    _failures: dict[K, int] = field(default_factory=dict)

    def next(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(self.cap, self.base * 2**failures)

    def reset(self, key: K) -> None:
        self._failures.pop(key, None)


@dataclass
class Stats:
    """Reconcile counters and the latest durations, for the liveness probe and the benchmark."""

    window: int = 10_000
    reconciles: int = 0
    failures: int = 0
    postponed: int = 0
    durations: collections.deque = field(default_factory=collections.deque)
    waits: collections.deque = field(default_factory=collections.deque)

    def record(self, *, duration: float, waited: float, failed: bool) -> None:
        self.reconciles += 1
        self.failures += failed
        for series, value in ((self.durations, duration), (self.waits, waited)):
            series.append(value)
            if len(series) > self.window:
                series.popleft()

    def summary(self) -> dict[str, float | int]:
        return {
            "reconciles": self.reconciles,
            "failures": self.failures,
            "postponed": self.postponed,
            "reconcile_p50_ms": _percentile(self.durations, 50) * 1000,
            "reconcile_p99_ms": _percentile(self.durations, 99) * 1000,
            "queue_wait_p50_ms": _percentile(self.waits, 50) * 1000,
            "queue_wait_p99_ms": _percentile(self.waits, 99) * 1000,
        }


def _percentile(values: collections.deque, percent: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(percent / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[index]


class Postponed(Exception):
    """Raised by a reconcile that did not run because its inputs are not current yet.

    Not a failure: no backoff, not counted as a reconcile; the key is looked
    at again after ``delay`` seconds (or at its next event, whichever first).
    """

    def __init__(self, delay: float) -> None:
        super().__init__(f"postponed by {delay}s")
        self.delay = delay


Reconcile = Callable[[K], Awaitable[float | None]]
"""Reconciles one key; returns seconds until it wants to run again, or None."""

SUCCESS = "success"
RETRY = "retry"
ERROR = "error"
RESULTS = (SUCCESS, RETRY, ERROR)


@dataclass(frozen=True)
class Outcome:
    """How one reconcile ended, timed once for every observer.

    ``result`` is :data:`SUCCESS`; :data:`RETRY` when the reconcile asked to
    run again (``kopf.TemporaryError``); or :data:`ERROR`, for
    ``kopf.PermanentError`` and for any other exception (which is retried
    with backoff too, but is a bug or an outage rather than a known wait).
    """

    result: str
    duration: float
    waited: float


Observe = Callable[[K, Outcome], None]


async def work(
    queue: WorkQueue[K],
    reconcile: Reconcile[K],
    *,
    backoff: Backoff[K],
    stats: Stats,
    observe: Observe[K] = lambda key, outcome: None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """One worker: reconcile keys from ``queue`` until cancelled.

    Every reconcile that ran is recorded in ``stats`` and passed to
    ``observe``; a postponed one only counts in ``stats.postponed``.
    Cancellation stops the worker between keys or inside a reconcile (which
    is safe: reconciles are idempotent and the next run starts over); a
    reconcile cut short is not recorded.
    """
    while True:
        key, waited = await queue.get()
        started = clock()
        try:
            result = await _reconcile_once(key, reconcile, queue=queue, backoff=backoff)
        finally:
            queue.done(key)
        if result is None:
            stats.postponed += 1
            continue
        outcome = Outcome(result=result, duration=clock() - started, waited=waited)
        stats.record(duration=outcome.duration, waited=waited, failed=result != SUCCESS)
        observe(key, outcome)


async def _reconcile_once(key: K, reconcile: Reconcile[K], *, queue: WorkQueue[K], backoff: Backoff[K]) -> str | None:
    """Reconcile ``key`` and schedule its next run; the result, or None when postponed."""
    try:
        requeue_after = await reconcile(key)
    except Postponed as exc:
        queue.postpone(key, exc.delay)
        return None
    except kopf.TemporaryError as exc:
        delay = exc.delay if exc.delay is not None else backoff.next(key)
        log.info("reconcile of %s will be retried in %.1fs: %s", key, delay, exc)
        queue.add_after(key, delay)
        return RETRY
    except kopf.PermanentError as exc:
        backoff.reset(key)
        log.warning("reconcile of %s failed until its next change: %s", key, exc)
        return ERROR
    except Exception:
        delay = backoff.next(key)
        log.exception("reconcile of %s failed; retrying in %.1fs", key, delay)
        queue.add_after(key, delay)
        return ERROR
    backoff.reset(key)
    if requeue_after is not None:
        queue.add_after(key, requeue_after)
    return SUCCESS
