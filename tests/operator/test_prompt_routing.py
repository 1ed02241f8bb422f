"""Canary weights, promotion and rollback reach the pods through their config, not a restart."""

from __future__ import annotations

import copy
import json

from omnia.config import AgentConfig, PromptConfig, PromptRollout
from omnia.operator import hashing, labels, reconciling
from omnia.operator.summaries import DeploymentSummary
from tests.operator import manifests
from tests.operator.fakes import MemoryApi, MemoryCache, with_status
from tests.operator.test_reconciling import AGENT, NS, context

V1 = PromptConfig(version="1.0.0", system_prompt="You are helpful.")
V2 = PromptConfig(version="2.0.0", system_prompt="You are very helpful.")
V3 = PromptConfig(version="3.0.0", system_prompt="You are terse.")


def world() -> tuple[MemoryCache, MemoryApi, dict]:
    cache, api = MemoryCache(), MemoryApi()
    cache.put(manifests.agent())
    cache.put(manifests.provider())
    pack = manifests.pack(rollout={"strategy": "canary", "steps": [{"weight": 20}, {"weight": 50}]})
    for prompt in (V1, V2, V3):
        cache.snapshots[(NS, "prompts", prompt.version, hashing.content_hash(prompt))] = prompt
    return cache, api, pack


def rollout_state(cache: MemoryCache, pack: dict, *, stable: PromptConfig, canary: PromptConfig | None = None,
                  weight: int = 0, retained: tuple[PromptConfig, ...] = ()) -> None:
    """The pack as the operator leaves it at a point of its rollout."""
    history = [{"version": p.version, "contentHash": hashing.content_hash(p), "createdAt": "2026-01-01T00:00:00Z"}
               for p in (V1, V2, V3)]
    status = {"stableVersion": stable.version, "history": history}
    if canary is not None:
        status |= {"canaryVersion": canary.version, "canaryWeight": weight, "canaryStep": 0}
    state = json.dumps({"retained": [p.version for p in retained]})
    cache.put(with_status(pack, status, {labels.ROLLOUT_STATE: state}))


async def reconcile(cache: MemoryCache, api: MemoryApi) -> tuple[dict, AgentConfig]:
    """Reconcile the agent; the Deployment's pod template and the config it mounts."""
    await reconciling.reconcile(AGENT, context(cache, api))
    deployment = api.store[("Deployment", NS, "agent")]
    cache.deployments[(NS, "agent")] = DeploymentSummary.from_body(deployment)
    config = AgentConfig.from_json(api.store[("ConfigMap", NS, "agent-config")]["data"]["agent.json"])
    return copy.deepcopy(deployment["spec"]["template"]), config


def test_a_weight_change_leaves_the_config_hash_unchanged():
    at_20 = AgentConfig(name="a", prompts=PromptRollout(stable=V1, canary=V2, canary_weight=20))
    at_50 = at_20.model_copy(update={"prompts": at_20.prompts.model_copy(update={"canary_weight": 50})})
    promoted = at_20.model_copy(update={"prompts": PromptRollout(stable=V2, retained=[V1])})
    edited = at_20.model_copy(update={"prompts": PromptRollout(
        stable=V1, canary=V2.model_copy(update={"system_prompt": "Changed."}), canary_weight=20)})

    def config_hash(config: AgentConfig) -> str:
        return hashing.config_hash(config, secret_versions={}, images=["omnia:test"])

    assert config_hash(at_50) == config_hash(at_20)
    assert config_hash(promoted) == config_hash(at_20)
    assert config_hash(edited) != config_hash(at_20)


def test_pods_keep_the_versions_they_hold_while_the_rollout_names_no_other():
    held = {"1.0.0": "a", "2.0.0": "b"}
    assert hashing.held_prompts({"1.0.0": "a"}, held) == held
    assert hashing.held_prompts({"1.0.0": "a", "3.0.0": "c"}, held) == {"1.0.0": "a", "3.0.0": "c"}
    assert hashing.held_prompts({"1.0.0": "changed"}, held) == {"1.0.0": "changed"}
    assert hashing.held_prompts({"1.0.0": "a"}, None) == {"1.0.0": "a"}


async def test_weight_steps_promotion_and_rollback_change_the_config_and_not_the_pod_template():
    cache, api, pack = world()
    rollout_state(cache, pack, stable=V1, canary=V2, weight=20)
    template, config = await reconcile(cache, api)
    assert (config.prompts.canary.version, config.prompts.canary_weight) == ("2.0.0", 20)
    held = json.loads(template["metadata"]["annotations"][labels.PROMPT_VERSIONS])
    assert sorted(held) == ["1.0.0", "2.0.0"]

    rollout_state(cache, pack, stable=V1, canary=V2, weight=50)
    stepped, config = await reconcile(cache, api)
    assert config.prompts.canary_weight == 50
    assert stepped == template

    rollout_state(cache, pack, stable=V2, retained=(V1,))
    promoted, config = await reconcile(cache, api)
    assert (config.prompts.stable.version, config.prompts.canary) == ("2.0.0", None)
    assert [p.version for p in config.prompts.retained] == ["1.0.0"]
    assert promoted == template


async def test_a_rollback_keeps_the_pods_and_a_new_version_rolls_them():
    cache, api, pack = world()
    rollout_state(cache, pack, stable=V1, canary=V2, weight=20)
    template, _ = await reconcile(cache, api)

    rollout_state(cache, pack, stable=V1)
    rolled_back, config = await reconcile(cache, api)
    assert (config.prompts.stable.version, config.prompts.canary) == ("1.0.0", None)
    assert rolled_back == template

    rollout_state(cache, pack, stable=V1, canary=V3, weight=20)
    rolled, config = await reconcile(cache, api)
    assert config.prompts.canary.version == "3.0.0"
    assert rolled["metadata"]["annotations"][labels.CONFIG_HASH] != template["metadata"]["annotations"][labels.CONFIG_HASH]
    # New pods hold exactly what the rollout names, not the rolled-back candidate.
    assert sorted(json.loads(rolled["metadata"]["annotations"][labels.PROMPT_VERSIONS])) == ["1.0.0", "3.0.0"]


async def test_a_pod_template_without_a_readable_prompt_versions_annotation_gets_the_versions_named():
    """From before the annotation existed, or edited by hand: the operator cannot know what the pods hold."""
    cache, api, pack = world()
    rollout_state(cache, pack, stable=V1, canary=V2, weight=20)
    template, _ = await reconcile(cache, api)
    body = copy.deepcopy(api.store[("Deployment", NS, "agent")])
    body["spec"]["template"]["metadata"]["annotations"][labels.PROMPT_VERSIONS] = "not json"
    cache.deployments[(NS, "agent")] = DeploymentSummary.from_body(body)
    assert cache.deployments[(NS, "agent")].prompt_versions is None

    rollout_state(cache, pack, stable=V1)
    await reconciling.reconcile(AGENT, context(cache, api))
    rolled = api.store[("Deployment", NS, "agent")]["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(rolled[labels.PROMPT_VERSIONS]) == hashing.prompt_versions(PromptRollout(stable=V1))
    assert rolled[labels.CONFIG_HASH] != template["metadata"]["annotations"][labels.CONFIG_HASH]
