"""kopf glue: the caches (kopf indexes), the watch events that queue reconciles, start-up.

Everything kopf calls is registered on an explicit ``kopf.OperatorRegistry``
by :func:`register`, never on kopf's global one, so the operator can be
started several times in one process (as the tests do).

- **Indexes** are the caches: one per watched kind, keyed by
  :class:`~omnia.operator.references.Ref` (kind, namespace, name), holding
  the parsed resource or a summary. The four Omnia kinds also index who they
  reference, keyed ``("referrer", Ref)``, which is how a change finds the
  objects it affects. Agent pods are indexed by their AgentRuntime's Ref,
  one health summary per pod (``podhealth``).
- **Event handlers** turn every watch event into keys of the work queue:
  the changed object if it is reconciled, and everything that references it.
  They are coroutines although they never await: kopf runs plain functions
  in a thread pool, and the work queue belongs to the event loop (a key put
  in it from another thread did not wake a waiting worker, and a delayed add
  needs the loop's timers).
- The default session stores' Secrets, in the operator's own namespace,
  which kopf may not watch, are followed on their own (``following``) and
  answer :meth:`IndexCache.secret` for their names. So are the activator's
  EndpointSlices (``routing``): a change of its Ready pods reconciles every
  scale-to-zero agent. The agents' own ``<agent>-activator`` slices are an
  index, so that a deleted one is put back.
- The **start-up handler** captures the indexes and starts the workers, which
  run :func:`omnia.operator.reconciling.reconcile`, and the budget meter
  (``metering``), which queues an agent when its budget counters changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from prometheus_client import CollectorRegistry

from omnia.api.v1alpha1 import GROUP, VERSION
from omnia.config import PromptConfig
from omnia.operator import (
    applying,
    builders,
    credentials,
    following,
    hashing,
    labels,
    metering,
    metrics,
    podhealth,
    queueing,
    reconciling,
    references,
    routing,
    summaries,
)
from omnia.operator.applying import Selector
from omnia.operator.promptpacks import VersionRef
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from omnia.operator.summaries import ConfigMapSummary, DeploymentSummary, Parsed, SecretSummary

log = logging.getLogger(__name__)

REFERRER = "referrer"
SNAPSHOT = "snapshot"

OMNIA_PLURALS = {
    references.AGENT_RUNTIME: "agentruntimes",
    references.PROMPT_PACK: "promptpacks",
    references.PROVIDER: "providers",
    references.TOOL_REGISTRY: "toolregistries",
}


class IndexCache:
    """The :class:`~omnia.operator.reconciling.Cache` over kopf's indexes (live views)."""

    def __init__(
        self,
        indexes: Mapping[str, kopf.Index],
        *,
        followed: Mapping[tuple[str, str], following.Follower] | None = None,
        activator: following.Follower[tuple[str, ...]] | None = None,
    ) -> None:
        self._indexes = indexes
        self._followed = followed if followed is not None else {}
        self._activator = activator

    def _one(self, index: str, key: Any) -> Any:
        store = self._indexes[index].get(key)
        return next(iter(store), None) if store else None

    def agent(self, namespace: str, name: str) -> Parsed | None:
        return self._one("agentruntimes", Ref(references.AGENT_RUNTIME, namespace, name))

    def prompt_pack(self, namespace: str, name: str) -> Parsed | None:
        return self._one("promptpacks", Ref(references.PROMPT_PACK, namespace, name))

    def provider(self, namespace: str, name: str) -> Parsed | None:
        return self._one("providers", Ref(references.PROVIDER, namespace, name))

    def tool_registry(self, namespace: str, name: str) -> Parsed | None:
        return self._one("toolregistries", Ref(references.TOOL_REGISTRY, namespace, name))

    def secret(self, namespace: str, name: str) -> SecretSummary | None:
        follower = self._followed.get((namespace, name))
        if follower is not None:
            return follower.summaries.get(name)
        return self._one("secrets", Ref(references.SECRET, namespace, name))

    def config_map(self, namespace: str, name: str) -> ConfigMapSummary | None:
        return self._one("configmaps", Ref(references.CONFIG_MAP, namespace, name))

    def snapshot(self, namespace: str, pack: str, ref: VersionRef) -> PromptConfig | None:
        return self._one("snapshots", (SNAPSHOT, namespace, pack, ref.version, ref.content_hash))

    def deployment(self, namespace: str, name: str) -> DeploymentSummary | None:
        return self._one("deployments", Ref("Deployment", namespace, name))

    def pods(self, namespace: str, agent: str) -> list[podhealth.PodSummary]:
        return list(self._indexes["pods"].get(Ref(references.AGENT_RUNTIME, namespace, agent), ()))

    def agents(self) -> list[Ref]:
        return [key for key in self._indexes["agentruntimes"] if isinstance(key, Ref)]

    def activator_slice(self, namespace: str, agent: str) -> routing.SliceSummary | None:
        return self._one("activatorslices", Ref(references.AGENT_RUNTIME, namespace, agent))

    def activator_addresses(self) -> list[str] | None:
        """The activator's Ready pod addresses; None when there is no activator or it was never listed."""
        if self._activator is None or not self._activator.synced:
            return None
        return sorted({address for addresses in self._activator.summaries.values() for address in addresses})

    def agents_scaling_to_zero(self) -> list[Ref]:
        found = []
        for ref in self.agents():
            parsed = self.agent(ref.namespace, ref.name)
            if parsed is not None and parsed.resource is not None and builders.scales_to_zero(parsed.resource):
                found.append(ref)
        return found

    def referrers(self, ref: Ref) -> set[Ref]:
        found: set[Ref] = set()
        for index in OMNIA_PLURALS.values():
            found.update(self._indexes[index].get((REFERRER, ref), ()))
        return found

    def prompt_packs(self) -> list[Ref]:
        return [key for key in self._indexes["promptpacks"] if isinstance(key, Ref)]

    def reconciled(self) -> list[Ref]:
        """Every object the operator reconciles, for the periodic resync."""
        return [key for index in OMNIA_PLURALS.values() for key in self._indexes[index]
                if isinstance(key, Ref)]


WORKERS = 16
"""Reconciles that run at once by default.

A reconcile spends most of its time waiting for the API server, so workers
are cheap (tasks on one event loop); with 4, a PromptPack edit's 200 agents
waited in the queue for tens of seconds behind each other's requests.
"""


COALESCE_SECONDS = 0.5
"""How long an agent's reconcile waits after an event of its Deployment or pods, gathering the next ones.

A rollout changes a Deployment's status and its pods several times within a
second (ReplicaSet created, pod created, scheduled, Ready, counters); each
event reconciled at once wrote the agent's status once more. Waiting half a
second makes those one reconcile and one status write, for at most half a
second more before the agent shows Ready.
"""


@dataclass
class Operator:
    """The running operator: its queue and workers, started by kopf's start-up handler."""

    defaults: builders.Defaults
    workers: int = WORKERS
    resync_seconds: float = 600.0
    discovery_interval: float = reconciling.DISCOVERY_INTERVAL_SECONDS
    budget_interval: float = metering.INTERVAL_SECONDS
    connect: Callable[[kopf.OperatorSettings], applying.KubeClient] = field(
        default=lambda settings: applying.KubeClient.connect(settings)
    )
    queue: queueing.WorkQueue[Ref] = field(default_factory=queueing.WorkQueue)
    backoff: queueing.Backoff[Ref] = field(default_factory=queueing.Backoff)
    stats: queueing.Stats = field(default_factory=queueing.Stats)
    metrics: metrics.Metrics = field(default_factory=lambda: metrics.Metrics(CollectorRegistry()))
    context: reconciling.Context | None = None
    cache: IndexCache | None = None
    meter: metering.Meter | None = None
    followers: dict[tuple[str, str], following.Follower] = field(default_factory=dict)
    """(namespace, name) → the follower of a default session store's Secret."""
    activator: following.Follower[tuple[str, ...]] | None = None
    """The follower of the activator Service's EndpointSlices, when there is an activator."""
    agent_inputs: dict[Ref, str] = field(default_factory=dict)
    """Ref → digest of the AgentRuntime's metadata last queued for (``_agent_inputs_changed``)."""
    pack_views: dict[Ref, str] = field(default_factory=dict)
    """Ref → digest of the PromptPack as its agents read it, last fanned out (``_pack_changed_for_agents``)."""
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _client: applying.KubeClient | None = None

    def enqueue(self, refs: Iterable[Ref]) -> None:
        for ref in refs:
            if ref.kind in references.RECONCILED_KINDS:
                self.queue.add(ref)

    async def start(self, indexes: Mapping[str, kopf.Index], settings: kopf.OperatorSettings) -> None:
        self._client = self.connect(settings)
        if self.defaults.activator is not None:
            self.activator = self._activator_follower(self._client, self.defaults.activator)
        self.cache = IndexCache(indexes, followed=self.followers, activator=self.activator)
        await self._follow_session_stores(self._client)
        if self.activator is not None:
            await self._start_following(self.activator,
                                        problem=f"the activator Service {self.defaults.activator}'s EndpointSlices")
        self.meter = metering.Meter(cache=self.cache, api=self._client, session_stores=self.defaults.session_stores,
                                    enqueue=self.enqueue, measured=self.metrics, interval=self.budget_interval)
        self.context = reconciling.Context(cache=self.cache, api=self._client, defaults=self.defaults,
                                           discovery_interval=self.discovery_interval, metrics=self.metrics,
                                           meter=self.meter)
        context = self.context
        self.metrics.watch_queue(self.queue)
        for number in range(self.workers):
            self._tasks.append(asyncio.create_task(
                queueing.work(self.queue, lambda ref: reconciling.reconcile(ref, context),
                              backoff=self.backoff, stats=self.stats, observe=self.metrics.reconciled),
                name=f"omnia-reconciler-{number}",
            ))
        self._tasks.append(asyncio.create_task(self._resync(), name="omnia-resync"))
        self._tasks.append(asyncio.create_task(self.meter.run(), name="omnia-budget-meter"))

    async def _follow_session_stores(self, client: applying.KubeClient) -> None:
        """Follow each default session store's Secret; the first list is awaited, so the first reconciles see it."""
        for store in self.defaults.session_stores.values():
            key = (store.namespace, store.name)
            if key in self.followers:
                continue
            ref = Ref(references.SECRET, *key)
            follower = following.Follower.secret(client, namespace=store.namespace, name=store.name,
                                                 on_change=lambda _, ref=ref: self._source_changed(ref))
            self.followers[key] = follower
            await self._start_following(
                follower, problem=f"the default {store.type} session store's Secret {store.namespace}/{store.name}")

    def _activator_follower(
        self, client: applying.KubeClient, service: builders.ActivatorService
    ) -> following.Follower[tuple[str, ...]]:
        """A follower of the activator Service's EndpointSlices, keeping each one's Ready addresses."""
        return following.Follower(
            client, routing.ENDPOINT_SLICE.api_version, routing.ENDPOINT_SLICE.kind, service.namespace,
            Selector(label=f"{routing.SERVICE_NAME_LABEL}={service.name}"),
            summarise=lambda body: tuple(routing.ready_addresses([body])),
            on_change=lambda _: self._activator_changed(),
        )

    async def _start_following(self, follower: following.Follower, *, problem: str) -> None:
        """List once (awaited, so the first reconciles see the result), then watch in a task of the operator's."""
        version = None
        try:
            version = await follower.sync()
        except (applying.ApiError, httpx.HTTPError) as exc:
            log.warning("cannot read %s yet: %s", problem, exc)
        self._tasks.append(asyncio.create_task(follower.run(resource_version=version),
                                               name=f"omnia-follow-{follower.namespace}-{follower.kind}"))

    def _activator_changed(self) -> None:
        if self.cache is not None:
            self.enqueue(self.cache.agents_scaling_to_zero())

    def _source_changed(self, ref: Ref) -> None:
        if self.cache is not None:
            self.enqueue(references.affected(ref, self.cache.referrers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.close()
        if self.meter is not None:
            await self.meter.aclose()
        if self._client is not None:
            await self._client.aclose()

    async def _resync(self) -> None:
        """Re-apply everything now and then: repairs drift no watched event reports."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            if self.context is not None and self.cache is not None:
                self.context.forget_applied()
                self.enqueue(self.cache.reconciled())


def register(registry: kopf.OperatorRegistry, *, operator: Operator) -> None:
    """Register the operator's indexes and handlers on ``registry``."""

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        return credentials.discover(settings).connection()

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        indexes = {name: kwargs[name] for name in INDEXES}
        await operator.start(indexes, settings)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await operator.stop()

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return {**operator.stats.summary(), "queued": len(operator.queue), "delayed": operator.queue.delayed}

    # --- indexes -------------------------------------------------------------

    for kind, plural in OMNIA_PLURALS.items():
        _index_custom_resource(registry, kind=kind, plural=plural, session_stores=operator.defaults.session_stores)

    @kopf.index(group="", version="v1", plural="secrets", id="secrets", registry=registry)
    def secrets(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
        return {Ref(references.SECRET, namespace, name): SecretSummary.from_body(body)}

    @kopf.index(group="", version="v1", plural="configmaps", id="configmaps", when=_not_ours, registry=registry)
    def configmaps(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
        return {Ref(references.CONFIG_MAP, namespace, name): ConfigMapSummary.from_body(body)}

    @kopf.index(group="", version="v1", plural="configmaps", id="snapshots",
                labels={labels.PROMPT_PACK: kopf.PRESENT}, registry=registry)
    def snapshots(body: kopf.Body, namespace: str, meta: kopf.Meta, **_: Any) -> dict:
        annotations = meta.get("annotations") or {}
        try:
            prompt = builders.read_snapshot(body.get("data") or {})
        except (KeyError, ValueError):
            return {}
        key = (SNAPSHOT, namespace, meta["labels"][labels.PROMPT_PACK],
               annotations.get(labels.PROMPT_VERSION), annotations.get(labels.CONTENT_HASH))
        return {key: prompt}

    @kopf.index(group="apps", version="v1", plural="deployments", id="deployments",
                labels={labels.MANAGED_BY: labels.OPERATOR}, registry=registry)
    def deployments(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
        return {Ref("Deployment", namespace, name): DeploymentSummary.from_body(body)}

    # The watch is narrowed on the server to the operator's slices (main.settings_for_omnia).
    @kopf.index(group="discovery.k8s.io", version="v1", plural="endpointslices", id="activatorslices",
                labels=ACTIVATOR_SLICE_LABELS, registry=registry)
    def activator_slices(body: kopf.Body, namespace: str, meta: kopf.Meta, **_: Any) -> dict:
        agent = Ref(references.AGENT_RUNTIME, namespace, meta["labels"][labels.AGENT])
        return {agent: routing.SliceSummary.from_body(body)}

    # The watch is narrowed on the server to agent pods (main.settings_for_omnia).
    @kopf.index(group="", version="v1", plural="pods", id="pods", labels=AGENT_POD_LABELS, registry=registry)
    def pods(body: kopf.Body, namespace: str, meta: kopf.Meta, **_: Any) -> dict:
        agent = Ref(references.AGENT_RUNTIME, namespace, meta["labels"][labels.AGENT])
        return {agent: podhealth.PodSummary.from_body(body)}

    # --- events → queue --------------------------------------------------------

    def affected(ref: Ref) -> set[Ref]:
        cache = operator.cache
        return references.affected(ref, cache.referrers if cache else lambda _: ())

    for kind, plural in OMNIA_PLURALS.items():
        _queue_custom_resource_events(registry, operator=operator, kind=kind, plural=plural, affected=affected)

    @kopf.on.event(group="", version="v1", plural="secrets", registry=registry)
    async def secret_changed(namespace: str, name: str, **_: Any) -> None:
        operator.enqueue(affected(Ref(references.SECRET, namespace, name)))

    @kopf.on.event(group="", version="v1", plural="configmaps", when=_not_ours, registry=registry)
    async def config_map_changed(namespace: str, name: str, **_: Any) -> None:
        operator.enqueue(affected(Ref(references.CONFIG_MAP, namespace, name)))

    @kopf.on.event(group="", version="v1", plural="configmaps",
                   labels={labels.PROMPT_PACK: kopf.PRESENT}, registry=registry)
    async def snapshot_changed(namespace: str, meta: kopf.Meta, **_: Any) -> None:
        pack = Ref(references.PROMPT_PACK, namespace, meta["labels"][labels.PROMPT_PACK])
        operator.enqueue(affected(pack))

    @kopf.on.event(group="", version="v1", plural="configmaps",
                   labels={labels.AGENT: kopf.PRESENT}, registry=registry)
    async def agent_config_changed(type: str | None, namespace: str, meta: kopf.Meta, **_: Any) -> None:
        if type == "DELETED":
            _owned_object_gone(operator, Ref(references.AGENT_RUNTIME, namespace, meta["labels"][labels.AGENT]))

    @kopf.on.event(group="apps", version="v1", plural="deployments",
                   labels={labels.MANAGED_BY: labels.OPERATOR}, registry=registry)
    async def deployment_changed(type: str | None, namespace: str, meta: kopf.Meta, **_: Any) -> None:
        agent = (meta.get("labels") or {}).get(labels.AGENT)
        if agent:
            ref = Ref(references.AGENT_RUNTIME, namespace, agent)
            if type == "DELETED":
                _owned_object_gone(operator, ref)
            else:
                operator.queue.add_soon(ref, COALESCE_SECONDS)

    @kopf.on.event(group="discovery.k8s.io", version="v1", plural="endpointslices",
                   labels=ACTIVATOR_SLICE_LABELS, registry=registry)
    async def activator_slice_changed(type: str | None, namespace: str, meta: kopf.Meta, **_: Any) -> None:
        ref = Ref(references.AGENT_RUNTIME, namespace, meta["labels"][labels.AGENT])
        if type == "DELETED":
            _owned_object_gone(operator, ref)
        else:
            operator.enqueue([ref])

    @kopf.on.event(group="", version="v1", plural="pods", labels=AGENT_POD_LABELS, registry=registry)
    async def pod_changed(namespace: str, meta: kopf.Meta, **_: Any) -> None:
        # Any change, deletion included: the agent's Ready condition follows its pods.
        operator.queue.add_soon(Ref(references.AGENT_RUNTIME, namespace, meta["labels"][labels.AGENT]),
                                COALESCE_SECONDS)


INDEXES = ("agentruntimes", "promptpacks", "providers", "toolregistries",
           "secrets", "configmaps", "snapshots", "deployments", "pods", "activatorslices")

AGENT_POD_LABELS = {labels.NAME: labels.AGENT_NAME, labels.MANAGED_BY: labels.OPERATOR, labels.AGENT: kopf.PRESENT}
"""The labels of the pods of an agent's Deployment (``labels.agent_labels``), whatever its name."""

ACTIVATOR_SLICE_LABELS = {routing.MANAGED_BY_LABEL: routing.MANAGER, labels.AGENT: kopf.PRESENT}
"""The labels of the agents' ``<agent>-activator`` EndpointSlices (``routing.build_activator_slice``)."""


def _index_custom_resource(
    registry: kopf.OperatorRegistry, *, kind: str, plural: str, session_stores: Mapping[str, DefaultStore]
) -> None:
    def index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
        parsed = summaries.parse(body)
        entries: dict[Any, Any] = {Ref(kind, namespace, name): parsed}
        if parsed.resource is not None:
            for target in references.references(parsed.resource, namespace=namespace, session_stores=session_stores):
                entries[(REFERRER, target)] = Ref(kind, namespace, name)
        return entries

    kopf.index(GROUP, VERSION, plural, id=plural, registry=registry)(index)


def _queue_custom_resource_events(
    registry: kopf.OperatorRegistry,
    *,
    operator: Operator,
    kind: str,
    plural: str,
    affected: Callable[[Ref], set[Ref]],
) -> None:
    async def changed(type: str | None, namespace: str, name: str, spec: kopf.Spec, meta: kopf.Meta,
                      body: kopf.Body, **_: Any) -> None:
        ref = Ref(kind, namespace, name)
        if kind == references.AGENT_RUNTIME and not _agent_inputs_changed(operator, ref, type=type, meta=meta):
            return
        if kind == references.PROMPT_PACK and not _pack_changed_for_agents(operator, ref, type=type, body=body):
            operator.enqueue([ref])
            return
        refs = affected(ref)
        if kind == references.AGENT_RUNTIME and operator.cache is not None:
            # The packs listing this agent among their consumers, and the one
            # it references now (which may be a different one after an edit).
            pack = (spec.get("promptPackRef") or {}).get("name")
            if pack:
                refs.add(Ref(references.PROMPT_PACK, namespace, pack))
            refs.update(_packs_listing(operator.cache, namespace=namespace, agent=name))
        operator.enqueue(refs)

    kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-changed", registry=registry)(changed)


def _agent_inputs_changed(operator: Operator, ref: Ref, *, type: str | None, meta: kopf.Meta) -> bool:
    """Whether an AgentRuntime event may change what its reconcile does: anything but its status alone.

    The operator writes only an agent's status, and every such write comes
    back as an event; reconciling the agent (and the packs listing it) again
    for it found nothing to do, hundreds of times when 200 agents start. So
    an event whose generation, labels, annotations, owner, finalizers and
    deletion are those seen last is dropped, unless the agent waits for a
    delayed reconcile (a postponed one looks again at its next event). A
    status changed by someone else is put back by the next resync.
    """
    if type == "DELETED":
        operator.agent_inputs.pop(ref, None)
        return True
    inputs = hashing.digest({key: meta.get(key) for key in (
        "uid", "generation", "labels", "annotations", "ownerReferences", "finalizers", "deletionTimestamp")})
    if operator.agent_inputs.get(ref) == inputs and not operator.queue.postponed(ref):
        return False
    operator.agent_inputs[ref] = inputs
    return True


def _pack_changed_for_agents(operator: Operator, ref: Ref, *, type: str | None, body: kopf.Body) -> bool:
    """Whether a PromptPack event may change what the agents using it run: anything but its consumers.

    Each agent created or deleted changes the pack's ``status.consumers``,
    which the pack's reconcile writes, and which no agent reads; every such
    write queued every agent of the pack again, so 200 agents created one
    after another were each reconciled over and over for nothing. The pack
    itself is still reconciled at every event.
    """
    if type == "DELETED":
        operator.pack_views.pop(ref, None)
        return True
    meta = body.get("metadata") or {}
    view = hashing.digest({
        "metadata": {key: meta.get(key) for key in ("uid", "generation", "labels", "annotations", "deletionTimestamp")},
        "spec": body.get("spec"),
        "status": {key: value for key, value in (body.get("status") or {}).items() if key != "consumers"},
    })
    if operator.pack_views.get(ref) == view:
        return False
    operator.pack_views[ref] = view
    return True


def _packs_listing(cache: IndexCache, *, namespace: str, agent: str) -> list[Ref]:
    found = []
    for ref in cache.prompt_packs():
        if ref.namespace == namespace:
            parsed = cache.prompt_pack(namespace, ref.name)
            if parsed is not None and agent in parsed.status.consumers:
                found.append(ref)
    return found


def _owned_object_gone(operator: Operator, agent: Ref) -> None:
    """Someone deleted an object of the agent: apply everything again."""
    if operator.context is not None:
        reconciling.forget_agent(agent, operator.context)
    operator.enqueue([agent])


def _not_ours(meta: kopf.Meta, **_: Any) -> bool:
    return (meta.get("labels") or {}).get(labels.MANAGED_BY) != labels.OPERATOR
