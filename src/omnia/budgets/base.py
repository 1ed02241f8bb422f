"""Budget counters: how much a scope spent in a period, shared by every replica.

A *scope* is what a budget limits: one agent (``agent:<namespace>/<name>``)
or a budget shared by the agents of a namespace that name it
(``shared:<namespace>/<name>``). A *period* is a UTC calendar day or month.
A counter adds a turn's tokens and cost to every (scope, period) it belongs
to, atomically, and reads the totals back. One interface, three counters
(``memory``, ``redis``, ``postgres``), one contract test suite.

Nothing here reserves: enforcement checks the totals before a turn and adds
the turn's usage after it (see ``enforcing``), so a counter only ever adds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from omnia.sessions.base import StoreUnavailable

__all__ = ["CounterKey", "Period", "Spent", "StoreUnavailable", "UsageCounter", "periods"]


@dataclass(frozen=True)
class Period:
    """One UTC day (``kind="day"``, label ``2026-12-02``) or month (``month``, ``2026-12``)."""

    kind: str
    label: str
    ends_at: dt.datetime

    @property
    def keep_seconds(self) -> int:
        """How long a counter of this period is kept after its last write (it ends before that)."""
        return 2 * 86_400 if self.kind == "day" else 32 * 86_400


def periods(now: dt.datetime) -> tuple[Period, Period]:
    """The day and the month ``now`` (aware) falls in, in UTC."""
    now = now.astimezone(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    return (
        Period("day", day.strftime("%Y-%m-%d"), day + dt.timedelta(days=1)),
        Period("month", month.strftime("%Y-%m"), next_month),
    )


@dataclass(frozen=True)
class CounterKey:
    scope: str
    period: Period

    @property
    def name(self) -> str:
        return f"{self.scope}:{self.period.kind}:{self.period.label}"


@dataclass(frozen=True)
class Spent:
    tokens: int = 0
    cost_usd: float = 0.0


class UsageCounter(Protocol):
    """Where spending is counted.

    Coroutines safe to call concurrently from many tasks and replicas.
    Counters raise ``StoreUnavailable`` (never a driver exception) when their
    backend is unreachable. A failed or cancelled ``add`` has added either
    everything or nothing (to every key), but the caller cannot tell which.
    """

    async def spent(self, keys: Sequence[CounterKey]) -> list[Spent]:
        """The totals of ``keys``, in order; zero for a key never added to."""

    async def add(self, keys: Sequence[CounterKey], *, tokens: int, cost_usd: float) -> list[Spent]:
        """Add ``tokens`` and ``cost_usd`` to every key, as one atomic step; returns the new totals."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
