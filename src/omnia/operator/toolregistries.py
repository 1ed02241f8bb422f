"""A ToolRegistry's status, as pure code: static validation and live discovery merged.

Static validation checks what the CRD schema cannot: that URLs are absolute
http(s) URLs, that JSON schemas are schemas, and that the Secrets and
ConfigMaps the handlers read exist with the keys named. The agent controller
runs it too, so an agent never starts on a registry whose Secrets are
missing: its pods could not start anyway.

Live discovery (``omnia.tools.discover``: listing an MCP server's tools,
reading an OpenAPI document, probing an HTTP endpoint) is done by the
reconciler; :func:`registry_status` merges its result with the static
verdicts into the status. Two rules shape the merge:

- a handler whose server does not answer keeps the tools it had while the
  spec is unchanged (its condition says it is unreachable): an outage of a
  tool server must not roll every agent using it;
- each discovered handler carries ``toolsHash``, a digest of its tools with
  their input schemas; the agents' config hash covers these digests (see
  :func:`tools_digest`), so a server that changes its tools rolls the agents.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import jsonschema

from omnia.api.v1alpha1 import (
    DiscoveredTool,
    HandlerStatus,
    ToolHandler,
    ToolRegistry,
    ToolRegistryStatus,
)
from omnia.config import ToolConfig
from omnia.operator import hashing, status
from omnia.operator.status import READY, Check, merge_conditions
from omnia.tools import Discovery

ResourceKeys = Callable[[str], frozenset[str] | None]
"""Name → keys of a Secret or ConfigMap in the registry's namespace, None if absent."""


@dataclass(frozen=True)
class HandlerVerdict:
    name: str
    type: str
    check: Check
    tools: list[DiscoveredTool]


def validate(registry: ToolRegistry, *, secret_keys: ResourceKeys, config_map_keys: ResourceKeys) -> list[HandlerVerdict]:
    return [
        _handler(handler, secret_keys=secret_keys, config_map_keys=config_map_keys)
        for handler in registry.spec.handlers
    ]


def first_problem(verdicts: list[HandlerVerdict]) -> Check | None:
    """The first invalid handler's check, named after its handler."""
    for verdict in verdicts:
        if verdict.check.status == "False":
            return Check.failed(
                verdict.check.type, verdict.check.reason, f"handler {verdict.name!r}: {verdict.check.message}"
            )
    return None


DISCOVERED_TYPES = ("mcp", "openapi")
"""Handler types whose tools come from their server, not from the spec."""

# What status.discoveredTools lists of one handler: a server may offer
# thousands of tools, and a status over the API server's request bound
# (3 MiB; etcd's 1.5 MiB) is refused whole. The handler's toolCount and
# toolsHash cover every tool.
MAX_LISTED_TOOLS = 100
MAX_LISTED_DESCRIPTION_CHARS = 200


def _listed(tools: list[DiscoveredTool]) -> list[DiscoveredTool]:
    return [
        tool
        if tool.description is None or len(tool.description) <= MAX_LISTED_DESCRIPTION_CHARS
        else tool.model_copy(update={"description": tool.description[: MAX_LISTED_DESCRIPTION_CHARS - 1] + "…"})
        for tool in tools[:MAX_LISTED_TOOLS]
    ]


def registry_status(
    previous: ToolRegistryStatus,
    *,
    verdicts: list[HandlerVerdict],
    discovery: Discovery | None,
    generation: int | None,
    now: datetime.datetime,
) -> ToolRegistryStatus:
    """The status after validation and, when given, discovery (without it: static verdicts only)."""
    spec_unchanged = previous.observed_generation is not None and previous.observed_generation == generation
    old_handlers = {h.name: h for h in previous.handlers}
    found = {result.name: result for result in discovery.handlers} if discovery is not None else {}
    handlers, tools, checks = [], [], []
    total = 0
    for verdict in verdicts:
        before = old_handlers.get(verdict.name)
        check, handler_tools, tools_hash = verdict.check, verdict.tools, None
        count = len(handler_tools)
        result = found.get(verdict.name)
        if verdict.check.status != "False" and result is not None:
            check = Check(READY, result.status, result.reason, result.message)
            handler_tools = [DiscoveredTool(name=t.name, handler=verdict.name, description=t.description or None)
                             for t in result.tools[:MAX_LISTED_TOOLS]]
            count = len(result.tools)
            if verdict.type in DISCOVERED_TYPES and result.tools:
                tools_hash = _tools_hash(result.tools)
            if result.status == "False" and not result.tools and spec_unchanged and before is not None:
                # Unreachable for now: the agents keep the tools they have.
                handler_tools = [t for t in previous.discovered_tools if t.handler == verdict.name]
                count = before.tool_count
                tools_hash = before.tools_hash
        total += count
        handlers.append(
            HandlerStatus(
                name=verdict.name,
                tool_count=count,
                tools_hash=tools_hash,
                conditions=merge_conditions(
                    before.conditions if before else [], [check], now=now, generation=generation
                ),
            )
        )
        tools += _listed(handler_tools)
        checks.append((verdict.name, check))
    failed = [(name, check) for name, check in checks if check.status == "False"]
    if failed:
        name, check = failed[0]
        ready = Check.failed(READY, check.reason, f"handler {name!r}: {check.message}")
        phase = "Failed" if len(failed) == len(checks) else "Degraded"
    else:
        unknown = [f"{name} ({check.reason})" for name, check in checks if check.status == "Unknown"]
        note = f"; not discovered by the operator: {', '.join(unknown)}" if unknown else ""
        reason = "Discovered" if discovery is not None else "Validated"
        ready = Check.passed(READY, reason, f"{total} tools from {len(checks)} handlers{note}")
        phase = "Ready"
    return ToolRegistryStatus(
        phase=phase,
        discovered_tools=tools,
        handlers=handlers,
        conditions=merge_conditions(previous.conditions, [ready], now=now, generation=generation),
        observed_generation=generation,
    )


def handler_events(previous: ToolRegistryStatus, current: ToolRegistryStatus) -> list[tuple[str, str, str]]:
    """The Events (type, reason, message) the handlers' condition changes deserve, named after the handler."""
    old = {h.name: h.conditions for h in previous.handlers}
    return [
        (type_, reason, f"handler {handler.name!r}: {message}")
        for handler in current.handlers
        for type_, reason, message in status.events(old.get(handler.name, []), handler.conditions)
    ]


def tools_digest(registry_status: ToolRegistryStatus) -> str | None:
    """What an agent's config hash covers of its registry's discovery: the handlers' ``toolsHash``.

    None when no handler has discovered tools, so that agents on registries
    without MCP or OpenAPI handlers keep the hash they had.
    """
    hashes = {h.name: h.tools_hash for h in registry_status.handlers if h.tools_hash}
    return hashing.digest(hashes) if hashes else None


def _tools_hash(tools: Sequence[ToolConfig]) -> str:
    return hashing.digest([[t.name, t.description, t.parameters] for t in tools])


def _handler(handler: ToolHandler, *, secret_keys: ResourceKeys, config_map_keys: ResourceKeys) -> HandlerVerdict:
    block = getattr(handler, handler.type)
    problems: list[tuple[str, str]] = []
    if handler.type == "http":
        problems += _url(block.url, "http.url", templated=True)
        problems += _schema(block.arguments_schema, "http.argumentsSchema")
    elif handler.type == "mcp" and block.url is not None:
        problems += _url(block.url, "mcp.url")
    elif handler.type == "openapi":
        if block.spec_url is not None:
            problems += _url(block.spec_url, "openapi.specURL")
        if block.base_url is not None:
            problems += _url(block.base_url, "openapi.baseURL")
        if block.config_map_ref is not None:
            ref = block.config_map_ref
            problems += _key(config_map_keys(ref.name), "ConfigMap", ref.name, ref.key, "openapi.configMapRef")
    elif handler.type == "client":
        problems += _schema(block.parameters_schema, "client.parametersSchema")
    for label in ("headers", "env"):
        for index, item in enumerate(getattr(block, label, [])):
            if item.secret_ref is not None:
                ref = item.secret_ref
                where = f"{handler.type}.{label}[{index}].secretRef"
                problems += _key(secret_keys(ref.name), "Secret", ref.name, ref.key, where)

    if problems:
        reason, message = problems[0]
        return HandlerVerdict(handler.name, handler.type, Check.failed(READY, reason, message), [])
    if handler.type in ("http", "client"):
        tool = DiscoveredTool(name=handler.name, handler=handler.name, description=block.description)
        return HandlerVerdict(handler.name, handler.type, Check.passed(READY, "Validated", "1 tool"), [tool])
    return HandlerVerdict(
        handler.name,
        handler.type,
        Check(READY, "Unknown", "DiscoveryPending", f"the {handler.type} handler is valid; its tools are not discovered yet"),
        [],
    )


def _url(url: str, where: str, *, templated: bool = False) -> list[tuple[str, str]]:
    text = re.sub(r"\{\{.*?\}\}", "x", url) if templated else url
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return [("InvalidURL", f"{where}: {url!r} is not a valid URL: {exc}")]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [("InvalidURL", f"{where}: {url!r} is not an absolute http(s) URL")]
    return []


def _schema(schema: dict | None, where: str) -> list[tuple[str, str]]:
    if schema is None:
        return []
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [("InvalidSchema", f"{where}: not a valid JSON schema: {exc.message}")]
    if schema.get("type", "object") != "object":
        return [("InvalidSchema", f"{where}: tool arguments must be a JSON object (type: object)")]
    return []


def _key(keys: frozenset[str] | None, kind: str, name: str, key: str, where: str) -> list[tuple[str, str]]:
    if keys is None:
        return [(f"{kind}NotFound", f"{where}: {kind} {name!r} not found")]
    if key not in keys:
        return [(f"{kind}KeyNotFound", f"{where}: {kind} {name!r} has no key {key!r}")]
    return []
