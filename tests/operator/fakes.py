"""In-memory stand-ins for the operator's two boundaries: the caches and the Kubernetes API.

``MemoryCache`` holds what kopf's indexes would; ``MemoryApi`` records every
call and keeps the objects applied or created, answering like an API server
would in the ways the reconcilers care about (server-side apply creates or
merges, create conflicts on a taken name, delete honours the uid precondition).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from omnia import tools
from omnia.config import PromptConfig
from omnia.operator import labels, podhealth, references, routing
from omnia.operator.applying import Conflict, NotFound
from omnia.operator.promptpacks import VersionRef
from omnia.operator.references import Ref
from omnia.operator.summaries import (
    ConfigMapSummary,
    DeploymentSummary,
    Parsed,
    SecretSummary,
    parse,
)


@dataclass
class MemoryCache:
    objects: dict[Ref, Parsed] = field(default_factory=dict)
    secrets: dict[tuple[str, str], SecretSummary] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], ConfigMapSummary] = field(default_factory=dict)
    snapshots: dict[tuple[str, str, str, str], PromptConfig] = field(default_factory=dict)
    deployments: dict[tuple[str, str], DeploymentSummary] = field(default_factory=dict)
    pod_summaries: dict[tuple[str, str], list[podhealth.PodSummary]] = field(default_factory=dict)
    """(namespace, agent) → its pods."""
    activator_slices: dict[tuple[str, str], routing.SliceSummary] = field(default_factory=dict)
    """(namespace, agent) → its ``<agent>-activator`` EndpointSlice."""
    activator: list[str] | None = None
    """The activator's Ready addresses; None: never listed."""

    def put(self, body: Mapping[str, Any]) -> Parsed:
        parsed = parse(body)
        self.objects[Ref(parsed.kind, parsed.namespace, parsed.name)] = parsed
        return parsed

    def put_secret(self, namespace: str, name: str, *keys: str, version: str = "1",
                   controller: str | None = None) -> None:
        self.secrets[(namespace, name)] = SecretSummary(resource_version=version, keys=frozenset(keys),
                                                        uid=f"uid-{name}", controller=controller)

    def agent(self, namespace: str, name: str) -> Parsed | None:
        return self.objects.get(Ref(references.AGENT_RUNTIME, namespace, name))

    def agents(self) -> list[Ref]:
        return [ref for ref in self.objects if ref.kind == references.AGENT_RUNTIME]

    def prompt_pack(self, namespace: str, name: str) -> Parsed | None:
        return self.objects.get(Ref(references.PROMPT_PACK, namespace, name))

    def provider(self, namespace: str, name: str) -> Parsed | None:
        return self.objects.get(Ref(references.PROVIDER, namespace, name))

    def tool_registry(self, namespace: str, name: str) -> Parsed | None:
        return self.objects.get(Ref(references.TOOL_REGISTRY, namespace, name))

    def secret(self, namespace: str, name: str) -> SecretSummary | None:
        return self.secrets.get((namespace, name))

    def config_map(self, namespace: str, name: str) -> ConfigMapSummary | None:
        return self.config_maps.get((namespace, name))

    def snapshot(self, namespace: str, pack: str, ref: VersionRef) -> PromptConfig | None:
        return self.snapshots.get((namespace, pack, ref.version, ref.content_hash))

    def deployment(self, namespace: str, name: str) -> DeploymentSummary | None:
        return self.deployments.get((namespace, name))

    def pods(self, namespace: str, agent: str) -> list[podhealth.PodSummary]:
        return list(self.pod_summaries.get((namespace, agent), ()))

    def activator_slice(self, namespace: str, agent: str) -> routing.SliceSummary | None:
        return self.activator_slices.get((namespace, agent))

    def activator_addresses(self) -> list[str] | None:
        return None if self.activator is None else list(self.activator)

    def referrers(self, ref: Ref) -> set[Ref]:
        found = set()
        for key, parsed in self.objects.items():
            if parsed.resource is not None and ref in references.references(parsed.resource, namespace=key.namespace):
                found.add(key)
        return found


@dataclass
class MemoryApi:
    calls: list[tuple] = field(default_factory=list)
    store: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    statuses: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    annotations: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    missing_kinds: set[str] = field(default_factory=set)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, name) → decoded values, for ``secret_data``."""

    @staticmethod
    def _key(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind, namespace, name)

    def writes(self) -> list[tuple]:
        return [call for call in self.calls if call[0] != "get"]

    async def apply(self, obj: Mapping[str, Any], *, field_manager: str = labels.OPERATOR) -> dict[str, Any]:
        metadata = obj["metadata"]
        self.calls.append(("apply", obj["kind"], metadata["name"], field_manager))
        if obj["kind"] in self.missing_kinds:
            raise NotFound(404, "NotFound", f"the server could not find the requested resource ({obj['kind']})")
        key = self._key(obj["kind"], metadata["namespace"], metadata["name"])
        live = self.store.setdefault(key, {"metadata": {"generation": 0, "uid": f"uid-{metadata['name']}"}})
        before = copy.deepcopy(live)
        merged = _merge(live, copy.deepcopy(dict(obj)))
        if merged.get("spec") != before.get("spec"):
            merged["metadata"]["generation"] = before["metadata"]["generation"] + 1
        self.store[key] = merged
        return copy.deepcopy(merged)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        self.calls.append(("create", obj["kind"], metadata["name"]))
        key = self._key(obj["kind"], metadata["namespace"], metadata["name"])
        if key in self.store:
            raise Conflict(409, "AlreadyExists", f"{metadata['name']} already exists")
        self.store[key] = copy.deepcopy(dict(obj))
        return copy.deepcopy(dict(obj))

    async def get(self, api_version: str, kind: str, *, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        if kind in self.missing_kinds:
            raise NotFound(404, "NotFound", "no such kind")
        obj = self.store.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def secret_data(self, *, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(("get", "Secret", name))
        data = self.secrets.get((namespace, name))
        return dict(data) if data is not None else None

    async def delete(self, api_version: str, kind: str, *, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", kind, name))
        key = self._key(kind, namespace, name)
        if key in self.store and self.store[key]["metadata"].get("uid") == uid:
            del self.store[key]

    async def patch_status(self, api_version: str, kind: str, *, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("patch_status", kind, name))
        self.statuses[self._key(kind, namespace, name)] = {k: v for k, v in status.items() if v is not None}

    async def patch_annotations(self, api_version: str, kind: str, *, namespace: str, name: str,
                                annotations: Mapping[str, str | None]) -> None:
        self.calls.append(("patch_annotations", kind, name))
        self.annotations.setdefault(self._key(kind, namespace, name), {}).update(annotations)

    async def post_event(self, *, regarding: Mapping[str, str], type: str, reason: str, message: str) -> None:
        self.calls.append(("event", regarding["kind"], regarding["name"], reason))
        self.events.append({"regarding": dict(regarding), "type": type, "reason": reason, "message": message})


def _merge(live: dict, applied: dict) -> dict:
    for key, value in applied.items():
        if isinstance(value, dict) and isinstance(live.get(key), dict):
            live[key] = _merge(live[key], value)
        else:
            live[key] = value
    return live


def with_status(body: dict, status: Mapping[str, Any] | None, annotations: Mapping[str, str | None] | None = None) -> dict:
    """``body`` as the watch would deliver it after the operator's writes."""
    updated = copy.deepcopy(body)
    if status is not None:
        updated["status"] = dict(status)
    if annotations:
        current = dict(updated["metadata"].get("annotations") or {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        updated["metadata"]["annotations"] = current
    return updated


def offline_discover(answer=lambda request: httpx.Response(200)):
    """``omnia.tools.discover`` whose HTTP requests ``answer`` answers in-process (MCP still connects for real)."""

    async def discover(spec, **kwargs):
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            return await tools.discover(spec, client=client, timeout=5.0, **kwargs)

    return discover
