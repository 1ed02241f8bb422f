"""Following a few objects outside the namespaces the operator serves.

kopf watches the served namespaces only. Two things live elsewhere: the
default session stores' Secrets, in the operator's own namespace
(``sessionstores``), and the activator's EndpointSlices, in the activator's
(``routing``). Following them needs no more than ``list`` and ``watch`` on
them: a Secret by its name, which a Role can grant with ``resourceNames``
(the list and the watch are narrowed to the name by a field selector, as
the API server then requires); a Service's EndpointSlices by their
``kubernetes.io/service-name`` label.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from omnia.operator import queueing
from omnia.operator.applying import ApiError, Expired, KubeClient, Selector
from omnia.operator.summaries import SecretSummary

log = logging.getLogger(__name__)

S = TypeVar("S")


@dataclass
class Follower(Generic[S]):
    """Keeps a summary of each selected object current: a list, then a watch from there.

    ``summarise`` turns an object into what is kept of it (the object itself
    is dropped at once: a Secret's values never stay in memory);
    ``on_change`` gets every summary by object name whenever one changed.
    Coroutines on the operator's loop: :meth:`run` lists again after an
    expired watch and, with backoff, after any failure, until cancelled.
    """

    client: KubeClient
    api_version: str
    kind: str
    namespace: str
    selector: Selector
    summarise: Callable[[Mapping[str, Any]], S]
    on_change: Callable[[Mapping[str, S]], None]
    backoff: queueing.Backoff[str] = field(default_factory=lambda: queueing.Backoff(base=1.0, cap=60.0))
    summaries: dict[str, S] = field(default_factory=dict)
    """Object name → its summary."""
    synced: bool = False

    @classmethod
    def secret(cls, client: KubeClient, *, namespace: str, name: str,
               on_change: Callable[[SecretSummary | None], None]) -> Follower[SecretSummary]:
        """One Secret, by name; ``on_change`` gets its summary, None once it is gone."""
        return cls(client, "v1", "Secret", namespace, Selector.name(name), SecretSummary.from_body,
                   on_change=lambda summaries: on_change(summaries.get(name)))

    @property
    def what(self) -> str:
        selected = self.selector.field or self.selector.label
        return f"{self.kind}s {selected} in {self.namespace}"

    async def sync(self) -> str:
        """List once; returns the resourceVersion to watch from."""
        items, version = await self.client.list_selected(self.api_version, self.kind, namespace=self.namespace,
                                                         selector=self.selector)
        listed = {}
        for item in items:
            listed[str((item.get("metadata") or {}).get("name", ""))] = self.summarise(item)
        self._seen(listed)
        return version

    async def run(self, *, resource_version: str | None = None) -> None:
        version = resource_version
        while True:
            try:
                if version is None:
                    version = await self.sync()
                async for type_, obj in self.client.watch_selected(self.api_version, self.kind,
                                                                   namespace=self.namespace, selector=self.selector,
                                                                   resource_version=version):
                    metadata = obj.get("metadata") or {}
                    version = metadata.get("resourceVersion") or version
                    if type_ == "BOOKMARK":
                        continue
                    changed = dict(self.summaries)
                    name = str(metadata.get("name", ""))
                    if type_ == "DELETED":
                        changed.pop(name, None)
                    else:
                        changed[name] = self.summarise(obj)
                    self._seen(changed)
                self.backoff.reset(self.what)
            except Expired:
                version = None
            except (ApiError, httpx.HTTPError, ValueError) as exc:
                delay = self.backoff.next(self.what)
                log.warning("cannot follow %s (the operator needs list and watch on them there): %s; "
                            "again in %.0fs", self.what, exc, delay)
                version = None
                await asyncio.sleep(delay)

    def _seen(self, summaries: dict[str, S]) -> None:
        if self.synced and summaries == self.summaries:
            return
        self.summaries, self.synced = summaries, True
        self.on_change(summaries)
