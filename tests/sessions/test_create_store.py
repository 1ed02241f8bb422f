"""Building a store from the agent configuration: no I/O, clear errors, no leaked URLs."""

from __future__ import annotations

import pytest

from omnia.config import SessionConfig
from omnia.sessions import MemoryStore, StoreConfigError, create_store
from omnia.sessions.postgres import PostgresStore
from omnia.sessions.redis import RedisStore


@pytest.mark.parametrize(
    ("kind", "url", "expected"),
    [
        pytest.param("redis", "redis://cache:6379/0", RedisStore, id="redis"),
        pytest.param("redis", "rediss://user:pw@cache:6380/1", RedisStore, id="redis-tls"),
        pytest.param("postgres", "postgresql://omnia@db:5432/omnia", PostgresStore, id="postgres"),
        pytest.param("postgres", "postgres://omnia@db/omnia", PostgresStore, id="postgres-short-scheme"),
    ],
)
async def test_shared_store_is_built_from_the_url_in_its_environment_variable(kind, url, expected):
    """Nothing connects here: the servers named do not exist, and that is fine until first use."""
    store = create_store(SessionConfig(type=kind, url_env="STORE_URL"), env={"STORE_URL": url})
    assert isinstance(store, expected)
    await store.aclose()


async def test_default_variable_is_used_when_the_config_names_none():
    store = create_store(SessionConfig(type="redis"), env={"OMNIA_SESSION_URL": "redis://cache/0"})
    assert isinstance(store, RedisStore)
    await store.aclose()


def test_memory_store_needs_no_url():
    assert isinstance(create_store(SessionConfig(), env={}), MemoryStore)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "STORE_URL, which is unset", id="unset"),
        pytest.param({"STORE_URL": "  "}, "STORE_URL, which is unset or empty", id="empty"),
        pytest.param({"STORE_URL": "redis://u:hunter2@cache/0"}, "scheme 'redis'", id="wrong-scheme"),
    ],
)
def test_a_missing_or_wrong_url_is_a_clear_error_that_does_not_echo_it(env, message):
    with pytest.raises(StoreConfigError, match=message) as caught:
        create_store(SessionConfig(type="postgres", url_env="STORE_URL"), env=env)
    assert "hunter2" not in str(caught.value)
