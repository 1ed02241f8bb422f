"""The Redis counter: one hash per scope and period, added to by a Lua script.

Layout: ``omnia:{budget}:<scope>:<day|month>:<label>``, a hash with the
fields ``tokens`` (integer) and ``cost_usd`` (float). The ``{budget}`` hash
tag puts every counter in one Redis Cluster slot, so one script may add to
the agent's and the shared budget's counters at once; the traffic is one
small script per turn.

Why Lua: a turn's usage goes to up to four counters (two scopes, two
periods); ``HINCRBY`` and ``HINCRBYFLOAT`` are atomic each, and the script
makes the whole addition (and the expiry refresh) one step, so a reader
never sees a turn counted in its day but not in its month. Each key expires
a while after its period ends (``Period.keep_seconds``).

Like the session store: lazy connection, no retries (a repeated add whose
reply was lost would count a turn twice), every error ``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from omnia.budgets.base import CounterKey, Spent
from omnia.sessions import redis as sessions_redis

# KEYS: the counters. ARGV: tokens, cost, then each key's expiry in seconds.
# Returns the new totals, {tokens, cost as a string} per key (Lua numbers
# would truncate the float).
_ADD = """
local totals = {}
for i, key in ipairs(KEYS) do
  local tokens = redis.call('HINCRBY', key, 'tokens', ARGV[1])
  local cost = redis.call('HINCRBYFLOAT', key, 'cost_usd', ARGV[2])
  redis.call('EXPIRE', key, ARGV[2 + i])
  totals[i] = {tokens, cost}
end
return totals
"""

PREFIX = "omnia:{budget}:"


class RedisCounter:
    """Counters in Redis; the counter owns ``client`` and closes it in ``aclose``."""

    def __init__(self, client: Redis, *, timeout_seconds: float = 2.0) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(cls, url: str, *, timeout_seconds: float = 2.0, max_connections: int = 8) -> RedisCounter:
        client = sessions_redis.connect(url, timeout_seconds=timeout_seconds, max_connections=max_connections)
        return cls(client, timeout_seconds=timeout_seconds)

    async def spent(self, keys: Sequence[CounterKey]) -> list[Spent]:
        if not keys:
            return []
        async with self._reaching("spent"):
            async with self._client.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.hmget(PREFIX + key.name, "tokens", "cost_usd")
                rows = await pipe.execute()
        return [Spent(int(tokens or 0), float(cost or 0.0)) for tokens, cost in rows]

    async def add(self, keys: Sequence[CounterKey], *, tokens: int, cost_usd: float) -> list[Spent]:
        if not keys:
            return []
        args = [int(tokens), repr(float(cost_usd)), *(key.period.keep_seconds for key in keys)]
        async with self._reaching("add"):
            totals = await self._add(keys=[PREFIX + key.name for key in keys], args=args)
        return [Spent(int(total), float(cost)) for total, cost in totals]

    async def ping(self) -> None:
        async with self._reaching("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)

    def _reaching(self, operation: str):
        return sessions_redis.reaching(f"redis budget {operation}", timeout=self._timeout)
