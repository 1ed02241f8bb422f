"""The reconcilers against in-memory caches and API: what they apply, write and report."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json

import httpx
import kopf
import pytest

from omnia.api.v1alpha1 import SecretKeySelector
from omnia.config import AgentConfig, PromptConfig
from omnia.operator import builders, hashing, labels, queueing, reconciling, routing
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from omnia.operator.summaries import DeploymentCondition, DeploymentSummary, SecretSummary
from tests.operator import manifests
from tests.operator.fakes import MemoryApi, MemoryCache, offline_discover, with_status
from tests.tools.serving import mcp_service

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
NS = manifests.NAMESPACE


def context(cache: MemoryCache, api: MemoryApi, *, now=NOW, discover=None, session_stores=None,
            tracing=None, activator=None) -> reconciling.Context:
    clock = {"t": 0.0}
    defaults = builders.Defaults(image="omnia:test", session_stores=session_stores or {},
                                 tracing=tracing or builders.TracingDefaults(), activator=activator)
    return reconciling.Context(cache=cache, api=api, defaults=defaults,
                               clock=lambda: now, monotonic=lambda: clock["t"],
                               discover=discover or offline_discover())


def published(cache: MemoryCache, pack_body: dict, prompt: PromptConfig) -> dict:
    """``pack_body`` as it is after its first reconcile: stable version, snapshot in the cache."""
    content_hash = hashing.content_hash(prompt)
    cache.snapshots[(NS, pack_body["metadata"]["name"], prompt.version, content_hash)] = prompt
    body = with_status(pack_body, {"stableVersion": prompt.version, "history": [
        {"version": prompt.version, "contentHash": content_hash, "createdAt": "2026-01-01T00:00:00Z"}]})
    cache.put(body)
    return body


def ready_world(**agent_spec) -> tuple[MemoryCache, MemoryApi, dict]:
    cache, api = MemoryCache(), MemoryApi()
    agent = manifests.agent(**agent_spec)
    cache.put(agent)
    cache.put(manifests.provider())
    published(cache, manifests.pack(), PromptConfig(version="1.0.0", system_prompt="You are helpful."))
    return cache, api, agent


AGENT = Ref("AgentRuntime", NS, "agent")
PACK = Ref("PromptPack", NS, "prompts")


async def test_an_agent_whose_references_resolve_gets_its_objects_and_a_status():
    cache, api, _ = ready_world()
    assert await reconciling.reconcile(AGENT, context(cache, api)) is None
    assert [call[:3] for call in api.writes() if call[0] == "apply"] == [
        ("apply", "ServiceAccount", "agent"), ("apply", "ConfigMap", "agent-config"),
        ("apply", "Service", "agent"), ("apply", "Deployment", "agent"), ("apply", "NetworkPolicy", "agent")]
    status = api.statuses[("AgentRuntime", NS, "agent")]
    assert status["phase"] == "Progressing"
    assert status["activePromptVersions"] == ["1.0.0"]
    config = AgentConfig.from_json(api.store[("ConfigMap", NS, "agent-config")]["data"]["agent.json"])
    assert config.prompts.stable.system_prompt == "You are helpful."
    deployment = api.store[("Deployment", NS, "agent")]
    assert deployment["spec"]["template"]["metadata"]["annotations"][labels.CONFIG_HASH] == status["configHash"]


class OverlapApi(MemoryApi):
    """A MemoryApi whose applies take a turn of the event loop, recording which were in flight together."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: set[str] = set()
        self.overlaps: dict[str, set[str]] = {}

    async def apply(self, obj, *, field_manager=labels.OPERATOR):
        kind = obj["kind"]
        self.in_flight.add(kind)
        self.overlaps[kind] = set(self.in_flight)
        await asyncio.sleep(0)
        self.overlaps[kind] |= self.in_flight
        self.in_flight.discard(kind)
        return await super().apply(obj, field_manager=field_manager)


async def test_an_agents_objects_are_applied_at_once_except_that_the_deployment_waits_for_what_its_pods_use():
    """One request after another made a reconcile as slow as the sum of its requests: 200 agents took minutes."""
    cache, api, _ = ready_world()
    api = OverlapApi()
    await reconciling.reconcile(AGENT, context(cache, api))
    assert api.overlaps == {
        "ServiceAccount": {"ServiceAccount", "ConfigMap", "Service"},
        "ConfigMap": {"ServiceAccount", "ConfigMap", "Service"},
        "Service": {"ServiceAccount", "ConfigMap", "Service"},
        "Deployment": {"Deployment"},
        "NetworkPolicy": {"NetworkPolicy"},
    }


async def test_a_second_reconcile_of_an_unchanged_agent_writes_nothing():
    """Level-based but cheap: the same manifests are not applied again, an equal status is not written."""
    cache, api, agent = ready_world()
    ctx = context(cache, api)
    await reconciling.reconcile(AGENT, ctx)
    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.deployments[(NS, "agent")] = DeploymentSummary.from_body(api.store[("Deployment", NS, "agent")])
    api.calls.clear()
    assert await reconciling.reconcile(AGENT, ctx) is None
    assert api.writes() == []


async def test_a_finished_rollout_makes_the_agent_ready():
    cache, api, agent = ready_world()
    ctx = context(cache, api)
    await reconciling.reconcile(AGENT, ctx)
    config_hash = api.statuses[("AgentRuntime", NS, "agent")]["configHash"]
    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.deployments[(NS, "agent")] = DeploymentSummary(
        generation=1, observed_generation=1, spec_replicas=1, replicas=1, ready_replicas=1, updated_replicas=1,
        available_replicas=1, config_hash=config_hash, replicas_applied_by_operator=True,
        conditions={"Available": DeploymentCondition("True", "MinimumReplicasAvailable", "")})
    await reconciling.reconcile(AGENT, ctx)
    status = api.statuses[("AgentRuntime", NS, "agent")]
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


async def test_missing_references_are_reported_and_retried_without_touching_the_workload():
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.agent())
    with pytest.raises(kopf.TemporaryError) as raised:
        await reconciling.reconcile(AGENT, context(cache, api))
    assert raised.value.delay is None  # the queue's backoff decides
    assert [call[0] for call in api.writes()] == ["patch_status", "event", "event"]
    status = api.statuses[("AgentRuntime", NS, "agent")]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["ProviderReady"] == ("False", "ProviderNotFound")
    assert conditions["PromptPackReady"] == ("False", "PromptPackNotFound")
    assert status["phase"] == "Pending"
    assert {(e["type"], e["reason"]) for e in api.events} == {("Warning", "ProviderNotFound"), ("Warning", "PromptPackNotFound")}


async def test_a_missing_provider_key_blocks_the_agent():
    cache, api, _ = ready_world()
    cache.put(manifests.provider(type="claude", credentials={"secretRef": {"name": "anthropic", "key": "api-key"}}))
    cache.put_secret(NS, "anthropic", "other-key")
    with pytest.raises(kopf.TemporaryError, match="has no key 'api-key'"):
        await reconciling.reconcile(AGENT, context(cache, api))
    assert not [call for call in api.writes() if call[0] == "apply"]


async def test_a_secret_version_change_changes_the_config_hash():
    cache, api, agent = ready_world()
    cache.put(manifests.provider(type="claude", credentials={"secretRef": {"name": "anthropic", "key": "api-key"}}))
    cache.put_secret(NS, "anthropic", "api-key", version="10")
    ctx = context(cache, api)
    await reconciling.reconcile(AGENT, ctx)
    first = api.statuses[("AgentRuntime", NS, "agent")]["configHash"]
    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.put_secret(NS, "anthropic", "api-key", version="11")
    await reconciling.reconcile(AGENT, ctx)
    assert api.statuses[("AgentRuntime", NS, "agent")]["configHash"] != first


async def test_an_invalid_spec_fails_until_the_next_edit():
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.agent(replicas=-1))
    with pytest.raises(kopf.PermanentError):
        await reconciling.reconcile(AGENT, context(cache, api))
    status = api.statuses[("AgentRuntime", NS, "agent")]
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], "spec.replicas" in ready["message"]) == ("InvalidSpec", True)
    assert [e["reason"] for e in api.events] == ["InvalidSpec"]


@pytest.mark.parametrize("name", ["support.agent", "Support", "9lives", "a" * 64])
async def test_a_name_no_service_can_have_is_an_invalid_spec_and_nothing_is_applied(name):
    """Why: the agent's Service is named after it; a '.' made every apply of the Service fail, with no status."""
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.agent(name))
    with pytest.raises(kopf.PermanentError):
        await reconciling.reconcile(Ref("AgentRuntime", NS, name), context(cache, api))
    ready = next(c for c in api.statuses[("AgentRuntime", NS, name)]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], "metadata.name" in ready["message"]) == ("InvalidSpec", True)
    assert not [call for call in api.calls if call[0] == "apply" and call[1] in ("Service", "Deployment")]


async def test_an_autoscaled_deployment_hands_its_replicas_to_the_autoscaler_first():
    """spec.replicas gets a second owner before the operator stops applying it, so it is not reset to 1."""
    cache, api, _ = ready_world(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5})
    cache.deployments[(NS, "agent")] = DeploymentSummary(
        generation=1, observed_generation=1, spec_replicas=3, replicas=3, ready_replicas=3, updated_replicas=3,
        available_replicas=3, config_hash="x", replicas_applied_by_operator=True)
    await reconciling.reconcile(AGENT, context(cache, api))
    applies = [call for call in api.calls if call[0] == "apply"]
    assert applies[0] == ("apply", "Deployment", "agent", labels.SCALE_FIELD_MANAGER)
    assert "replicas" not in api.store[("Deployment", NS, "agent")]["spec"] or \
        api.store[("Deployment", NS, "agent")]["spec"]["replicas"] == 3


async def test_objects_the_spec_no_longer_asks_for_are_deleted_if_the_agent_owns_them():
    cache, api, agent = ready_world(networkPolicy={"enabled": False})
    api.store[("HorizontalPodAutoscaler", NS, "agent")] = {"metadata": {"uid": "hpa-1", "ownerReferences": [{"uid": "uid-agent"}]}}
    api.store[("NetworkPolicy", NS, "agent")] = {"metadata": {"uid": "np-1", "ownerReferences": [{"uid": "someone-else"}]}}
    await reconciling.reconcile(AGENT, context(cache, api))
    assert ("HorizontalPodAutoscaler", NS, "agent") not in api.store
    assert ("NetworkPolicy", NS, "agent") in api.store


async def test_keda_not_installed_is_a_condition_not_a_crash():
    autoscaling = {"enabled": True, "engine": "keda", "minReplicas": 1, "maxReplicas": 3}
    cache, api, _ = ready_world(autoscaling=autoscaling)
    api.missing_kinds.add("ScaledObject")
    with pytest.raises(kopf.TemporaryError, match="ScaledObject"):
        await reconciling.reconcile(AGENT, context(cache, api))
    ready = next(c for c in api.statuses[("AgentRuntime", NS, "agent")]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KedaNotInstalled")


# --- routing to the activator ------------------------------------------------------------

ACTIVATOR = builders.ActivatorService(namespace="omnia-system", name="omnia-activator")
TO_ZERO = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 3,
           "metrics": [{"type": "custom", "name": "active_connections", "target": 10}]}
SLICE = ("EndpointSlice", NS, "agent-activator")


def deployment_with(ready: int) -> DeploymentSummary:
    return DeploymentSummary(generation=1, observed_generation=1, spec_replicas=ready, replicas=ready,
                             ready_replicas=ready, updated_replicas=ready, available_replicas=ready,
                             config_hash=None, replicas_applied_by_operator=False)


def at_zero(**spec) -> tuple[MemoryCache, MemoryApi, reconciling.Context]:
    cache, api, _ = ready_world(autoscaling=TO_ZERO, **spec)
    cache.deployments[(NS, "agent")] = deployment_with(0)
    cache.activator = ["10.0.0.2", "10.0.0.9"]
    return cache, api, context(cache, api, activator=ACTIVATOR)


async def reconcile_again(cache: MemoryCache, api: MemoryApi, ctx: reconciling.Context, body: dict | None = None):
    """Reconcile once the cache shows the agent (``body``, or as it was) with the operator's last status."""
    body = body or manifests.agent(autoscaling=TO_ZERO)
    cache.put(with_status(body, api.statuses.get(("AgentRuntime", NS, "agent"))))
    await reconciling.reconcile(AGENT, ctx)


async def test_an_agent_at_zero_gets_the_activators_slice():
    cache, api, ctx = at_zero()
    await reconciling.reconcile(AGENT, ctx)
    applied = api.store[SLICE]
    assert [endpoint["addresses"] for endpoint in applied["endpoints"]] == [["10.0.0.2"], ["10.0.0.9"]]
    assert applied["metadata"]["labels"]["kubernetes.io/service-name"] == "agent"
    assert applied["ports"] == [{"name": "ws", "port": 8080, "protocol": "TCP"}]
    scaled = api.store[("ScaledObject", NS, "agent")]
    assert [trigger["type"] for trigger in scaled["spec"]["triggers"]] == ["external-push"]


async def test_the_slice_follows_the_activators_addresses_and_is_put_back_when_deleted():
    """Applied once per change; missing from the cache (someone deleted it) it is applied again."""
    cache, api, ctx = at_zero()
    await reconciling.reconcile(AGENT, ctx)
    cache.activator_slices[(NS, "agent")] = routing.SliceSummary(uid="s-1", controller="uid-agent")
    api.calls.clear()
    await reconcile_again(cache, api, ctx)
    assert ("apply", "EndpointSlice", "agent-activator", labels.OPERATOR) not in api.calls

    cache.activator = ["10.0.0.3"]
    await reconcile_again(cache, api, ctx)
    assert [endpoint["addresses"] for endpoint in api.store[SLICE]["endpoints"]] == [["10.0.0.3"]]

    del cache.activator_slices[(NS, "agent")]
    api.calls.clear()
    await reconcile_again(cache, api, ctx)
    assert ("apply", "EndpointSlice", "agent-activator", labels.OPERATOR) in api.calls


async def test_the_slice_is_deleted_as_soon_as_a_pod_is_ready():
    cache, api, ctx = at_zero()
    await reconciling.reconcile(AGENT, ctx)
    cache.activator_slices[(NS, "agent")] = routing.SliceSummary(uid=api.store[SLICE]["metadata"]["uid"],
                                                                 controller="uid-agent")
    cache.deployments[(NS, "agent")] = deployment_with(1)
    await reconcile_again(cache, api, ctx)
    assert SLICE not in api.store

    cache.activator_slices.clear()
    cache.deployments[(NS, "agent")] = deployment_with(0)
    await reconcile_again(cache, api, ctx)
    assert SLICE in api.store, "back at zero, the slice comes back"


@pytest.mark.parametrize("change", [
    pytest.param({"autoscaling": {**TO_ZERO, "minReplicas": 1}}, id="no-longer-scale-to-zero"),
    pytest.param({"autoscaling": {**TO_ZERO, "enabled": False}}, id="autoscaling-off"),
])
async def test_the_slice_of_an_agent_that_stops_scaling_to_zero_is_deleted(change):
    cache, api, ctx = at_zero()
    await reconciling.reconcile(AGENT, ctx)
    cache.activator_slices[(NS, "agent")] = routing.SliceSummary(uid=api.store[SLICE]["metadata"]["uid"],
                                                                 controller="uid-agent")
    await reconcile_again(cache, api, ctx, manifests.agent(**change))
    assert SLICE not in api.store


async def test_a_slice_of_someone_elses_is_never_deleted():
    cache, api, ctx = at_zero()
    cache.deployments[(NS, "agent")] = deployment_with(1)
    api.store[SLICE] = {"metadata": {"uid": "s-9"}}
    cache.activator_slices[(NS, "agent")] = routing.SliceSummary(uid="s-9", controller="someone-else")
    await reconciling.reconcile(AGENT, ctx)
    assert SLICE in api.store


async def test_without_the_activators_addresses_nothing_is_routed_yet():
    """Never listed (no rights there yet, say): no slice with made-up endpoints; the agent is built as usual."""
    cache, api, ctx = at_zero()
    cache.activator = None
    await reconciling.reconcile(AGENT, ctx)
    assert SLICE not in api.store
    assert ("Deployment", NS, "agent") in api.store


async def test_an_agent_at_zero_whose_provider_went_away_still_wakes_through_the_activator():
    cache, api, ctx = at_zero()
    del cache.objects[Ref("Provider", NS, "mock")]
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(AGENT, ctx)
    assert SLICE in api.store


async def test_without_an_activator_an_agent_at_zero_keeps_todays_behaviour():
    cache, api, _ = ready_world(autoscaling=TO_ZERO)
    cache.deployments[(NS, "agent")] = deployment_with(0)
    ctx = context(cache, api)
    ctx.defaults = builders.Defaults(image="omnia:test", prometheus_url="http://prometheus:9090")
    await reconciling.reconcile(AGENT, ctx)
    assert SLICE not in api.store
    assert [t["type"] for t in api.store[("ScaledObject", NS, "agent")]["spec"]["triggers"]] == ["prometheus"]


async def test_a_deleted_agent_is_forgotten():
    cache, api = MemoryCache(), MemoryApi()
    assert await reconciling.reconcile(AGENT, context(cache, api)) is None
    assert api.calls == []


# --- the default session store ---------------------------------------------------------

REDIS = DefaultStore(type="redis", namespace="omnia-system", name="omnia-session-redis", key="url")
REDIS_URL = "redis://:s3cret@redis.omnia-system.svc:6379/0"
MIRROR = ("Secret", NS, "agent-session-store")


def with_default_redis(cache: MemoryCache, api: MemoryApi, *, version: str = "5", url: str = REDIS_URL) -> None:
    cache.put_secret(REDIS.namespace, REDIS.name, "url", version=version)
    api.secrets[(REDIS.namespace, REDIS.name)] = {"url": url}


def mirrored(cache: MemoryCache, api: MemoryApi) -> None:
    """The watch shows the mirror the operator applied."""
    cache.secrets[(NS, "agent-session-store")] = SecretSummary.from_body(api.store[MIRROR])


async def test_without_a_default_store_the_agent_is_not_rolled_out_and_the_status_says_what_to_do():
    """session.type redis, no secretRef, none installed: its runtime could only crash, so no pods at all;
    Ready False with SessionStoreNotConfigured naming both ways out, and a Warning Event."""
    cache, api, _ = ready_world(session={"type": "redis"})
    with pytest.raises(kopf.TemporaryError, match="sessionStore.redis.secretRef"):
        await reconciling.reconcile(AGENT, context(cache, api))
    assert not [call for call in api.writes() if call[0] in ("apply", "create", "delete")]
    status = api.statuses[("AgentRuntime", NS, "agent")]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SessionStoreNotConfigured")
    assert "spec.session.secretRef" in ready["message"] and "sessionStore.redis.secretRef" in ready["message"]
    assert status["phase"] == "Pending"
    assert [(e["type"], e["reason"]) for e in api.events] == [("Warning", "SessionStoreNotConfigured")]


async def test_an_existing_deployment_is_left_as_it_is_when_the_default_store_goes_away():
    """The operator restarted without the default: what runs keeps running, nothing is updated to crash."""
    cache, api, _ = ready_world(session={"type": "redis"})
    cache.deployments[(NS, "agent")] = DeploymentSummary(
        generation=1, observed_generation=1, spec_replicas=1, replicas=1, ready_replicas=1, updated_replicas=1,
        available_replicas=1, config_hash="running", replicas_applied_by_operator=True)
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(AGENT, context(cache, api))
    assert not [call for call in api.writes() if call[0] in ("apply", "create", "delete")]
    assert api.statuses[("AgentRuntime", NS, "agent")]["phase"] == "Degraded"


async def test_the_default_store_is_mirrored_beside_the_agent_and_read_by_its_runtime():
    cache, api, _ = ready_world(session={"type": "redis"})
    with_default_redis(cache, api)
    await reconciling.reconcile(AGENT, context(cache, api, session_stores={"redis": REDIS}))
    applies = [call[1:3] for call in api.writes() if call[0] == "apply"]
    assert applies[0] == ("Secret", "agent-session-store")  # before the pods that read it
    mirror = api.store[MIRROR]
    assert base64.b64decode(mirror["data"]["url"]).decode() == REDIS_URL
    assert mirror["metadata"]["ownerReferences"][0]["uid"] == "uid-agent"
    runtime = api.store[("Deployment", NS, "agent")]["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "OMNIA_SESSION_URL",
            "valueFrom": {"secretKeyRef": {"name": "agent-session-store", "key": "url"}}} in runtime["env"]
    status = api.statuses[("AgentRuntime", NS, "agent")]
    assert status["phase"] == "Progressing"
    # The URL is in the mirrored Secret and nowhere else the operator writes.
    elsewhere = [obj for key, obj in api.store.items() if key != MIRROR]
    for written in (elsewhere, list(api.statuses.values()), api.events):
        text = json.dumps(written, default=str)
        assert "s3cret" not in text and base64.b64encode(REDIS_URL.encode()).decode() not in text


async def test_an_up_to_date_mirror_is_not_read_or_written_again():
    cache, api, agent = ready_world(session={"type": "redis"})
    with_default_redis(cache, api)
    ctx = context(cache, api, session_stores={"redis": REDIS})
    await reconciling.reconcile(AGENT, ctx)
    mirrored(cache, api)
    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.deployments[(NS, "agent")] = DeploymentSummary.from_body(api.store[("Deployment", NS, "agent")])
    ctx.forget_applied()  # as after a restart or at the periodic resync
    api.calls.clear()
    await reconciling.reconcile(AGENT, ctx)
    assert ("get", "Secret", REDIS.name) not in api.calls
    assert ("Secret", "agent-session-store") not in [call[1:3] for call in api.calls if call[0] == "apply"]


async def test_rotating_the_default_store_rewrites_the_mirror_and_rolls_the_agent():
    cache, api, agent = ready_world(session={"type": "redis"})
    with_default_redis(cache, api, version="5")
    ctx = context(cache, api, session_stores={"redis": REDIS})
    await reconciling.reconcile(AGENT, ctx)
    first = api.statuses[("AgentRuntime", NS, "agent")]["configHash"]
    mirrored(cache, api)
    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))

    with_default_redis(cache, api, version="6", url="redis://:rotated@redis.omnia-system.svc:6379/0")
    await reconciling.reconcile(AGENT, ctx)
    assert base64.b64decode(api.store[MIRROR]["data"]["url"]).decode().startswith("redis://:rotated@")
    assert api.store[MIRROR]["metadata"]["annotations"][labels.SESSION_STORE_VERSION] == "6"
    second = api.statuses[("AgentRuntime", NS, "agent")]["configHash"]
    assert second != first
    deployment = api.store[("Deployment", NS, "agent")]
    assert deployment["spec"]["template"]["metadata"]["annotations"][labels.CONFIG_HASH] == second


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param(None, "Secret 'omnia-system/omnia-session-redis' not found", id="missing"),
        pytest.param(("other",), "Secret 'omnia-system/omnia-session-redis' has no key 'url'", id="no-key"),
    ],
)
async def test_a_default_store_secret_that_is_missing_or_lacks_the_key_blocks_the_agent(keys, message):
    cache, api, _ = ready_world(session={"type": "redis"})
    if keys is not None:
        cache.put_secret(REDIS.namespace, REDIS.name, *keys)
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(AGENT, context(cache, api, session_stores={"redis": REDIS}))
    assert not [call for call in api.writes() if call[0] == "apply"]
    ready = next(c for c in api.statuses[("AgentRuntime", NS, "agent")]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SessionSecretNotFound")
    assert ready["message"] == f"the default redis session store: {message}"


async def test_a_secret_of_someone_elses_under_the_mirrors_name_is_not_overwritten():
    cache, api, _ = ready_world(session={"type": "redis"})
    with_default_redis(cache, api)
    cache.put_secret(NS, "agent-session-store", "url", controller=None)
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(AGENT, context(cache, api, session_stores={"redis": REDIS}))
    assert not [call for call in api.writes() if call[0] == "apply"]
    ready = next(c for c in api.statuses[("AgentRuntime", NS, "agent")]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], "agent-session-store" in ready["message"]) == ("SessionSecretConflict", True)


async def test_the_mirror_is_deleted_once_the_agent_names_its_own_secret():
    cache, api, agent = ready_world(session={"type": "redis"})
    with_default_redis(cache, api)
    ctx = context(cache, api, session_stores={"redis": REDIS})
    await reconciling.reconcile(AGENT, ctx)
    mirrored(cache, api)
    own = manifests.agent(session={"type": "redis", "secretRef": {"name": "mine", "key": "url"}})
    cache.put(with_status(own, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.put_secret(NS, "mine", "url")
    await reconciling.reconcile(AGENT, ctx)
    assert MIRROR not in api.store
    runtime = api.store[("Deployment", NS, "agent")]["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "OMNIA_SESSION_URL", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "url"}}} in runtime["env"]


# --- prompt packs ---------------------------------------------------------------------


async def test_a_new_pack_publishes_a_snapshot_then_its_status():
    cache, api = MemoryCache(), MemoryApi()
    pack = manifests.pack(version="1.0.0")
    cache.put(pack)
    cache.put(manifests.agent("consumer"))
    await reconciling.reconcile(PACK, context(cache, api))
    assert [call[0] for call in api.writes()] == ["create", "patch_annotations", "patch_status", "event"]
    (snapshot,) = [obj for (kind, _, _), obj in api.store.items() if kind == "ConfigMap"]
    assert snapshot["immutable"] is True
    status = api.statuses[("PromptPack", NS, "prompts")]
    assert (status["phase"], status["stableVersion"], status["consumers"]) == ("Ready", "1.0.0", ["consumer"])
    assert [entry["version"] for entry in status["history"]] == ["1.0.0"]
    assert [e["reason"] for e in api.events] == ["Released"]


async def test_a_pack_reconcile_waits_for_the_cache_to_show_its_own_write():
    """Deciding again from the pre-write state would publish twice; the reconcile is postponed instead."""
    cache, api = MemoryCache(), MemoryApi()
    pack = manifests.pack()
    cache.put(pack)
    ctx = context(cache, api)
    await reconciling.reconcile(PACK, ctx)
    (snapshot,) = [obj for (kind, _, _), obj in api.store.items() if kind == "ConfigMap"]
    prompt = builders.read_snapshot(snapshot["data"])
    cache.snapshots[(NS, "prompts", prompt.version, hashing.content_hash(prompt))] = prompt
    api.calls.clear()
    with pytest.raises(queueing.Postponed):
        await reconciling.reconcile(PACK, ctx)
    assert api.calls == []
    cache.put(with_status(pack, api.statuses[("PromptPack", NS, "prompts")],
                          api.annotations[("PromptPack", NS, "prompts")]))
    assert await reconciling.reconcile(PACK, ctx) is None
    assert api.writes() == []


async def test_a_canary_step_requeues_the_pack_at_the_end_of_its_pause():
    cache, api = MemoryCache(), MemoryApi()
    rollout = {"strategy": "canary", "steps": [{"weight": 20, "pause": "5m"}]}
    body = published(cache, manifests.pack(rollout=rollout), PromptConfig(version="1.0.0", system_prompt="You are helpful."))
    body = {**body, "spec": {**body["spec"], "version": "2.0.0", "systemPrompt": "You are terse."}}
    cache.put(body)
    requeue = await reconciling.reconcile(PACK, context(cache, api))
    assert requeue == 300
    status = api.statuses[("PromptPack", NS, "prompts")]
    assert (status["phase"], status["canaryVersion"], status["canaryWeight"]) == ("Canary", "2.0.0", 20)


async def test_a_pack_whose_source_configmap_is_missing_says_so_and_retries():
    cache, api = MemoryCache(), MemoryApi()
    cache.put({**manifests.pack(), "spec": {"version": "1.0.0", "source": {"configMapRef": {"name": "text", "key": "prompt"}}}})
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(PACK, context(cache, api))
    status = api.statuses[("PromptPack", NS, "prompts")]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", "SourceNotFound")


async def test_a_pack_sourced_from_a_configmap_publishes_its_content():
    cache, api = MemoryCache(), MemoryApi()
    api.store[("ConfigMap", NS, "text")] = {"data": {"prompt": "systemPrompt: Be kind.\nvariables: {name: x}\n"}}
    cache.put({**manifests.pack(), "spec": {"version": "1.0.0", "source": {"configMapRef": {"name": "text", "key": "prompt"}}}})
    await reconciling.reconcile(PACK, context(cache, api))
    snapshot = next(obj for (kind, _, name), obj in api.store.items() if kind == "ConfigMap" and name != "text")
    assert builders.read_snapshot(snapshot["data"]).system_prompt == "Be kind."


async def test_a_template_that_cannot_render_is_not_published():
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.pack(prompt="Hello {{ name"))
    await reconciling.reconcile(PACK, context(cache, api))
    assert not [call for call in api.calls if call[0] == "create"]
    ready = next(c for c in api.statuses[("PromptPack", NS, "prompts")]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidTemplate"


async def test_a_variable_nothing_defines_is_not_published_even_in_a_branch_the_defaults_skip():
    """Why: a render with the defaults passes; the first client whose input takes the branch would fail mid-turn."""
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.pack(prompt="Hi.{% if premium %} Dear {{ customer }}.{% endif %}", variables={"premium": ""}))
    await reconciling.reconcile(PACK, context(cache, api))
    assert not [call for call in api.calls if call[0] == "create"]
    ready = next(c for c in api.statuses[("PromptPack", NS, "prompts")]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], "'customer' is not defined" in ready["message"]) == ("InvalidTemplate", True)


# --- providers and registries --------------------------------------------------------------


async def test_provider_credentials_found_or_not():
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.provider(type="claude", credentials={"secretRef": {"name": "anthropic", "key": "api-key"}}))
    ref = Ref("Provider", NS, "mock")
    with pytest.raises(kopf.TemporaryError):
        await reconciling.reconcile(ref, context(cache, api))
    status = api.statuses[("Provider", NS, "mock")]
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {"CredentialsFound": "CredentialsNotFound",
                                                                    "Ready": "CredentialsNotFound"}
    assert [e["reason"] for e in api.events] == ["CredentialsNotFound"]

    cache.put_secret(NS, "anthropic", "api-key")
    cache.put(with_status(manifests.provider(type="claude", credentials={"secretRef": {"name": "anthropic", "key": "api-key"}}), status))
    await reconciling.reconcile(ref, context(cache, api))
    status = api.statuses[("Provider", NS, "mock")]
    assert status["phase"] == "Ready"


async def test_tool_registry_status_lists_static_tools():
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.registry("tools", {"name": "lookup", "type": "http", "http": {"url": "https://x.example"}}))
    await reconciling.reconcile(Ref("ToolRegistry", NS, "tools"), context(cache, api))
    status = api.statuses[("ToolRegistry", NS, "tools")]
    assert (status["phase"], [t["name"] for t in status["discoveredTools"]]) == ("Ready", ["lookup"])


async def test_a_deleted_snapshot_of_the_served_version_is_published_again():
    cache, api = MemoryCache(), MemoryApi()
    prompt = PromptConfig(version="1.0.0", system_prompt="You are helpful.")
    body = published(cache, manifests.pack(), prompt)
    cache.snapshots.clear()
    cache.put(body)
    await reconciling.reconcile(PACK, context(cache, api))
    assert [call[:2] for call in api.writes() if call[0] == "create"] == [("create", "ConfigMap")]


# --- ToolRegistry discovery ---------------------------------------------------

REGISTRY = Ref("ToolRegistry", NS, "tools")
DOCUMENT = {
    "openapi": "3.0.3", "info": {"title": "Orders", "version": "1"}, "servers": [{"url": "https://orders.example"}],
    "paths": {"/orders/{id}": {"get": {"operationId": "getOrder", "summary": "One order.", "parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok"}}}}},
}
OPENAPI = {"name": "orders", "type": "openapi", "openapi": {"specURL": "https://orders.example/openapi.json",
           "headers": [{"name": "Authorization", "secretRef": {"name": "orders-api", "key": "token"}}]}}


def counting(discover):
    calls = []

    async def wrapped(spec, **kwargs):
        calls.append(kwargs)
        return await discover(spec, **kwargs)

    return wrapped, calls


def openapi_answer(seen: list):
    def answer(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=DOCUMENT)

    return answer


def registry_world(*handlers, egress: dict | None = None) -> tuple[MemoryCache, MemoryApi]:
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.registry("tools", *handlers, egress=egress))
    cache.put_secret(NS, "orders-api", "token")
    api.secrets[(NS, "orders-api")] = {"token": "Bearer s3cret"}
    return cache, api


async def test_openapi_operations_are_discovered_with_the_secret_header_and_rediscovered_on_schedule():
    """The document is read with the header from the Secret; the reconcile asks to run again at the interval."""
    cache, api = registry_world(OPENAPI)
    seen: list = []
    discover, calls = counting(offline_discover(openapi_answer(seen)))
    ctx = context(cache, api, discover=discover)
    assert await reconciling.reconcile(REGISTRY, ctx) == reconciling.DISCOVERY_INTERVAL_SECONDS
    status = api.statuses[("ToolRegistry", NS, "tools")]
    assert [(t["name"], t["handler"]) for t in status["discoveredTools"]] == [("getOrder", "orders")]
    assert (status["phase"], status["handlers"][0]["toolCount"], seen) == ("Ready", 1, ["Bearer s3cret"])
    assert calls[0]["run_commands"] is False


async def test_other_reconciles_reuse_the_discovery_until_an_input_changes():
    """Events (status writes, agents) reconcile a registry often; the servers are asked only when due."""
    cache, api = registry_world(OPENAPI)
    clock = {"t": 0.0}
    discover, calls = counting(offline_discover(openapi_answer([])))
    ctx = context(cache, api, discover=discover)
    ctx.monotonic = lambda: clock["t"]
    await reconciling.reconcile(REGISTRY, ctx)
    cache.put(with_status(manifests.registry("tools", OPENAPI), api.statuses[("ToolRegistry", NS, "tools")]))
    clock["t"] = 100.0
    assert await reconciling.reconcile(REGISTRY, ctx) == pytest.approx(reconciling.DISCOVERY_INTERVAL_SECONDS - 100)
    assert len(calls) == 1
    cache.put_secret(NS, "orders-api", "token", version="2")
    await reconciling.reconcile(REGISTRY, ctx)
    clock["t"] = 100.0 + reconciling.DISCOVERY_INTERVAL_SECONDS
    await reconciling.reconcile(REGISTRY, ctx)
    assert len(calls) == 3


# The test MCP server listens on loopback, which a ToolRegistry must allow explicitly.
LOOPBACK_ALLOWED = {"allowLoopback": True}


async def test_an_mcp_server_on_loopback_is_listed_and_its_outage_degrades_the_handler():
    """Against the real test MCP server: its tools are published; stopped, the handler turns False with an Event."""
    server = mcp_service().start()
    try:
        handler = {"name": "calc", "type": "mcp", "mcp": {"url": f"{server.url}/mcp", "tools": ["add", "shout"]}}
        cache, api = registry_world(handler, egress=LOOPBACK_ALLOWED)
        ctx = context(cache, api)
        assert await reconciling.reconcile(REGISTRY, ctx) == reconciling.DISCOVERY_INTERVAL_SECONDS
        status = api.statuses[("ToolRegistry", NS, "tools")]
        assert [t["name"] for t in status["discoveredTools"]] == ["add", "shout"]
        assert status["handlers"][0]["toolsHash"]
    finally:
        server.stop()
    cache.put(with_status(manifests.registry("tools", handler, egress=LOOPBACK_ALLOWED), status))
    ctx.discoveries.clear()
    assert await reconciling.reconcile(REGISTRY, ctx) == reconciling.DISCOVERY_RETRY_SECONDS
    down = api.statuses[("ToolRegistry", NS, "tools")]
    condition = down["handlers"][0]["conditions"][0]
    assert (down["phase"], condition["status"]) == ("Failed", "False")
    assert [t["name"] for t in down["discoveredTools"]] == ["add", "shout"]
    assert down["handlers"][0]["toolsHash"] == status["handlers"][0]["toolsHash"]
    assert [(e["type"], e["reason"]) for e in api.events] == [("Warning", condition["reason"])]
    assert "handler 'calc'" in api.events[0]["message"]


async def test_a_server_the_egress_policy_denies_is_reported_and_never_contacted():
    """The operator discovers under the registry's egress policy: loopback is denied unless the registry allows it."""
    server = mcp_service().start()
    try:
        handler = {"name": "calc", "type": "mcp", "mcp": {"url": f"{server.url}/mcp"}}
        cache, api = registry_world(handler)
        await reconciling.reconcile(REGISTRY, context(cache, api))
    finally:
        server.stop()
    status = api.statuses[("ToolRegistry", NS, "tools")]
    condition = status["handlers"][0]["conditions"][0]
    assert (status["phase"], condition["status"], condition["reason"]) == ("Failed", "False", "EgressDenied")
    assert "egress policy" in condition["message"] and "allowLoopback" in condition["message"]


async def test_stdio_servers_are_not_run_by_the_operator():
    handler = {"name": "local", "type": "mcp", "mcp": {"transport": "stdio", "command": "kb-server"}}
    cache, api = registry_world(handler)
    await reconciling.reconcile(REGISTRY, context(cache, api))
    status = api.statuses[("ToolRegistry", NS, "tools")]
    assert (status["phase"], status["handlers"][0]["conditions"][0]["reason"]) == ("Ready", "DiscoveredByRuntime")


async def test_a_change_in_the_discovered_tools_changes_the_agents_config_hash():
    """The runtime lists discovered tools at start-up: new tools reach an agent only through new pods."""
    cache, api, agent = ready_world(toolRegistryRef={"name": "tools"})
    registry = manifests.registry("tools", OPENAPI)
    cache.put_secret(NS, "orders-api", "token")

    async def hash_with(tools_hash):
        handlers = [{"name": "orders", "toolCount": 1, "toolsHash": tools_hash}] if tools_hash else []
        cache.put(with_status(registry, {"observedGeneration": 1, "handlers": handlers}))
        cache.put(with_status(agent, api.statuses.get(("AgentRuntime", NS, "agent"))))
        await reconciling.reconcile(AGENT, context(cache, api))
        return api.statuses[("AgentRuntime", NS, "agent")]["configHash"]

    first = await hash_with("aaaa")
    assert await hash_with("aaaa") == first
    assert await hash_with("bbbb") != first


async def test_the_collector_its_headers_secret_and_sampling_roll_the_agent():
    """The OTEL_* variables are on the pod template; a change of the collector or sampling, or a new
    version of the headers Secret, gives a new config hash."""
    cache, api, _ = ready_world()
    cache.put_secret(NS, "otlp", "headers", version="1")
    headers = SecretKeySelector(name="otlp", key="headers")

    async def hash_with(tracing):
        await reconciling.reconcile(AGENT, context(cache, api, tracing=tracing))
        deployment = api.store[("Deployment", NS, "agent")]
        return deployment["spec"]["template"]["metadata"]["annotations"][labels.CONFIG_HASH], deployment

    plain, deployment = await hash_with(None)
    assert not any(item["name"].startswith("OTEL_") for c in deployment["spec"]["template"]["spec"]["containers"]
                   for item in c.get("env", []))
    traced, deployment = await hash_with(builders.TracingDefaults(endpoint="http://c:4317", headers=headers))
    runtime = deployment["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "OTEL_EXPORTER_OTLP_HEADERS",
            "valueFrom": {"secretKeyRef": {"name": "otlp", "key": "headers"}}} in runtime["env"]
    sampled, _ = await hash_with(builders.TracingDefaults(endpoint="http://c:4317", headers=headers,
                                                          sampling_ratio=0.1))
    cache.put_secret(NS, "otlp", "headers", version="2")
    rotated, _ = await hash_with(builders.TracingDefaults(endpoint="http://c:4317", headers=headers))
    assert len({plain, traced, sampled, rotated}) == 4


async def test_a_missing_headers_secret_holds_the_rollout_with_tracing_secret_not_found():
    """The installation's headers Secret must exist in the agent's namespace; until it does, the agent
    says so instead of rolling pods that could not start."""
    cache, api, _ = ready_world()
    tracing = builders.TracingDefaults(endpoint="http://c:4317", headers=SecretKeySelector(name="otlp", key="headers"))
    with pytest.raises(kopf.TemporaryError, match="otlp"):
        await reconciling.reconcile(AGENT, context(cache, api, tracing=tracing))
    assert ("Deployment", NS, "agent") not in api.store
    ready = next(c for c in api.statuses[("AgentRuntime", NS, "agent")]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "TracingSecretNotFound")
    cache.put_secret(NS, "otlp", "headers")
    await reconciling.reconcile(AGENT, context(cache, api, tracing=tracing))
    assert ("Deployment", NS, "agent") in api.store
