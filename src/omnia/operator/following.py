"""Following single Secrets outside the namespaces the operator serves.

kopf watches the served namespaces only; the default session stores'
Secrets live in the operator's own (``sessionstores``). Following one needs
no more than ``list`` and ``watch`` on its name, which a Role can grant
with ``resourceNames``: the list and the watch are narrowed to the name by
a field selector, as the API server then requires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from omnia.operator import queueing
from omnia.operator.applying import ApiError, Expired, KubeClient
from omnia.operator.summaries import SecretSummary

log = logging.getLogger(__name__)


@dataclass
class Follower:
    """Keeps the summary of one Secret current: a list narrowed to its name, then a watch from there.

    ``on_change`` gets each new summary (None once the Secret is gone); the
    values are dropped at once. Coroutines on the operator's loop:
    :meth:`run` lists again after an expired watch and, with backoff, after
    any failure, until cancelled.
    """

    client: KubeClient
    namespace: str
    name: str
    on_change: Callable[[SecretSummary | None], None]
    backoff: queueing.Backoff[str] = field(default_factory=lambda: queueing.Backoff(base=1.0, cap=60.0))
    summary: SecretSummary | None = None
    synced: bool = False

    async def sync(self) -> str:
        """List once; returns the resourceVersion to watch from."""
        item, version = await self.client.list_one("v1", "Secret", namespace=self.namespace, name=self.name)
        self._seen(SecretSummary.from_body(item) if item is not None else None)
        return version

    async def run(self, *, resource_version: str | None = None) -> None:
        version = resource_version
        while True:
            try:
                if version is None:
                    version = await self.sync()
                async for type_, obj in self.client.watch_one("v1", "Secret", namespace=self.namespace,
                                                             name=self.name, resource_version=version):
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if type_ != "BOOKMARK":
                        self._seen(None if type_ == "DELETED" else SecretSummary.from_body(obj))
                self.backoff.reset(self.name)
            except Expired:
                version = None
            except (ApiError, httpx.HTTPError, ValueError) as exc:
                delay = self.backoff.next(self.name)
                log.warning("cannot follow Secret %s/%s (the operator needs list and watch on it there): %s; "
                            "again in %.0fs", self.namespace, self.name, exc, delay)
                version = None
                await asyncio.sleep(delay)

    def _seen(self, summary: SecretSummary | None) -> None:
        if self.synced and summary == self.summary:
            return
        self.summary, self.synced = summary, True
        self.on_change(summary)
