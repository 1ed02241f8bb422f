"""The runtime's tools: what the model is offered, and who runs each call.

The rendered config lists one entry per handler. ``http`` and ``client``
entries are tools as they are. ``mcp`` and ``openapi`` entries are sources:
their tools are discovered when the runtime starts, each source on its own,
so one slow or dead server delays nobody. A source that cannot be reached is
tried again in the background, with growing pauses, until it answers; its
tools then join the list, and the next turn offers them. The runtime never
fails to start because a tool server is down.

Tools keep the order of their handlers in the registry; when two have one
name, the earlier one keeps it (discovery reports the conflict).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from omnia.agent.loop import ToolOutcome
from omnia.config import ToolConfig
from omnia.providers.base import ToolCall
from omnia.tools import discovery, egress
from omnia.tools.base import DiscoveryError, Handler
from omnia.tools.breakers import Breakers
from omnia.tools.executing import Executor, RetryPolicy

log = logging.getLogger(__name__)

SOURCE_TYPES = ("mcp", "openapi")
REDISCOVERY = RetryPolicy(base_delay=1.0, max_delay=30.0)


class Toolbox:
    """A ``ToolCatalog`` and ``ToolExecutor`` for one agent.

    ``start`` begins discovery; ``aclose`` stops it and closes connections
    and stdio servers. ``clients`` (made when not given, then closed here)
    send HTTP, OpenAPI and MCP requests, each under its tool's egress policy.
    """

    def __init__(
        self,
        tools: Sequence[ToolConfig],
        *,
        env: Mapping[str, str],
        clients: egress.Clients | None = None,
        breakers: Breakers | None = None,
        retry: RetryPolicy | None = None,
        rediscovery: RetryPolicy = REDISCOVERY,
        discovery_timeout: float = discovery.DISCOVERY_TIMEOUT_SECONDS,
    ) -> None:
        self._entries = tuple(tools)
        self._own_clients = clients is None
        self._clients = clients or egress.Clients()
        self._handlers: dict[str, Handler] = {
            entry.name: discovery.handler_for(entry, env=env, clients=self._clients, connect_timeout=discovery_timeout)
            for entry in self._entries
            if entry.type != "client"
        }
        self._found: dict[str, tuple[ToolConfig, ...]] = {}
        self.problems: dict[str, str] = {}
        self._rediscovery = rediscovery
        self._discovery_timeout = discovery_timeout
        self._tasks: list[asyncio.Task] = []
        self._executor = Executor(self._route, breakers=breakers, retry=retry)
        self._tools = self._merge()

    @property
    def breakers(self) -> Breakers:
        return self._executor.breakers

    def tools(self) -> tuple[ToolConfig, ...]:
        return self._tools

    async def execute(self, tool: ToolConfig, call: ToolCall) -> ToolOutcome:
        return await self._executor.execute(tool, call)

    def _route(self, tool: ToolConfig) -> Handler | None:
        if tool.type == "http":
            return self._handlers.get(tool.name)
        source = tool.handler.get("source")
        if tool.type in SOURCE_TYPES and source in self._found:
            return self._handlers.get(source)
        return None

    async def start(self, *, wait: float) -> None:
        """Start discovering every source; return after each one's first attempt, or after ``wait`` seconds.

        Discovery goes on in the background after this returns, for sources
        that failed or were still answering.
        """
        attempted = []
        for entry in self._entries:
            if entry.type in SOURCE_TYPES:
                first = asyncio.Event()
                attempted.append(asyncio.ensure_future(first.wait()))
                self._tasks.append(asyncio.create_task(self._discover_until_found(entry, first)))
        if not attempted:
            return
        try:
            await asyncio.wait(attempted, timeout=wait)
        finally:
            for waiter in attempted:
                waiter.cancel()

    async def _discover_until_found(self, entry: ToolConfig, first: asyncio.Event) -> None:
        handler = self._handlers[entry.name]
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self._discovery_timeout):
                    found = await handler.discover()
            except DiscoveryError as exc:
                self._failed(entry, f"{exc.reason}: {exc.message}")
            except TimeoutError:
                self._failed(entry, f"Timeout: no answer within {self._discovery_timeout:g}s")
            except Exception as exc:
                log.exception("discovering the tools of %s failed", entry.name)
                self._failed(entry, f"{type(exc).__name__}: {exc}")
            else:
                self._found[entry.name] = found.tools
                self.problems.pop(entry.name, None)
                self._tools = self._merge()
                log.info(
                    "tools discovered",
                    extra={"handler": entry.name, "tools": [tool.name for tool in found.tools]},
                )
                if found.missing:
                    log.warning("tools not offered by %s: %s", entry.name, ", ".join(found.missing))
                first.set()
                return
            first.set()
            await asyncio.sleep(self._rediscovery.delay(attempt))
            attempt += 1

    def _failed(self, entry: ToolConfig, problem: str) -> None:
        if self.problems.get(entry.name) != problem:
            log.warning("tools of %s not available yet, retrying: %s", entry.name, problem)
        self.problems[entry.name] = problem

    def _merge(self) -> tuple[ToolConfig, ...]:
        merged: dict[str, ToolConfig] = {}
        for entry in self._entries:
            offered = self._found.get(entry.name, ()) if entry.type in SOURCE_TYPES else (entry,)
            for tool in offered:
                if tool.name in merged:
                    log.warning("tool %s of %s left out: an earlier handler has that name", tool.name, entry.name)
                    continue
                merged[tool.name] = tool
        return tuple(merged.values())

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for handler in self._handlers.values():
            await handler.aclose()
        if self._own_clients:
            await self._clients.aclose()
