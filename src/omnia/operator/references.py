"""Who references whom: the edges that decide which objects a change reconciles.

An AgentRuntime references its PromptPack, Provider and ToolRegistry and
the Secrets of its session store and client keys (on a default session
store: the mirror beside it, and the installation's Secret in the
operator's namespace); a PromptPack references
the ConfigMap it is sourced from; a Provider its credentials Secret; a
ToolRegistry the Secrets and ConfigMaps of its handlers. A change to any
object reconciles exactly the objects that reach it along these edges
(a Secret edit reaches the Provider that names it and, through it, every
agent using that Provider) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from omnia.api.v1alpha1 import AgentRuntime, PromptPack, Provider, ToolRegistry
from omnia.api.v1alpha1.common import Resource
from omnia.operator import sessionstores
from omnia.operator.sessionstores import DefaultStore

AGENT_RUNTIME = "AgentRuntime"
PROMPT_PACK = "PromptPack"
PROVIDER = "Provider"
TOOL_REGISTRY = "ToolRegistry"
SECRET = "Secret"
CONFIG_MAP = "ConfigMap"

RECONCILED_KINDS = (AGENT_RUNTIME, PROMPT_PACK, PROVIDER, TOOL_REGISTRY)


@dataclass(frozen=True, order=True)
class Ref:
    """An object by kind, namespace and name: also the key of the work queue."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def references(
    resource: Resource, *, namespace: str, session_stores: Mapping[str, DefaultStore] | None = None
) -> set[Ref]:
    """The objects ``resource`` reads, in its own namespace but for the default session store's Secret."""
    names: list[tuple[str, str]] = []
    elsewhere: set[Ref] = set()
    if isinstance(resource, AgentRuntime):
        spec = resource.spec
        names.append((PROMPT_PACK, spec.prompt_pack_ref.name))
        if spec.provider_ref is not None:
            names.append((PROVIDER, spec.provider_ref.name))
        if spec.tool_registry_ref is not None:
            names.append((TOOL_REGISTRY, spec.tool_registry_ref.name))
        if spec.session.secret_ref is not None:
            names.append((SECRET, spec.session.secret_ref.name))
        elif sessionstores.uses_default(resource):
            names.append((SECRET, sessionstores.mirror_name(resource.metadata.name)))
            store = (session_stores or {}).get(spec.session.type)
            if store is not None:
                elsewhere.add(Ref(SECRET, store.namespace, store.name))
        if spec.facade.auth.secret_ref is not None:
            names.append((SECRET, spec.facade.auth.secret_ref.name))
    elif isinstance(resource, PromptPack):
        if resource.spec.source is not None:
            names.append((CONFIG_MAP, resource.spec.source.config_map_ref.name))
    elif isinstance(resource, Provider):
        if resource.spec.credentials is not None:
            names.append((SECRET, resource.spec.credentials.secret_ref.name))
    elif isinstance(resource, ToolRegistry):
        for handler in resource.spec.handlers:
            block = getattr(handler, handler.type)
            for item in [*getattr(block, "headers", []), *getattr(block, "env", [])]:
                if item.secret_ref is not None:
                    names.append((SECRET, item.secret_ref.name))
            config_map_ref = getattr(block, "config_map_ref", None)
            if config_map_ref is not None:
                names.append((CONFIG_MAP, config_map_ref.name))
    return {Ref(kind, namespace, name) for kind, name in names} | elsewhere


def affected(changed: Ref, referrers: Callable[[Ref], Iterable[Ref]]) -> set[Ref]:
    """The objects to reconcile after ``changed`` changed: ``changed`` itself if it is
    reconciled, and everything that references it, directly or through others.
    """
    found = {changed} if changed.kind in RECONCILED_KINDS else set()
    frontier = [changed]
    seen = {changed}
    while frontier:
        current = frontier.pop()
        for referrer in referrers(current):
            if referrer not in seen:
                seen.add(referrer)
                found.add(referrer)
                frontier.append(referrer)
    return found
