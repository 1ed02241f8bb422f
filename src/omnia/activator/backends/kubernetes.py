"""Backends read from the Kubernetes API: EndpointSlices and AgentRuntimes.

An agent's ready addresses are the Ready endpoints of the EndpointSlices
labelled ``kubernetes.io/service-name: <agent>`` in its namespace, except
the operator's ``<agent>-activator`` slice. The port is the slice's port
named ``ws`` (the agent Service's facade port), or its only port.

``watch`` lists, then watches from the list's resourceVersion, and reads
the slices again whenever the watch ends or fails, after a short pause; the
activator runs one watch per agent it holds connections for, not one per
connection. The calls are those of a read-only ServiceAccount: ``list`` and
``watch`` on EndpointSlices, ``list`` on AgentRuntimes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import httpx

from omnia.activator.backends import Address, activator_slice_name
from omnia.activator.hosts import AgentRef

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
FACADE_PORT_NAME = "ws"
RETRY_SECONDS = 1.0
WATCH_SECONDS = 300


class KubernetesBackends:
    """Reads through ``http``, an ``httpx.AsyncClient`` for the API server (``applying.http_client``)."""

    def __init__(self, http: httpx.AsyncClient, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self._http = http
        self._retry_seconds = retry_seconds

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ready(self, agent: AgentRef) -> Sequence[Address]:
        slices, _ = await self._list_slices(agent)
        return ready_addresses(agent.name, slices.values())

    async def watch(self, agent: AgentRef) -> AsyncIterator[Sequence[Address]]:
        while True:
            try:
                slices, version = await self._list_slices(agent)
                yield ready_addresses(agent.name, slices.values())
                async for kind, obj in self._watch_slices(agent, version):
                    name = (obj.get("metadata") or {}).get("name", "")
                    if kind == "DELETED":
                        slices.pop(name, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        slices[name] = obj
                    else:
                        continue
                    yield ready_addresses(agent.name, slices.values())
            except (httpx.HTTPError, _WatchError, ValueError) as exc:
                log.warning("reading the EndpointSlices of %s failed (%s); again in %ss", agent, exc,
                            self._retry_seconds)
            await asyncio.sleep(self._retry_seconds)

    async def scale_to_zero_namespaces(self, name: str) -> Sequence[str]:
        response = await self._http.get(
            "/apis/omnia.altairalabs.ai/v1alpha1/agentruntimes", params={"fieldSelector": f"metadata.name={name}"}
        )
        response.raise_for_status()
        return sorted(
            item["metadata"]["namespace"] for item in response.json().get("items") or () if scales_to_zero(item)
        )

    async def _list_slices(self, agent: AgentRef) -> tuple[dict[str, Mapping[str, Any]], str]:
        response = await self._http.get(_slices_path(agent), params={"labelSelector": _selector(agent)})
        response.raise_for_status()
        body = response.json()
        slices = {item["metadata"]["name"]: item for item in body.get("items") or ()}
        return slices, str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch_slices(self, agent: AgentRef, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        params = {"labelSelector": _selector(agent), "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = httpx.Timeout(WATCH_SECONDS + 30.0, connect=10.0)
        async with self._http.stream("GET", _slices_path(agent), params=params, timeout=timeout) as response:
            if not response.is_success:
                await response.aread()
                raise _WatchError(f"{response.status_code} {response.text[:200]}")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    # 410 Gone and the like: list again.
                    raise _WatchError(str((event.get("object") or {}).get("message", "watch error")))
                yield str(event.get("type", "")), event.get("object") or {}


class _WatchError(Exception):
    pass


def ready_addresses(agent: str, slices: Iterable[Mapping[str, Any]]) -> tuple[Address, ...]:
    """The Ready endpoints of an agent Service's slices, the activator's own slice left out.

    An endpoint whose ``ready`` condition is absent counts as ready, as the
    EndpointSlice API tells consumers to read an unknown state.
    """
    found: set[Address] = set()
    for item in slices:
        if (item.get("metadata") or {}).get("name") == activator_slice_name(agent):
            continue
        port = _facade_port(item.get("ports") or ())
        if port is None:
            continue
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found.update(Address(host=address, port=port) for address in endpoint.get("addresses") or ())
    return tuple(sorted(found))


def scales_to_zero(agent: Mapping[str, Any]) -> bool:
    """Whether an AgentRuntime (as the API returns it) autoscales with minReplicas 0."""
    autoscaling = (agent.get("spec") or {}).get("autoscaling") or {}
    return bool(autoscaling.get("enabled")) and autoscaling.get("minReplicas", 1) == 0


def _facade_port(ports: Sequence[Mapping[str, Any]]) -> int | None:
    named = [port for port in ports if port.get("name") == FACADE_PORT_NAME]
    chosen = named or (list(ports) if len(ports) == 1 else [])
    return chosen[0].get("port") if chosen and chosen[0].get("port") else None


def _slices_path(agent: AgentRef) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{agent.namespace}/endpointslices"


def _selector(agent: AgentRef) -> str:
    return f"{SERVICE_NAME_LABEL}={agent.name}"
