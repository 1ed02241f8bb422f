"""Which objects a change reconciles: exactly those that reach it along references."""

from __future__ import annotations

from omnia.operator import references
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from tests.operator import manifests
from tests.operator.fakes import MemoryCache


def cache_with_two_agents() -> MemoryCache:
    cache = MemoryCache()
    cache.put(manifests.agent("a", providerRef={"name": "p1"}, session={"type": "redis", "secretRef": {"name": "redis", "key": "url"}}))
    cache.put(manifests.agent("b", providerRef={"name": "p2"}, promptPackRef={"name": "sourced"}, toolRegistryRef={"name": "tools"}))
    cache.put(manifests.provider("p1", type="claude", credentials={"secretRef": {"name": "key-1", "key": "k"}}))
    cache.put(manifests.provider("p2", type="claude", credentials={"secretRef": {"name": "key-2", "key": "k"}}))
    cache.put(manifests.pack("prompts"))
    cache.put({**manifests.pack("sourced"), "spec": {"version": "1.0.0", "source": {"configMapRef": {"name": "text", "key": "p"}}}})
    cache.put(manifests.registry("tools", {"name": "spec", "type": "openapi",
                                           "openapi": {"configMapRef": {"name": "openapi", "key": "doc"}}}))
    return cache


def affected(cache: MemoryCache, kind: str, name: str) -> set[str]:
    return {f"{ref.kind}/{ref.name}" for ref in references.affected(Ref(kind, "team-a", name), cache.referrers)}


def test_a_secret_reaches_the_provider_naming_it_and_its_agents_only():
    cache = cache_with_two_agents()
    assert affected(cache, "Secret", "key-1") == {"Provider/p1", "AgentRuntime/a"}
    assert affected(cache, "Secret", "redis") == {"AgentRuntime/a"}
    assert affected(cache, "Secret", "unrelated") == set()


def test_a_configmap_reaches_the_pack_or_registry_sourced_from_it_and_their_agents():
    cache = cache_with_two_agents()
    assert affected(cache, "ConfigMap", "text") == {"PromptPack/sourced", "AgentRuntime/b"}
    assert affected(cache, "ConfigMap", "openapi") == {"ToolRegistry/tools", "AgentRuntime/b"}


def test_a_prompt_pack_change_reconciles_the_pack_and_its_consumers():
    cache = cache_with_two_agents()
    assert affected(cache, "PromptPack", "prompts") == {"PromptPack/prompts", "AgentRuntime/a"}
    assert affected(cache, "AgentRuntime", "a") == {"AgentRuntime/a"}


def test_an_agent_on_the_default_session_store_references_its_mirror_and_the_source():
    """The mirror beside it (recreated if deleted) and the installation's Secret (a rotation rolls the agent)."""
    store = DefaultStore(type="redis", namespace="omnia-system", name="omnia-session-redis", key="url")
    agent = manifests.model(manifests.agent("a", session={"type": "redis"}))
    found = references.references(agent, namespace="team-a", session_stores={"redis": store})
    assert {Ref("Secret", "team-a", "a-session-store"), Ref("Secret", "omnia-system", "omnia-session-redis")} <= found
    unconfigured = references.references(agent, namespace="team-a", session_stores={})
    assert Ref("Secret", "team-a", "a-session-store") in unconfigured
    assert not [ref for ref in unconfigured if ref.namespace == "omnia-system"]
    own = manifests.model(manifests.agent("b", session={"type": "redis", "secretRef": {"name": "r", "key": "url"}}))
    assert not [ref for ref in references.references(own, namespace="team-a", session_stores={"redis": store})
                if ref.name in ("b-session-store", "omnia-session-redis")]
