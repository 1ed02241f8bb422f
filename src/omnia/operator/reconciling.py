"""The four reconcilers: fetch from the caches, call the builders, apply, write status.

Each reconciler is level-based: it reads the current state of its object and
of everything the object references from the caches, computes the whole
desired state with the pure functions of ``builders``, ``promptpacks``,
``toolregistries`` and ``status``, and makes the cluster match. Nothing is
carried from one reconcile to the next except memories that only save work —
what was last applied, what was last written, and each ToolRegistry's last
discovery — so the operator can be killed at any point and a restart
converges to the same objects (after discovering the tools once more).

Failures follow one rule: a missing reference or a bad Secret is reported
in the status (condition with reason and message) and as an Event, what
already runs keeps running, and the reconcile is retried with backoff
(``kopf.TemporaryError``) — and at once when the missing object appears. An
invalid spec is reported the same way and waits for the next edit
(``kopf.PermanentError``). Nothing here ever deletes an agent's workload
because something it references went away.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf
from prometheus_client import CollectorRegistry

from omnia.agent.prompts import PromptError, PromptRenderer, check_sources
from omnia.api.v1alpha1 import API_VERSION, AgentRuntime, PromptVersion, Provider, ToolRegistry
from omnia.config import PromptConfig, PromptRollout
from omnia.operator import (
    builders,
    hashing,
    labels,
    metering,
    metrics,
    podhealth,
    promptpacks,
    queueing,
    references,
    routing,
    sessionstores,
    standings,
    status,
    toolregistries,
)
from omnia.operator.applying import Conflict, KubeApi, NotFound
from omnia.operator.promptpacks import VersionRef
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from omnia.operator.status import READY, Check
from omnia.operator.summaries import ConfigMapSummary, DeploymentSummary, Parsed, SecretSummary
from omnia import tools
from omnia.rendering import RenderError, prompt_config, render_agent_config, tool_configs
from omnia.tools.credentials import CredentialError, handler_secret_envs

log = logging.getLogger(__name__)

CATCH_UP_SECONDS = 5.0
"""How long a reconcile waits for the caches to show the operator's own last write."""

CATCH_UP_POLL = 1.0
"""When to look again meanwhile; the write's own watch event usually comes first and reconciles at once."""

DISCOVERY_INTERVAL_SECONDS = 300.0
"""How often a ToolRegistry's tools are discovered again when nothing it depends on changed."""

DISCOVERY_RETRY_SECONDS = 60.0
"""How soon a registry with a failed handler is discovered again (at most the interval)."""

Discover = Callable[..., Awaitable[tools.Discovery]]
"""``omnia.tools.discover``'s signature: (spec, *, secrets, config_maps, run_commands) → Discovery."""


@dataclass(frozen=True)
class Remembered:
    """A registry's last discovery: for which inputs, and when."""

    inputs: str
    at: float
    discovery: tools.Discovery


class Cache(Protocol):
    """What the reconcilers read: the operator's caches of the watched objects."""

    def agent(self, namespace: str, name: str) -> Parsed | None: ...

    def prompt_pack(self, namespace: str, name: str) -> Parsed | None: ...

    def provider(self, namespace: str, name: str) -> Parsed | None: ...

    def tool_registry(self, namespace: str, name: str) -> Parsed | None: ...

    def secret(self, namespace: str, name: str) -> SecretSummary | None: ...

    def config_map(self, namespace: str, name: str) -> ConfigMapSummary | None: ...

    def snapshot(self, namespace: str, pack: str, ref: VersionRef) -> PromptConfig | None: ...

    def deployment(self, namespace: str, name: str) -> DeploymentSummary | None: ...

    def pods(self, namespace: str, agent: str) -> list[podhealth.PodSummary]: ...

    def activator_slice(self, namespace: str, agent: str) -> routing.SliceSummary | None: ...

    def activator_addresses(self) -> list[str] | None: ...

    def referrers(self, ref: Ref) -> set[Ref]: ...


@dataclass
class Context:
    """What every reconcile gets: the caches, the API, the defaults, the memories, and the metrics."""

    cache: Cache
    api: KubeApi
    defaults: builders.Defaults
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)
    monotonic: Callable[[], float] = time.monotonic
    applied: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    """(apiVersion, kind, namespace, name) → digest of the manifest last applied."""
    written: dict[Ref, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    """Ref → (when, what) the operator last wrote to the object's status and annotations."""
    discover: Discover = tools.discover
    discovery_interval: float = DISCOVERY_INTERVAL_SECONDS
    discoveries: dict[Ref, Remembered] = field(default_factory=dict)
    """Ref → the ToolRegistry's last discovery, so that its other reconciles do not ask the servers again."""
    metrics: metrics.Metrics = field(default_factory=lambda: metrics.Metrics(CollectorRegistry()))
    meter: metering.Meter | None = None
    """The budget counters' last readings; None shows no budgets (and keeps those the status has)."""

    def now(self) -> datetime.datetime:
        return self.clock().replace(microsecond=0)

    def forget_applied(self) -> None:
        """Apply everything again at the next reconciles (the periodic resync repairs drift)."""
        self.applied.clear()


async def reconcile(ref: Ref, ctx: Context) -> float | None:
    """Reconcile one object; returns seconds until it wants to run again, or None."""
    reconciler = {
        references.AGENT_RUNTIME: reconcile_agent,
        references.PROMPT_PACK: reconcile_prompt_pack,
        references.PROVIDER: reconcile_provider,
        references.TOOL_REGISTRY: reconcile_tool_registry,
    }[ref.kind]
    return await reconciler(ref, ctx)


# --- AgentRuntime -----------------------------------------------------------


@dataclass
class Resolution:
    """An agent's references, looked up: the three reference checks and what they found."""

    checks: list[Check]
    problem: Check | None = None
    provider: Provider | None = None
    registry: ToolRegistry | None = None
    rollout: PromptRollout | None = None
    store: DefaultStore | None = None
    """The installation's session store, when the agent names none of its own."""

    @property
    def blocked(self) -> bool:
        return self.problem is not None or not all(check.ok for check in self.checks)


def resolve_agent(
    agent: AgentRuntime,
    cache: Cache,
    *,
    session_stores: Mapping[str, DefaultStore] | None = None,
    tracing: builders.Tracing | None = None,
) -> Resolution:
    namespace = agent.metadata.namespace or ""
    provider_check, provider = _resolve_provider(agent, namespace, cache)
    pack_check, rollout = _resolve_prompt_pack(agent, namespace, cache)
    tools_check, registry = _resolve_tools(agent, namespace, cache)
    problem = None
    for reason, ref in (
        ("SessionSecretNotFound", agent.spec.session.secret_ref),
        ("AuthSecretNotFound", agent.spec.facade.auth.secret_ref),
        # Pods could not start without it (CreateContainerConfigError): say so before rolling them.
        ("TracingSecretNotFound", tracing.headers if tracing is not None else None),
    ):
        if ref is not None:
            message = _secret_problem(cache.secret(namespace, ref.name), ref.name, ref.key)
            if message is not None and problem is None:
                problem = Check.failed(READY, reason, message)
    store = None
    if sessionstores.uses_default(agent):
        store, store_problem = _resolve_default_store(agent, namespace, cache, session_stores or {})
        problem = problem or store_problem
    return Resolution(
        checks=[provider_check, pack_check, tools_check],
        problem=problem,
        provider=provider,
        registry=registry,
        rollout=rollout,
        store=store,
    )


def _resolve_default_store(
    agent: AgentRuntime, namespace: str, cache: Cache, stores: Mapping[str, DefaultStore]
) -> tuple[DefaultStore | None, Check | None]:
    """The default store of the agent's session type, or why the agent cannot use it.

    A Secret of someone else's under the mirror's name is never overwritten.
    """
    session_type = agent.spec.session.type
    store = stores.get(session_type)
    if store is None:
        message = sessionstores.not_configured_message(session_type)
        return None, Check.failed(READY, sessionstores.NOT_CONFIGURED, message)
    message = _secret_problem(cache.secret(store.namespace, store.name), f"{store.namespace}/{store.name}", store.key)
    if message is not None:
        message = f"the default {session_type} session store: {message}"
        return store, Check.failed(READY, "SessionSecretNotFound", message)
    mirror_name = sessionstores.mirror_name(agent.metadata.name)
    mirror = cache.secret(namespace, mirror_name)
    if mirror is not None and mirror.controller != agent.metadata.uid:
        return store, Check.failed(
            READY, "SessionSecretConflict",
            f"Secret {mirror_name!r} is not this agent's, and the operator keeps the default {session_type} "
            "store's URL there: rename or delete that Secret, or set spec.session.secretRef",
        )
    return store, None


def _resolve_provider(agent: AgentRuntime, namespace: str, cache: Cache) -> tuple[Check, Provider | None]:
    ref = agent.spec.provider_ref
    if ref is None:
        return Check.passed(status.PROVIDER_READY, "EmbeddedModel", "no providerRef: the embedded local model"), None
    parsed = cache.provider(namespace, ref.name)
    if parsed is None:
        return Check.failed(status.PROVIDER_READY, "ProviderNotFound", f"Provider {ref.name!r} not found"), None
    if parsed.resource is None:
        return Check.failed(status.PROVIDER_READY, "ProviderInvalid", f"Provider {ref.name!r}: {parsed.error}"), None
    provider: Provider = parsed.resource
    credentials = provider.spec.credentials
    if credentials is not None:
        secret = credentials.secret_ref
        message = _secret_problem(cache.secret(namespace, secret.name), secret.name, secret.key)
        if message is not None:
            return Check.failed(
                status.PROVIDER_READY, "CredentialsNotFound", f"Provider {ref.name!r}: {message}"
            ), None
    model = provider.spec.model or "its default model"
    return Check.passed(status.PROVIDER_READY, "ProviderReady", f"{provider.spec.type}, {model}"), provider


def _resolve_prompt_pack(agent: AgentRuntime, namespace: str, cache: Cache) -> tuple[Check, PromptRollout | None]:
    name = agent.spec.prompt_pack_ref.name
    parsed = cache.prompt_pack(namespace, name)
    if parsed is None:
        return Check.failed(status.PROMPT_PACK_READY, "PromptPackNotFound", f"PromptPack {name!r} not found"), None
    if parsed.resource is None:
        return Check.failed(status.PROMPT_PACK_READY, "PromptPackInvalid", f"PromptPack {name!r}: {parsed.error}"), None
    pack_status = parsed.resource.status
    state = promptpacks.state_from(pack_status, parsed.annotations.get(labels.ROLLOUT_STATE))
    try:
        rollout = promptpacks.prompt_rollout(
            state,
            history=pack_status.history,
            snapshot=lambda ref: cache.snapshot(namespace, name, ref),
        )
    except promptpacks.SnapshotMissing as exc:
        ready = next((c for c in pack_status.conditions if c.type == READY), None)
        if ready is not None and ready.status == "False":
            return Check.failed(status.PROMPT_PACK_READY, "PromptPackNotReady", f"PromptPack {name!r}: {ready.message}"), None
        # Not published yet: the pack's own reconcile is on it, and its
        # snapshot's event will reconcile this agent again.
        return Check.failed(status.PROMPT_PACK_READY, status.PROMPT_PACK_PENDING, f"PromptPack {name!r}: {exc}"), None
    served = rollout.stable.version + (
        f", canary {rollout.canary.version} at {rollout.canary_weight}%" if rollout.canary else ""
    )
    return Check.passed(status.PROMPT_PACK_READY, "PromptPackReady", f"serving {served}"), rollout


def _resolve_tools(agent: AgentRuntime, namespace: str, cache: Cache) -> tuple[Check, ToolRegistry | None]:
    ref = agent.spec.tool_registry_ref
    if ref is None:
        return Check.passed(status.TOOLS_READY, "NoToolRegistry", "no toolRegistryRef: no server-side tools"), None
    parsed = cache.tool_registry(namespace, ref.name)
    if parsed is None:
        return Check.failed(status.TOOLS_READY, "ToolRegistryNotFound", f"ToolRegistry {ref.name!r} not found"), None
    if parsed.resource is None:
        return Check.failed(
            status.TOOLS_READY, "ToolRegistryInvalid", f"ToolRegistry {ref.name!r}: {parsed.error}"
        ), None
    registry: ToolRegistry = parsed.resource
    verdicts = _validate_registry(registry, namespace, cache)
    problem = toolregistries.first_problem(verdicts)
    if problem is not None:
        return Check.failed(status.TOOLS_READY, problem.reason, f"ToolRegistry {ref.name!r}: {problem.message}"), None
    return Check.passed(status.TOOLS_READY, "ToolsReady", f"{len(verdicts)} handlers"), registry


def _secret_problem(secret: SecretSummary | None, name: str, key: str) -> str | None:
    if secret is None:
        return f"Secret {name!r} not found"
    if key not in secret.keys:
        return f"Secret {name!r} has no key {key!r}"
    return None


def _validate_registry(registry: ToolRegistry, namespace: str, cache: Cache) -> list[toolregistries.HandlerVerdict]:
    def keys(summary: SecretSummary | ConfigMapSummary | None) -> frozenset[str] | None:
        return None if summary is None else summary.keys

    return toolregistries.validate(
        registry,
        secret_keys=lambda name: keys(cache.secret(namespace, name)),
        config_map_keys=lambda name: keys(cache.config_map(namespace, name)),
    )


async def reconcile_agent(ref: Ref, ctx: Context) -> float | None:
    parsed = ctx.cache.agent(ref.namespace, ref.name)
    if not _present(ref, parsed, ctx):
        forget_agent(ref, ctx)
        return None
    now = ctx.now()
    deployment = ctx.cache.deployment(ref.namespace, ref.name)
    selector = labels.selector(ref.name)

    error = parsed.error if parsed.resource is None else None
    if error is None:
        try:
            builders.check_name(ref.name)
        except builders.BuildError as exc:
            error = str(exc)
    if error is not None or parsed.resource is None:
        problem = Check.failed(READY, status.INVALID_SPEC, error or "invalid spec")
        await _write_agent_status(parsed, ctx, problem=problem, references=[], invalid=True,
                                  deployment=deployment, config_hash=None, versions=[], endpoint=None,
                                  selector=selector, now=now)
        raise kopf.PermanentError(f"{ref}: {error}")
    agent: AgentRuntime = parsed.resource
    await _route(agent, deployment, ctx)
    traces = builders.tracing(agent, defaults=ctx.defaults.tracing)
    resolution = resolve_agent(agent, ctx.cache, session_stores=ctx.defaults.session_stores, tracing=traces)
    endpoint = builders.endpoint(agent)
    if not resolution.blocked:
        try:
            documents = await _openapi_documents(resolution.registry, ctx)
            tools = tool_configs(resolution.registry, config_maps=documents)
            secrets = builders.secret_env(agent, provider=resolution.provider, registry=resolution.registry,
                                          tracing=traces)
        except (RenderError, CredentialError) as exc:
            invalid_tools = Check.failed(status.TOOLS_READY, "ToolRegistryInvalid", str(exc))
            resolution.checks = [invalid_tools if c.type == status.TOOLS_READY else c for c in resolution.checks]
    if resolution.blocked:
        await _write_agent_status(parsed, ctx, problem=resolution.problem, references=resolution.checks,
                                  invalid=False, deployment=deployment, config_hash=None, versions=[],
                                  endpoint=endpoint, selector=selector, now=now)
        failure = resolution.problem or next(c for c in resolution.checks if not c.ok)
        raise kopf.TemporaryError(f"{ref}: {failure.message}", delay=None)

    assert resolution.rollout is not None
    config = render_agent_config(agent, prompts=resolution.rollout, provider=resolution.provider, tools=tools)
    versions = {}
    for item in secrets:
        summary = ctx.cache.secret(ref.namespace, item.secret)
        versions[item.secret] = summary.resource_version if summary else None
    if resolution.store is not None:
        # The mirror's own version would only change after this reconcile applied it.
        versions[sessionstores.mirror_name(agent.metadata.name)] = sessionstores.stamp(
            resolution.store, _source_version(resolution.store, ctx))
    images = builders.pod_images(agent, default=ctx.defaults.image)
    discovered = toolregistries.tools_digest(resolution.registry.status) if resolution.registry else None

    def hash_with(held: dict[str, str]) -> str:
        return hashing.config_hash(config, secret_versions=versions, images=[images.facade, images.runtime],
                                   discovered_tools=discovered, tracing=traces.to_dict() if traces else None,
                                   prompts_held=held)

    # A rollout naming only prompt versions the pods hold keeps them (the
    # runtime applies it from the mounted config); anything else the pods
    # depend on changing rolls them with exactly the versions named.
    held = desired_prompts = hashing.prompt_versions(config.prompts)
    if deployment is not None and deployment.prompt_versions is not None:
        kept = hashing.held_prompts(desired_prompts, deployment.prompt_versions)
        if kept != desired_prompts and hash_with(kept) == deployment.config_hash:
            held = kept
    config_hash = hash_with(held)
    prompt_versions = [config.prompts.stable.version] + ([config.prompts.canary.version] if config.prompts.canary else [])
    try:
        desired = builders.build_agent_objects(
            agent,
            config=config,
            config_hash=config_hash,
            secrets=secrets,
            registry=resolution.registry,
            defaults=ctx.defaults,
            replicas=builders.desired_replicas(agent, deployment_exists=deployment is not None),
            prompt_versions=held,
        )
    except builders.BuildError as exc:
        problem = Check.failed(READY, status.INVALID_SPEC, str(exc))
        await _write_agent_status(parsed, ctx, problem=problem, references=resolution.checks, invalid=True,
                                  deployment=deployment, config_hash=None, versions=[], endpoint=endpoint,
                                  selector=selector, now=now)
        raise kopf.PermanentError(f"{ref}: {exc}") from None

    if resolution.store is not None:
        problem = await _mirror_session_store(agent, resolution.store, ctx)
        if problem is not None:
            await _write_agent_status(parsed, ctx, problem=problem, references=resolution.checks, invalid=False,
                                      deployment=deployment, config_hash=None, versions=[], endpoint=endpoint,
                                      selector=selector, now=now)
            raise kopf.TemporaryError(f"{ref}: {problem.message}", delay=None)
    if builders.autoscaled(agent) and deployment is not None and deployment.replicas_applied_by_operator:
        await _hand_replicas_to_autoscaler(agent, deployment, ctx)
    problem = None
    for batch in _apply_batches(desired.objects):
        force = deployment is None
        results = await _together(*(_apply(obj, ctx, force=force and obj["kind"] == "Deployment") for obj in batch),
                                  tolerate=NotFound)
        for obj, applied in zip(batch, results):
            if isinstance(applied, NotFound):
                if obj["kind"] != "ScaledObject":
                    raise applied
                message = f"cannot create the KEDA ScaledObject: {applied.message}"
                problem = Check.failed(READY, "KedaNotInstalled", message)
            elif applied is not None and obj["kind"] == "Deployment":
                deployment = DeploymentSummary.from_body(applied)
    await _together(*(_prune(agent, kind, ctx) for kind in desired.absent),
                    *([_prune_session_store(agent, ctx)] if resolution.store is None else []))

    recheck_after = await _write_agent_status(parsed, ctx, problem=problem, references=resolution.checks,
                                              invalid=False, deployment=deployment, config_hash=config_hash,
                                              versions=prompt_versions, endpoint=endpoint, selector=selector, now=now)
    if problem is not None:
        raise kopf.TemporaryError(f"{ref}: {problem.message}", delay=None)
    return recheck_after


def _apply_batches(objects: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The agent's objects in the batches they are applied in: what the pods use, the Deployment, the rest.

    Objects of one batch are applied at once (one request each, concurrently);
    the Deployment waits for the ConfigMap, ServiceAccount and Service its pods
    use, and what refers to the Deployment (autoscalers, the budget of
    disruptions) waits for it.
    """
    at = next((index for index, obj in enumerate(objects) if obj["kind"] == "Deployment"), len(objects))
    return [batch for batch in (list(objects[:at]), list(objects[at:at + 1]), list(objects[at + 1:])) if batch]


async def _together(*calls: Awaitable[Any], tolerate: type[Exception] | None = None) -> list[Any]:
    """Await ``calls`` concurrently; their results in order.

    Every call runs to its end even when another fails, so no request is
    left running after the reconcile; then the first failure is raised,
    unless it is a ``tolerate`` exception, which is returned in its place.
    Cancelling this cancels the calls.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not (tolerate is not None and isinstance(result, tolerate)):
            raise result
    return results


def _source_version(store: DefaultStore, ctx: Context) -> str | None:
    source = ctx.cache.secret(store.namespace, store.name)
    return source.resource_version if source is not None else None


async def _mirror_session_store(agent: AgentRuntime, store: DefaultStore, ctx: Context) -> Check | None:
    """Copy the default store's URL beside the agent, unless the copy there is of the source's current version.

    The value is read only when the copy is missing or stale, goes straight
    into the applied Secret, and is never logged. Returns the problem when
    the source lost its key since the cache said otherwise.
    """
    namespace = agent.metadata.namespace or ""
    version = _source_version(store, ctx)
    mirror = ctx.cache.secret(namespace, sessionstores.mirror_name(agent.metadata.name))
    if (
        mirror is not None
        and sessionstores.MIRROR_KEY in mirror.keys
        and mirror.annotations.get(labels.SESSION_STORE_SOURCE) == str(store)
        and mirror.annotations.get(labels.SESSION_STORE_VERSION) == version
    ):
        return None
    data = await ctx.api.secret_data(namespace=store.namespace, name=store.name)
    value = (data or {}).get(store.key)
    if not value:
        message = _secret_problem(None if data is None else SecretSummary(version or "", frozenset(data)),
                                  f"{store.namespace}/{store.name}", store.key) or f"Secret key {store} is empty"
        return Check.failed(READY, "SessionSecretNotFound", f"the default {store.type} session store: {message}")
    secret = builders.build_session_store_secret(agent, store=store, source_version=version, value=value)
    await ctx.api.apply(secret)
    log.info("mirrored the default %s session store %s into Secret %s/%s", store.type, store, namespace,
             secret["metadata"]["name"])
    return None


async def _prune_session_store(agent: AgentRuntime, ctx: Context) -> None:
    """Delete the agent's mirror of a default store it no longer uses (it names its own Secret now, or memory)."""
    namespace, name = agent.metadata.namespace or "", sessionstores.mirror_name(agent.metadata.name)
    mirror = ctx.cache.secret(namespace, name)
    if mirror is not None and mirror.controller == agent.metadata.uid:
        await ctx.api.delete("v1", "Secret", namespace=namespace, name=name, uid=mirror.uid)
        log.info("deleted Secret %s/%s: the agent no longer uses the default session store", namespace, name)


async def _openapi_documents(registry: ToolRegistry | None, ctx: Context) -> dict[str, dict[str, str]]:
    """The ConfigMaps OpenAPI handlers read their documents from, name → data."""
    documents: dict[str, dict[str, str]] = {}
    for handler in registry.spec.handlers if registry is not None else ():
        ref = handler.openapi.config_map_ref if handler.openapi is not None else None
        if ref is not None and ref.name not in documents:
            config_map = await ctx.api.get("v1", "ConfigMap", namespace=registry.metadata.namespace, name=ref.name)
            documents[ref.name] = (config_map or {}).get("data") or {}
    return documents


async def _write_agent_status(
    parsed: Parsed,
    ctx: Context,
    *,
    problem: Check | None,
    references: list[Check],
    invalid: bool,
    deployment: DeploymentSummary | None,
    config_hash: str | None,
    versions: list[str],
    endpoint: str | None,
    selector: str,
    now: datetime.datetime,
) -> float | None:
    """Write the agent's status, its pods and budgets judged too; returns when time alone may change their verdict.

    Budgets are shown from the meter's last reading, with the limits of the
    spec (those of an invalid spec are unknown: the status keeps what it
    showed); an entry that reached a threshold since the status written
    before posts its Warning (``standings``). The meter then reads the
    agent's counters again, which reconciles it once more if they changed.
    """
    previous = parsed.status
    ref = Ref(parsed.kind, parsed.namespace, parsed.name)
    pods = podhealth.assess(ctx.cache.pods(parsed.namespace, parsed.name), now=now)
    limits = standings.limits(parsed.resource) if parsed.resource is not None else None
    shown = previous.budgets or []
    if limits is None or ctx.meter is None:
        budgets = shown
    else:
        budgets = standings.standings(limits, reading=ctx.meter.reading(ref), previous=shown)
    current = status.agent_status(
        previous,
        generation=parsed.generation,
        references=references,
        problem=problem,
        invalid=invalid,
        deployment=deployment,
        config_hash=config_hash,
        prompt_versions=versions,
        endpoint=endpoint,
        selector=selector,
        now=now,
        pods=pods.problem,
        budgets=budgets,
        budget=standings.exceeded(budgets),
    )
    await _write_status(parsed, previous, current, ctx,
                        handler_events=standings.crossings(shown, current.budgets or []))
    if ctx.meter is not None and limits:
        ctx.meter.soon(ref)
    return pods.recheck_after


async def _route(agent: AgentRuntime, deployment: DeploymentSummary | None, ctx: Context) -> None:
    """Lead the agent's Service to the activator while its Deployment has no Ready replica, else to its pods.

    Done before the references are resolved: it depends on none of them,
    and an agent at zero whose Provider just went away must still wake.
    While the activator's addresses are unknown (never listed), an existing
    slice is left as it is.
    """
    namespace, name = agent.metadata.namespace or "", routing.slice_name(agent.metadata.name)
    live = ctx.cache.activator_slice(namespace, agent.metadata.name)
    routed = routing.wanted(agent, activator=ctx.defaults.activator, deployment_exists=deployment is not None,
                            ready_replicas=deployment.ready_replicas if deployment is not None else 0)
    key = (routing.ENDPOINT_SLICE.api_version, routing.ENDPOINT_SLICE.kind, namespace, name)
    if routed:
        addresses = ctx.cache.activator_addresses()
        if addresses is not None:
            # Applied again while the cache does not show it: it was deleted, or this is its first apply.
            await _apply(routing.build_activator_slice(agent, addresses=addresses), ctx, force=live is None)
        return
    ctx.applied.pop(key, None)
    if live is not None and live.controller == agent.metadata.uid:
        await ctx.api.delete(*key[:2], namespace=namespace, name=name, uid=live.uid)
        log.info("deleted EndpointSlice %s/%s: %s", namespace, name,
                 "a pod is Ready" if builders.scales_to_zero(agent) and ctx.defaults.activator else
                 "the agent no longer scales to zero through the activator")


async def _hand_replicas_to_autoscaler(agent: AgentRuntime, deployment: DeploymentSummary, ctx: Context) -> None:
    """Give ``spec.replicas`` a second owner so the operator can stop applying it without a reset."""
    await ctx.api.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": agent.metadata.name, "namespace": agent.metadata.namespace},
            "spec": {"replicas": deployment.spec_replicas},
        },
        field_manager=labels.SCALE_FIELD_MANAGER,
    )


async def _apply(obj: Mapping[str, Any], ctx: Context, *, force: bool = False) -> dict[str, Any] | None:
    """Server-side apply ``obj`` unless the same manifest was applied already; returns the result."""
    metadata = obj["metadata"]
    key = (obj["apiVersion"], obj["kind"], metadata["namespace"], metadata["name"])
    digest = hashing.digest(obj)
    if not force and ctx.applied.get(key) == digest:
        return None
    result = await ctx.api.apply(obj)
    ctx.applied[key] = digest
    log.info("applied %s %s/%s", obj["kind"], metadata["namespace"], metadata["name"])
    return result


async def _prune(agent: AgentRuntime, kind: builders.ObjectKind, ctx: Context) -> None:
    """Delete an optional object the spec no longer asks for, if this agent owns it."""
    namespace, name = agent.metadata.namespace or "", agent.metadata.name
    key = (kind.api_version, kind.kind, namespace, name)
    if ctx.applied.get(key) == "absent":
        return
    try:
        live = await ctx.api.get(kind.api_version, kind.kind, namespace=namespace, name=name)
    except NotFound:
        live = None  # the kind itself is not installed (KEDA)
    if live is not None:
        owners = live.get("metadata", {}).get("ownerReferences") or []
        if any(owner.get("uid") == agent.metadata.uid for owner in owners):
            await ctx.api.delete(kind.api_version, kind.kind, namespace=namespace, name=name,
                                 uid=live["metadata"]["uid"])
            log.info("deleted %s %s/%s: the spec no longer asks for it", kind.kind, namespace, name)
    ctx.applied[key] = "absent"


def forget_agent(ref: Ref, ctx: Context) -> None:
    """Drop the memories of an agent: its objects are applied again at its next reconcile."""
    names = (ref.name, labels.config_map_name(ref.name), routing.slice_name(ref.name))
    for key in [key for key in ctx.applied if key[2] == ref.namespace and key[3] in names]:
        del ctx.applied[key]
    ctx.written.pop(ref, None)


# --- PromptPack -------------------------------------------------------------


async def reconcile_prompt_pack(ref: Ref, ctx: Context) -> float | None:
    parsed = ctx.cache.prompt_pack(ref.namespace, ref.name)
    if not _present(ref, parsed, ctx):
        return None
    now = ctx.now()
    previous = parsed.status
    consumers = sorted(r.name for r in ctx.cache.referrers(ref) if r.kind == references.AGENT_RUNTIME)
    state = promptpacks.state_from(previous, parsed.annotations.get(labels.ROLLOUT_STATE))
    history = list(previous.history)

    if parsed.resource is None:
        problem = Check.failed(READY, status.INVALID_SPEC, parsed.error or "invalid spec")
        current = status.prompt_pack_status(previous, state=state, history=history, consumers=consumers,
                                            problem=problem, generation=parsed.generation, now=now)
        await _write_status(parsed, previous, current, ctx)
        raise kopf.PermanentError(f"{ref}: {parsed.error}")
    pack = parsed.resource
    problem, prompt = await _prompt_content(pack, ctx)
    decision = None
    if prompt is not None:
        candidate = VersionRef(prompt.version, hashing.content_hash(prompt))
        decision = promptpacks.decide(state, candidate=candidate, history=history, rollout=pack.spec.rollout, now=now)
        if decision.publish is not None:
            await _publish_snapshot(pack, prompt, decision.publish, ctx)
            history.append(PromptVersion(version=candidate.version, content_hash=candidate.content_hash, created_at=now))
        elif candidate.version in (decision.state.stable, decision.state.canary) and \
                promptpacks.latest_snapshots(history).get(candidate.version) == candidate.content_hash:
            # A served snapshot deleted by hand comes back while its content is still the spec's.
            await _publish_snapshot(pack, prompt, candidate, ctx)
        state = decision.state
        if decision.mismatch is not None:
            problem = Check.failed(READY, "ContentMismatch", decision.mismatch)

    annotation = promptpacks.annotation(state)
    current = status.prompt_pack_status(previous, state=state, history=history, consumers=consumers,
                                        problem=problem, generation=parsed.generation, now=now)
    await _write_status(parsed, previous, current, ctx, annotations={labels.ROLLOUT_STATE: annotation})
    for transition in decision.transitions if decision else ():
        await ctx.api.post_event(regarding=parsed.regarding(), type="Warning" if transition.warning else "Normal",
                                 reason=transition.reason, message=transition.message)
    if problem is not None and problem.reason == "SourceNotFound":
        raise kopf.TemporaryError(f"{ref}: {problem.message}", delay=None)
    if decision is not None and decision.requeue_after is not None:
        return max(decision.requeue_after.total_seconds(), 0.1)
    return None


async def _prompt_content(pack, ctx: Context) -> tuple[Check | None, PromptConfig | None]:
    """The spec's prompt content, or why it cannot be served."""
    source_text = None
    source = pack.spec.source
    if source is not None:
        ref = source.config_map_ref
        config_map = await ctx.api.get("v1", "ConfigMap", namespace=pack.metadata.namespace, name=ref.name)
        source_text = ((config_map or {}).get("data") or {}).get(ref.key)
        if source_text is None:
            missing = "not found" if config_map is None else f"has no key {ref.key!r}"
            return Check.failed(READY, "SourceNotFound", f"spec.source.configMapRef: ConfigMap {ref.name!r} {missing}"), None
    try:
        prompt = prompt_config(pack.spec, source_text=source_text)
        check_sources(prompt)
        PromptRenderer(prompt).check()
    except RenderError as exc:
        return Check.failed(READY, "InvalidContent", f"version {pack.spec.version}: {exc}"), None
    except PromptError as exc:
        return Check.failed(READY, "InvalidTemplate", f"version {pack.spec.version} is not served: {exc}"), None
    return None, prompt


async def _publish_snapshot(pack, prompt: PromptConfig, ref: VersionRef, ctx: Context) -> None:
    if ctx.cache.snapshot(pack.metadata.namespace, pack.metadata.name, ref) is not None:
        return
    snapshot = builders.build_prompt_snapshot(pack, prompt=prompt, content_hash=ref.content_hash)
    try:
        await ctx.api.create(snapshot)
        log.info("published %s/%s version %s as %s", pack.metadata.namespace, pack.metadata.name,
                 ref.version, snapshot["metadata"]["name"])
    except Conflict:
        pass  # created by an earlier reconcile that did not live to write the status


# --- Provider and ToolRegistry ----------------------------------------------


async def reconcile_provider(ref: Ref, ctx: Context) -> float | None:
    parsed = ctx.cache.provider(ref.namespace, ref.name)
    if not _present(ref, parsed, ctx):
        return None
    now = ctx.now()
    previous = parsed.status
    if parsed.resource is None:
        problem = Check.failed(READY, status.INVALID_SPEC, parsed.error or "invalid spec")
        credentials = Check(status.CREDENTIALS_FOUND, "Unknown", status.INVALID_SPEC, "the spec is invalid")
        current = status.provider_status(previous, credentials=credentials, problem=problem,
                                         generation=parsed.generation, now=now)
        await _write_status(parsed, previous, current, ctx)
        raise kopf.PermanentError(f"{ref}: {parsed.error}")
    provider: Provider = parsed.resource
    if provider.spec.credentials is None:
        credentials = Check.passed(status.CREDENTIALS_FOUND, "NotRequired",
                                   f"providers of type {provider.spec.type} need no credentials")
    else:
        secret = provider.spec.credentials.secret_ref
        message = _secret_problem(ctx.cache.secret(ref.namespace, secret.name), secret.name, secret.key)
        credentials = (
            Check.failed(status.CREDENTIALS_FOUND, "CredentialsNotFound", f"spec.credentials.secretRef: {message}")
            if message
            else Check.passed(status.CREDENTIALS_FOUND, "SecretFound", f"Secret {secret.name!r} key {secret.key!r}")
        )
    current = status.provider_status(previous, credentials=credentials, problem=None,
                                     generation=parsed.generation, now=now)
    await _write_status(parsed, previous, current, ctx)
    if not credentials.ok:
        raise kopf.TemporaryError(f"{ref}: {credentials.message}", delay=None)
    return None


async def reconcile_tool_registry(ref: Ref, ctx: Context) -> float | None:
    """Validate, discover (at most every ``discovery_interval`` unless an input changed), write status.

    Discovery asks the tool servers, which may take up to its timeout; it
    runs in this worker, so a slow server delays only this registry.
    Returns when to discover again: the operator's queue is the timer.
    """
    parsed = ctx.cache.tool_registry(ref.namespace, ref.name)
    if not _present(ref, parsed, ctx):
        ctx.discoveries.pop(ref, None)
        return None
    previous = parsed.status
    if parsed.resource is None:
        now = ctx.now()
        problem = Check.failed(READY, status.INVALID_SPEC, parsed.error or "invalid spec")
        current = previous.model_copy(update={
            "phase": "Failed",
            "conditions": status.merge_conditions(previous.conditions, [problem], now=now, generation=parsed.generation),
            "observed_generation": parsed.generation,
        })
        await _write_status(parsed, previous, current, ctx)
        raise kopf.PermanentError(f"{ref}: {parsed.error}")
    registry: ToolRegistry = parsed.resource
    verdicts = _validate_registry(registry, ref.namespace, ctx.cache)
    discovery, discover_in = await _discovery(ref, registry, ctx)
    now = ctx.now()
    current = toolregistries.registry_status(previous, verdicts=verdicts, discovery=discovery,
                                             generation=parsed.generation, now=now)
    await _write_status(parsed, previous, current, ctx,
                        handler_events=toolregistries.handler_events(previous, current))
    if toolregistries.first_problem(verdicts) is not None:
        raise kopf.TemporaryError(f"{ref}: invalid handlers", delay=None)
    return discover_in


async def _discovery(ref: Ref, registry: ToolRegistry, ctx: Context) -> tuple[tools.Discovery, float]:
    """The registry's discovery, fresh or remembered, and the seconds until the next one is due.

    Discovered again when the spec or a Secret or ConfigMap it reads
    changed, or when the last discovery is ``discovery_interval`` old
    (``DISCOVERY_RETRY_SECONDS`` when a handler failed). stdio MCP servers
    are never run here: they are commands of the agent's image.
    """
    secret_names = sorted({env.secret for handler in registry.spec.handlers for env in handler_secret_envs(handler)})
    config_map_names = sorted({
        handler.openapi.config_map_ref.name for handler in registry.spec.handlers
        if handler.openapi is not None and handler.openapi.config_map_ref is not None
    })

    def version(summary: Any) -> str | None:
        return None if summary is None else summary.resource_version

    inputs = hashing.digest({
        "spec": registry.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "secrets": {name: version(ctx.cache.secret(ref.namespace, name)) for name in secret_names},
        "configMaps": {name: version(ctx.cache.config_map(ref.namespace, name)) for name in config_map_names},
    })
    remembered = ctx.discoveries.get(ref)
    if remembered is not None and remembered.inputs == inputs:
        due = _rediscover_after(remembered.discovery, ctx) - (ctx.monotonic() - remembered.at)
        if due > 0:
            return remembered.discovery, due
    secrets = {}
    for name in secret_names:
        if ctx.cache.secret(ref.namespace, name) is not None:
            data = await ctx.api.secret_data(namespace=ref.namespace, name=name)
            if data is not None:
                secrets[name] = data
    config_maps = await _openapi_documents(registry, ctx)
    discovery = await ctx.discover(registry.spec, secrets=secrets, config_maps=config_maps, run_commands=False)
    ctx.discoveries[ref] = Remembered(inputs=inputs, at=ctx.monotonic(), discovery=discovery)
    ctx.metrics.discovered(discovery)
    log.info("%s: discovered %d tools (%s)", ref, len(discovery.tools), discovery.phase)
    return discovery, _rediscover_after(discovery, ctx)


def _rediscover_after(discovery: tools.Discovery, ctx: Context) -> float:
    if any(result.status == "False" for result in discovery.handlers):
        return min(ctx.discovery_interval, DISCOVERY_RETRY_SECONDS)
    return ctx.discovery_interval


# --- status and events ------------------------------------------------------


def _fingerprint(status_model: Any, annotations: Mapping[str, str | None]) -> dict[str, Any]:
    return {"status": status_model.model_dump(mode="json", exclude_none=True), "annotations": dict(annotations)}


def _present(ref: Ref, parsed: Parsed | None, ctx: Context) -> bool:
    """Whether there is an object to reconcile: a deleted one drops what the
    operator remembers of its writes; one whose cache lags the operator's own
    last write postpones the reconcile (see ``_caught_up``)."""
    if parsed is None:
        ctx.written.pop(ref, None)
        return False
    if not _caught_up(ref, parsed, ctx):
        raise queueing.Postponed(CATCH_UP_POLL)
    return True


def _caught_up(ref: Ref, parsed: Parsed, ctx: Context) -> bool:
    """Whether the cache shows the operator's own last write to this object.

    A reconcile started by the event of an earlier write (the annotation)
    would otherwise see half of it (not yet the status) and decide again from
    stale state. Until the cache catches up the reconcile is postponed,
    for at most ``CATCH_UP_SECONDS``.
    """
    written = ctx.written.get(ref)
    if written is None:
        return True
    when, expected = written
    seen = _fingerprint(parsed.status, {key: parsed.annotations.get(key) for key in expected["annotations"]})
    if seen == expected or ctx.monotonic() - when > CATCH_UP_SECONDS:
        del ctx.written[ref]
        return True
    return False


async def _write_status(
    parsed: Parsed,
    previous: Any,
    current: Any,
    ctx: Context,
    *,
    annotations: Mapping[str, str] | None = None,
    handler_events: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Write what changed: annotations first, then status; post Events for changed conditions.

    ``handler_events`` are Events of nested conditions (a ToolRegistry's
    handlers); a top-level condition's Event with the same reason is left
    out, as it only repeats one of them.
    """
    ref = Ref(parsed.kind, parsed.namespace, parsed.name)
    annotations = dict(annotations or {})
    changed_annotations = {k: v for k, v in annotations.items() if parsed.annotations.get(k) != v}
    status_changed = not status.same_status(previous, current)
    if not changed_annotations and not status_changed:
        return
    if changed_annotations:
        await ctx.api.patch_annotations(API_VERSION, parsed.kind, namespace=parsed.namespace, name=parsed.name,
                                        annotations=changed_annotations)
    if status_changed:
        await ctx.api.patch_status(API_VERSION, parsed.kind, namespace=parsed.namespace, name=parsed.name,
                                   status=_status_patch(current))
    ctx.written[ref] = (ctx.monotonic(), _fingerprint(current, annotations))
    if getattr(previous, "phase", None) != getattr(current, "phase", None):
        log.info("%s: phase %s → %s", ref, getattr(previous, "phase", None), getattr(current, "phase", None))
    repeated = {reason for _, reason, _ in handler_events}
    top = [event for event in status.events(
        previous.conditions, current.conditions, quiet=status.QUIET_CONDITIONS.get(parsed.kind, ())
    ) if event[1] not in repeated]
    await _together(*(ctx.api.post_event(regarding=parsed.regarding(), type=type_, reason=reason, message=message)
                      for type_, reason, message in [*handler_events, *top]))


def _status_patch(current: Any) -> dict[str, Any]:
    """The status as a merge patch: fields that became empty are removed explicitly."""
    patch = current.model_dump(mode="json", exclude_none=True)
    for name, info in type(current).model_fields.items():
        alias = info.alias or name
        if alias not in patch:
            patch[alias] = None
    return patch

