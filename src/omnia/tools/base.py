"""The one shape every tool handler has, and the two ways a handler fails.

A *handler* is a source of tools: one HTTP endpoint, one MCP server, one
OpenAPI document. ``http.py``, ``mcp.py`` and ``openapi.py`` each define a
``Handler`` with the same methods, so the executor (retries, circuit
breakers, argument checks) and discovery never look inside one.

A call ends in one of two ways. The tool *answered*: the handler returns a
``ToolOutcome``, an error one too (HTTP 404, an MCP tool's own error), and
the model reads it. Or the tool's server gave *no answer* (refused
connection, HTTP 5xx, broken MCP session): the handler raises
``CallFailed``, which the executor may retry and counts against the
endpoint's circuit breaker. ``CallFailed.reached`` says whether the request
may have reached the server, because only a request that certainly did not
is safe to repeat whatever it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from omnia.agent.loop import ToolOutcome
from omnia.config import ToolConfig

TOOL_NAME_LENGTH = 64
_NOT_IN_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class CallFailed(Exception):
    """The tool's server gave no answer; ``reached`` is False only when the request never left."""

    def __init__(self, message: str, *, reached: bool) -> None:
        super().__init__(message)
        self.message = message
        self.reached = reached


class DiscoveryError(Exception):
    """A handler's tools could not be listed; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Found:
    """What one handler offers: its tools, and what it was asked for but could not give.

    ``missing`` lists names a filter (``mcp.tools``, ``openapi.operations``)
    asks for that the server does not offer; ``skipped`` explains tools left
    out because they cannot be called (e.g. an operation with a form body).
    """

    tools: tuple[ToolConfig, ...]
    missing: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


class Handler(Protocol):
    """A source of tools. Implementations: ``http.Handler``, ``mcp.Handler``, ``openapi.Handler``."""

    name: str

    def endpoint(self, tool: ToolConfig) -> str:
        """The server a call of ``tool`` goes to: the key of its circuit breaker."""
        ...

    def idempotent(self, tool: ToolConfig) -> bool:
        """Whether a call of ``tool`` may be repeated after it may have reached the server."""
        ...

    async def discover(self) -> Found:
        """List the tools, contacting the server; raises ``DiscoveryError``."""
        ...

    async def call(self, tool: ToolConfig, arguments: dict) -> ToolOutcome:
        """Call ``tool`` once; raises ``CallFailed`` when its server gives no answer.

        Not bounded in time here: the executor cancels a call that takes too long.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and processes."""
        ...


def tool_name(raw: str) -> str:
    """A name every model vendor accepts (``^[a-zA-Z0-9_-]{1,64}$``) for a server's tool name."""
    name = _NOT_IN_TOOL_NAME.sub("_", raw)[:TOOL_NAME_LENGTH]
    return name or "tool"
