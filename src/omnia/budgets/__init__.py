"""Token and cost budgets per agent and per namespace, enforced across replicas.

``base`` holds the counter contract and the periods, ``enforcing`` the
check-before, count-after rule the agent loop applies; ``memory``, ``redis``
and ``postgres`` are the counters. Budgets are counted in the agent's session
store: the same Redis or PostgreSQL, so every replica sees one total.
"""

from __future__ import annotations

from collections.abc import Mapping

from omnia.budgets.base import CounterKey, Period, Spent, UsageCounter, periods
from omnia.budgets.enforcing import Budgets, Exceeded, Limited, Standing, limits
from omnia.budgets.memory import MemoryCounter
from omnia.config import SessionConfig

__all__ = [
    "Budgets",
    "CounterKey",
    "Exceeded",
    "Limited",
    "MemoryCounter",
    "Period",
    "Spent",
    "Standing",
    "UsageCounter",
    "connect",
    "create_counter",
    "limits",
    "periods",
]


def create_counter(config: SessionConfig, *, env: Mapping[str, str]) -> UsageCounter:
    """The counter in the store ``config`` names (same URL as the sessions), connected lazily."""
    from omnia.sessions import store_url

    if config.type == "memory":
        return MemoryCounter()
    return connect(config.type, store_url(config, env=env))


def connect(store_type: str, url: str) -> UsageCounter:
    """The counter of a ``redis`` or ``postgres`` store at ``url``, connected lazily.

    The runtimes count in it and the operator reads it back for the
    AgentRuntime's status; ValueError for a URL the driver cannot parse.
    """
    if store_type == "redis":
        from omnia.budgets.redis import RedisCounter

        return RedisCounter.from_url(url)
    if store_type == "postgres":
        from omnia.budgets.postgres import PostgresCounter

        return PostgresCounter(dsn=url)
    raise ValueError(f"no shared budget counter for session store type {store_type!r}")
