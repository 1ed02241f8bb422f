"""What only the Redis store does: its key layout and Redis-side expiry."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from omnia.sessions import Session, Turn
from omnia.sessions.redis import RedisStore

pytestmark = pytest.mark.services


async def test_a_session_is_two_namespaced_keys_expiring_together(redis_server):
    """Operators inspect and size Redis by key pattern; the layout is part of the contract."""
    store = RedisStore.from_url(redis_server.url, namespace="support-agent", ttl_seconds=30)
    client = Redis.from_url(redis_server.url)
    try:
        await store.create(Session(id="s1", agent="support-agent", prompt_version="1"))
        await store.append_turn("s1", Turn(index=0, messages=({"role": "user", "content": "hi"},)))
        keys = sorted(key.decode() for key in await client.keys("omnia:support-agent:*"))
        assert keys == ["omnia:support-agent:session:{s1}", "omnia:support-agent:session:{s1}:turns"]
        for key in keys:
            assert 25_000 < await client.pttl(key) <= 30_000
        assert await client.llen(keys[1]) == 1
    finally:
        await client.aclose()
        await store.aclose()


@pytest.mark.parametrize("namespace", ["", "has space", "brace{", "x" * 201])
def test_namespaces_that_could_break_the_key_layout_are_refused(namespace):
    with pytest.raises(ValueError):
        RedisStore.from_url("redis://127.0.0.1:1/0", namespace=namespace)
