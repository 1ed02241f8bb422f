"""``mcp`` tools: every tool of a Model Context Protocol server.

One connection per server, opened on first use and shared by all calls
(MCP multiplexes requests), reopened after it broke. For ``stdio`` the
connection *is* the server: a subprocess of the runtime, started with only
the safe part of the runtime's environment plus the handler's ``env``, in
the handler's working directory.

Over streamable HTTP and SSE, the SDK's HTTP client is one of
``egress.Clients``: each connection it opens is checked against the
registry's egress policy, and the SDK itself follows redirects within the
server's origin only. A denial is an answer (the model reads it; nothing is
retried), not a failure of the server.

The SDK's ``Client`` is an anyio context manager that must be entered and
left by the same task, so each connection is owned by a task of its own that
holds it open until it is closed; calls from any task use it meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx2
from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from omnia.agent.loop import ToolOutcome
from omnia.config import ToolConfig
from omnia.tools import credentials, egress
from omnia.tools.base import CallFailed, DiscoveryError, Found, tool_name

# JSON-RPC errors by which a live server refuses a call it understood: answers, not failures.
REFUSALS = frozenset({types.INVALID_PARAMS, types.METHOD_NOT_FOUND})
CONNECT_TIMEOUT_SECONDS = 15.0
CLOSE_TIMEOUT_SECONDS = 5.0
MAX_LIST_PAGES = 100
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)



def stdio_command(command: str | None) -> str | None:
    """``python`` and ``python3`` mean the runtime's own interpreter.

    A stdio MCP server written in Python needs the ``mcp`` package, which the
    runtime's environment has and the first ``python`` on ``PATH`` may not.
    """
    if command in ("python", "python3"):
        return sys.executable
    return command

class Handler:
    """One MCP server; the source's block is the ToolRegistry's ``mcp`` block, rendered."""

    def __init__(
        self,
        source: ToolConfig,
        *,
        env: Mapping[str, str],
        clients: egress.Clients | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.name = source.name
        self.source = source
        block = source.handler
        self.transport: str = block.get("transport", "streamable-http")
        self.url: str | None = block.get("url")
        self.command: str | None = stdio_command(block.get("command"))
        self.args: list[str] = list(block.get("args", ()))
        self.working_dir: str | None = block.get("workingDir")
        self.only = tuple(block.get("tools", ()))
        self.connect_timeout = connect_timeout
        self.egress = egress.Policy.from_block(block.get("egress"))
        self._clients = clients or egress.Clients()
        self._headers: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._credential_error: str | None = None
        try:
            self._headers = credentials.resolve(block.get("headers", ()), env, what="header")
            self._env = credentials.resolve(block.get("env", ()), env, what="environment variable")
        except credentials.CredentialError as exc:
            self._credential_error = str(exc)
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    def endpoint(self, tool: ToolConfig) -> str:
        return f"mcp server {self.name}"

    def idempotent(self, tool: ToolConfig) -> bool:
        return bool(tool.handler.get("idempotent"))

    async def discover(self) -> Found:
        if self._credential_error is not None:
            raise DiscoveryError("SecretNotFound", self._credential_error)
        try:
            connection = await self._connected()
        except egress.EgressDenied as exc:
            raise DiscoveryError("EgressDenied", exc.message) from None
        except CallFailed as exc:
            raise DiscoveryError("Unreachable", exc.message) from None
        listed: list[types.Tool] = []
        cursor = None
        try:
            for _ in range(MAX_LIST_PAGES):
                page = await connection.client.list_tools(cursor=cursor)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        except Exception as exc:
            await self._drop(connection)
            raise DiscoveryError("ServerError", f"listing the tools failed: {describe(exc)}") from None
        return self._found(listed)

    def _found(self, listed: list[types.Tool]) -> Found:
        offered = {tool.name for tool in listed}
        missing = tuple(name for name in self.only if name not in offered)
        chosen = [tool for tool in listed if not self.only or tool.name in self.only]
        return Found(tools=tuple(self._tool_config(tool) for tool in chosen), missing=missing)

    def _tool_config(self, tool: types.Tool) -> ToolConfig:
        hints = tool.annotations
        idempotent = hints is not None and bool(hints.read_only_hint or hints.idempotent_hint)
        return ToolConfig(
            name=tool_name(tool.name),
            type="mcp",
            description=tool.description or tool.title or "",
            parameters=tool.input_schema or {"type": "object", "properties": {}},
            require_approval=self.source.require_approval,
            timeout_seconds=self.source.timeout_seconds,
            retries=self.source.retries,
            handler={"source": self.name, "tool": tool.name, "idempotent": idempotent},
        )

    async def call(self, tool: ToolConfig, arguments: dict) -> ToolOutcome:
        if self._credential_error is not None:
            return ToolOutcome(f"tool {tool.name!r} is not configured: {self._credential_error}", is_error=True)
        try:
            connection = await self._connected()
        except egress.EgressDenied as exc:
            return ToolOutcome(f"tool {tool.name!r} was not called: {exc.message}", is_error=True)
        try:
            result = await connection.client.call_tool(tool.handler["tool"], arguments)
        except MCPError as exc:
            if exc.code in REFUSALS:
                return ToolOutcome(f"the MCP server refused the call: {exc.message}", is_error=True)
            await self._drop(connection)
            raise CallFailed(f"{self.endpoint(tool)}: {describe(exc)}", reached=True) from None
        except Exception as exc:
            await self._drop(connection)
            denied = egress.denial_in(exc)
            if denied is not None:
                return ToolOutcome(f"tool {tool.name!r} failed: {denied.message}", is_error=True)
            raise CallFailed(f"{self.endpoint(tool)}: {describe(exc)}", reached=True) from None
        return ToolOutcome(result_text(result), is_error=bool(result.is_error))

    async def _connected(self) -> _Connection:
        """The open connection, opened now if need be; one connection attempt at a time.

        Raises ``CallFailed`` when connecting fails, ``EgressDenied`` when the policy forbids it.
        """
        async with self._connecting:
            connection = self._connection
            if connection is None or not connection.alive:
                if connection is not None:
                    await connection.close()
                self._connection = None
                connection = _Connection(self._open)
                await connection.start(timeout=self.connect_timeout, what=self.endpoint(self.source))
                self._connection = connection
            return connection

    async def _drop(self, connection: _Connection) -> None:
        """Close a connection that failed, unless another call replaced it already."""
        if self._connection is connection:
            self._connection = None
        await connection.close()

    def _open(self) -> AbstractAsyncContextManager[Client]:
        if self.transport == "stdio":
            assert self.command is not None
            parameters = StdioServerParameters(
                command=self.command, args=self.args, env=self._env or None, cwd=self.working_dir
            )
            return Client(parameters, cache=None)
        assert self.url is not None
        if self.transport == "sse":

            def checked_client(headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
                return self._clients.mcp_client(self.egress, headers=headers, timeout=timeout)

            return Client(
                sse_client(self.url, headers=self._headers, httpx_client_factory=checked_client), cache=None
            )
        return self._streamable_http(self.url)

    @asynccontextmanager
    async def _streamable_http(self, url: str) -> AsyncIterator[Client]:
        http_client = self._clients.mcp_client(self.egress, headers=self._headers, timeout=HTTP_TIMEOUT)
        async with http_client:
            async with Client(streamable_http_client(url, http_client=http_client), cache=None) as client:
                yield client

    async def aclose(self) -> None:
        """Close the connection (and stop a stdio server)."""
        if self._connection is not None:
            await self._drop(self._connection)


class _Connection:
    """A client held open by a task of its own until ``close``."""

    def __init__(self, open_client: Any) -> None:
        self._open = open_client
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.client: Client = None  # type: ignore[assignment]  # set before start() returns

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, *, timeout: float, what: str) -> None:
        """Connect; raises ``CallFailed`` (nothing was sent) when that fails or takes too long,
        ``EgressDenied`` when the egress policy forbids the connection.

        Cancelling the caller cancels the attempt.
        """
        self._task = asyncio.create_task(self._hold())
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({self._task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._stop()
            raise
        finally:
            ready.cancel()
        if self._ready.is_set() and self.alive:
            return
        if self._task.done():
            error = self._task.exception() if not self._task.cancelled() else None
            denied = egress.denial_in(error)
            if denied is not None:
                raise denied
            raise CallFailed(f"cannot connect to {what}: {describe(error)}", reached=False)
        await self._stop()
        raise CallFailed(f"cannot connect to {what}: no handshake within {timeout:g}s", reached=False)

    async def _hold(self) -> None:
        async with self._open() as client:
            self.client = client
            self._ready.set()
            await self._closing.wait()

    async def close(self) -> None:
        self._closing.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=CLOSE_TIMEOUT_SECONDS)
        if not done:
            await self._stop()
        elif not self._task.cancelled():
            self._task.exception()

    async def _stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def describe(error: BaseException | None) -> str:
    """A one-line account of an error, looking inside anyio's exception groups."""
    if error is None:
        return "the connection closed"
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def result_text(result: types.CallToolResult) -> str:
    """What the model reads of a tool's result: its text, and a note for anything else."""
    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, (types.ImageContent, types.AudioContent)):
            parts.append(f"[{block.type} {block.mime_type}, not shown]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if text is not None else f"[resource {resource.uri}, not shown]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}, not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)
