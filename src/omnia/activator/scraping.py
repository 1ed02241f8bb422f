"""Reading the facades' open connections from their ``/metrics``.

The external scaler answers KEDA with the connections held here plus those
the agent's pods serve, so scaling out needs no Prometheus: each ready pod's
``/metrics`` is read with a short timeout and parsed with prometheus_client's
own text parser. A pod that does not answer in time counts as 0 (it is
starting or stopping) and is logged, never an error for KEDA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

from omnia.activator.backends import Address

logger = logging.getLogger(__name__)

METRIC = "omnia_active_connections"
"""The facade's gauge of open WebSocket connections (``facade.metrics``)."""
SCRAPE_TIMEOUT_SECONDS = 1.0


def active_connections(text: str, *, agent: str) -> float:
    """The ``omnia_active_connections`` of ``agent`` in one exposition; 0 when absent."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if sample.name == METRIC and sample.labels.get("agent", agent) == agent:
                total += sample.value
    return total


class Scraper:
    """Reads pods' ``/metrics`` through ``http`` (an ``httpx.AsyncClient``, injectable)."""

    def __init__(self, http: httpx.AsyncClient | None = None, *,
                 timeout_seconds: float = SCRAPE_TIMEOUT_SECONDS) -> None:
        self._http = http or httpx.AsyncClient(timeout=timeout_seconds, trust_env=False)
        self._timeout = timeout_seconds

    async def aclose(self) -> None:
        await self._http.aclose()

    async def active_connections(self, addresses: Sequence[Address], *, agent: str) -> float:
        """The sum over ``addresses`` of their facades' open connections; reads them concurrently."""
        counts = await asyncio.gather(*(self._one(address, agent=agent) for address in addresses))
        return sum(counts)

    async def _one(self, address: Address, *, agent: str) -> float:
        try:
            response = await self._http.get(f"http://{address}/metrics", timeout=self._timeout)
            response.raise_for_status()
            return active_connections(response.text, agent=agent)
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("reading the metrics of %s (agent %s) failed: %s", address, agent, exc)
            return 0.0
