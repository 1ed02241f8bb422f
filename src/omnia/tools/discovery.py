"""Discovering a ToolRegistry's tools for real, for its status.

``discover`` takes a registry's spec and the Secrets and ConfigMaps it
references, and asks every handler for its tools the way the runtime will:
it lists an MCP server's tools over the SDK client, reads and converts an
OpenAPI document, and probes an HTTP tool's server (any HTTP answer proves
it is there). The result holds the tools the model would see and, per
handler, a ``Ready`` condition with a CamelCase reason and a message for
``status.handlers[]``. Nothing here talks to Kubernetes: the caller fetches
the Secrets and ConfigMaps and writes the status.

``stdio`` MCP servers are commands of the agent's runtime image; they are
not run here unless the caller says so (``run_commands``), since an
operator must not execute commands taken from a user's manifest.

``handler_for`` builds the handler of one rendered tool entry; the runtime's
``Toolbox`` uses it too, so discovery and runtime cannot disagree, and both
reach servers under the registry's egress policy (``egress``): a server the
runtime may not reach is not reported reachable either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from omnia import rendering
from omnia.api.v1alpha1 import DiscoveredTool, EgressPolicy, ToolHandler, ToolRegistrySpec
from omnia.config import ToolConfig
from omnia.tools import credentials, egress, http, mcp, openapi
from omnia.tools.base import DiscoveryError, Found, Handler

DISCOVERY_TIMEOUT_SECONDS = 20.0

Status = Literal["True", "False", "Unknown"]


def handler_for(
    tool: ToolConfig,
    *,
    env: Mapping[str, str],
    clients: egress.Clients,
    connect_timeout: float = mcp.CONNECT_TIMEOUT_SECONDS,
) -> Handler:
    """The handler of a rendered ``http`` tool, or of an ``mcp`` or ``openapi`` source.

    Its requests go through ``clients``, under the entry's egress policy.
    """
    policy = egress.Policy.from_block(tool.handler.get("egress"))
    if tool.type == "http":
        return http.Handler(tool, env=env, client=clients.get(policy))
    if tool.type == "mcp":
        return mcp.Handler(tool, env=env, clients=clients, connect_timeout=connect_timeout)
    if tool.type == "openapi":
        return openapi.Handler(tool, env=env, client=clients.get(policy))
    raise ValueError(f"{tool.type} tools have no server-side handler")


@dataclass(frozen=True)
class HandlerResult:
    """What discovery found for one handler: its condition and its tools."""

    name: str
    status: Status
    reason: str
    message: str
    tools: tuple[ToolConfig, ...] = ()

    def condition(self) -> dict[str, str]:
        """The handler's ``Ready`` condition, without ``lastTransitionTime`` (the caller keeps time)."""
        return {"type": "Ready", "status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Discovery:
    """Every handler's result, in spec order."""

    handlers: tuple[HandlerResult, ...]

    @property
    def tools(self) -> tuple[ToolConfig, ...]:
        return tuple(tool for result in self.handlers for tool in result.tools)

    def discovered_tools(self) -> list[DiscoveredTool]:
        """``status.discoveredTools``."""
        return [
            DiscoveredTool(name=tool.name, handler=result.name, description=tool.description or None)
            for result in self.handlers
            for tool in result.tools
        ]

    @property
    def phase(self) -> Literal["Ready", "Degraded", "Failed"]:
        """``Ready`` when no handler failed, ``Failed`` when all did, else ``Degraded``."""
        failed = sum(result.status == "False" for result in self.handlers)
        if failed == 0:
            return "Ready"
        return "Failed" if failed == len(self.handlers) else "Degraded"


async def discover(
    spec: ToolRegistrySpec,
    *,
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
    client: httpx.AsyncClient | None = None,
    timeout: float = DISCOVERY_TIMEOUT_SECONDS,
    run_commands: bool = False,
) -> Discovery:
    """Discover every handler of ``spec``, concurrently, each bounded by ``timeout`` seconds.

    ``secrets`` and ``config_maps`` map a name to the object's (decoded)
    data. HTTP and OpenAPI requests go through clients that enforce the
    registry's egress policy; ``client``, when given, is used as it is
    instead (a test seam: its transport decides where requests go). Never
    raises for a handler's failure: that is in its result.
    """
    clients = egress.Clients(timeout=timeout, shared=client)
    try:
        results = await asyncio.gather(
            *(
                _discover_handler(
                    handler,
                    egress_spec=spec.egress,
                    secrets=secrets,
                    config_maps=config_maps,
                    clients=clients,
                    timeout=timeout,
                    run_commands=run_commands,
                )
                for handler in spec.handlers
            )
        )
    finally:
        await clients.aclose()
    return Discovery(handlers=tuple(unique_names(results)))


async def _discover_handler(
    handler: ToolHandler,
    *,
    egress_spec: EgressPolicy,
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
    clients: egress.Clients,
    timeout: float,
    run_commands: bool,
) -> HandlerResult:
    name = handler.name
    if handler.type == "client":
        return HandlerResult(name, "True", "ClientSide", "called by the connected client", (_client_tool(handler),))
    if handler.type == "mcp" and handler.mcp.transport == "stdio" and not run_commands:
        return HandlerResult(
            name, "Unknown", "DiscoveredByRuntime",
            "a stdio server runs in the agent's runtime container, which lists its tools at start-up",
        )
    try:
        tool = rendering.tool_config(handler, config_maps=config_maps, egress=egress_spec)
    except rendering.RenderError as exc:
        return HandlerResult(name, "False", "ConfigMapNotFound", str(exc))
    env: dict[str, str] = {}
    for needed in credentials.handler_secret_envs(handler):
        value = secrets.get(needed.secret, {}).get(needed.key)
        if value is None:
            return HandlerResult(
                name, "False", "SecretNotFound",
                f"Secret {needed.secret!r} key {needed.key!r} not found ({handler.type}: {needed.field})",
            )
        env[needed.env] = value
    if handler.type == "http":
        problem = _http_schema_problem(tool)
        if problem:
            return HandlerResult(name, "False", "InvalidSchema", problem)
    source = handler_for(tool, env=env, clients=clients, connect_timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            found = await source.discover()
    except DiscoveryError as exc:
        return HandlerResult(name, "False", exc.reason, exc.message)
    except TimeoutError:
        return HandlerResult(name, "False", "Timeout", f"no answer within {timeout:g}s")
    finally:
        await source.aclose()
    return _result(handler, found)


def _client_tool(handler: ToolHandler) -> ToolConfig:
    return rendering.tool_config(handler, config_maps={})


def _http_schema_problem(tool: ToolConfig) -> str | None:
    schema = tool.parameters
    problem = schema_problem(schema)
    if problem:
        return f"argumentsSchema: {problem}"
    declared = schema.get("properties")
    if isinstance(declared, dict):
        unknown = [name for name in http.placeholders(tool.handler["url"]) if name not in declared]
        if unknown:
            return f"the URL uses arguments the argumentsSchema does not declare: {', '.join(unknown)}"
    return None


def schema_problem(schema: dict) -> str | None:
    """Why ``schema`` is not a valid JSON schema, or None."""
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None


# How many of the tools a handler leaves out its message names, and how much of each reason.
MAX_NOTES = 10
MAX_NOTE_CHARS = 300


def _result(handler: ToolHandler, found: Found) -> HandlerResult:
    usable, notes = [], list(found.skipped)
    for tool in found.tools:
        problem = schema_problem(tool.parameters)
        if problem:
            notes.append(f"{tool.name}: its input schema is invalid ({problem})")
        else:
            usable.append(tool)
    count = f"{len(usable)} tool{'s' if len(usable) != 1 else ''}"
    if handler.type == "http":
        count = "the server answers"
    if found.missing:
        asked = "tools" if handler.type == "mcp" else "operations"
        message = f"{count}; not offered by the server: {', '.join(found.missing)}"
        status, reason = "False", f"{asked.capitalize()}NotFound"
    else:
        message, status, reason = count, "True", "Reachable" if handler.type == "http" else "Discovered"
    if notes:
        # A document may leave out thousands; the status holds a message for each handler.
        shown = [note if len(note) <= MAX_NOTE_CHARS else note[: MAX_NOTE_CHARS - 1] + "…" for note in notes[:MAX_NOTES]]
        more = f"; and {len(notes) - MAX_NOTES} more" if len(notes) > MAX_NOTES else ""
        message += "; left out: " + "; ".join(shown) + more
    return HandlerResult(handler.name, status, reason, message, tuple(usable))


def unique_names(results: Sequence[HandlerResult]) -> list[HandlerResult]:
    """Drop tools whose name an earlier handler (in spec order) already offers.

    The runtime does the same, so the model never sees two tools of one name.
    """
    seen: dict[str, str] = {}
    unique = []
    for result in results:
        kept, clashes = [], []
        for tool in result.tools:
            owner = seen.get(tool.name)
            if owner is None:
                seen[tool.name] = result.name
                kept.append(tool)
            else:
                clashes.append(f"{tool.name} (offered by {owner} too)")
        if clashes:
            result = HandlerResult(
                result.name, "False", "ToolNameConflict",
                f"{result.message}; left out, as an earlier handler has a tool of that name: {', '.join(clashes)}",
                tuple(kept),
            )
        unique.append(result)
    return unique
