"""The default session store: the option that names it, which agents use it, and what they are told."""

from __future__ import annotations

import pytest

from omnia.operator import sessionstores
from omnia.operator.sessionstores import DefaultStore
from tests.operator import manifests
from tests.operator.manifests import model


def test_the_option_names_the_type_and_the_secret_key_holding_the_url():
    store = sessionstores.parse("redis=omnia-system/omnia-session-redis:url")
    assert store == DefaultStore(type="redis", namespace="omnia-system", name="omnia-session-redis", key="url")
    assert str(store) == "omnia-system/omnia-session-redis:url"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("omnia-system/redis:url", id="no-type"),
        pytest.param("memory=omnia-system/redis:url", id="memory-has-no-url"),
        pytest.param("redis=redis:url", id="no-namespace"),
        pytest.param("redis=omnia-system/redis", id="no-key"),
        pytest.param("redis=Omnia_System/redis:url", id="bad-namespace"),
        pytest.param("redis=omnia-system/redis:", id="empty-key"),
    ],
)
def test_a_malformed_option_is_refused_with_the_expected_shape(text):
    with pytest.raises(ValueError, match=r"TYPE=NAMESPACE/NAME:KEY"):
        sessionstores.parse(text)


def test_one_store_per_type():
    stores = sessionstores.parse_all(["redis=ns/a:url", "postgres=ns/b:dsn"])
    assert sorted(stores) == ["postgres", "redis"]
    with pytest.raises(ValueError, match="redis.*twice"):
        sessionstores.parse_all(["redis=ns/a:url", "redis=ns/b:url"])


@pytest.mark.parametrize(
    ("session", "uses"),
    [
        pytest.param({"type": "memory"}, False, id="memory"),
        pytest.param({"type": "redis"}, True, id="redis-without-secret"),
        pytest.param({"type": "postgres"}, True, id="postgres-without-secret"),
        pytest.param({"type": "redis", "secretRef": {"name": "r", "key": "url"}}, False, id="own-secret"),
    ],
)
def test_agents_of_a_shared_store_type_without_a_secret_ref_use_the_default(session, uses):
    assert sessionstores.uses_default(model(manifests.agent(session=session))) is uses


def test_the_message_says_both_ways_out():
    message = sessionstores.not_configured_message("postgres")
    assert "spec.session.secretRef" in message
    assert "sessionStore.postgres.secretRef" in message
    assert "--default-session-secret postgres=NAMESPACE/NAME:KEY" in message
