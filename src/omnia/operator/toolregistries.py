"""Static validation of a ToolRegistry, as pure code.

The CRD schema already checks shapes; this checks what it cannot: that URLs
are absolute http(s) URLs, that JSON schemas are schemas, and that the
Secrets and ConfigMaps the handlers read exist with the keys named. Live
discovery (listing an MCP server's tools, reading an OpenAPI document) is
not done here; those handlers are reported valid but not yet discovered.

The agent controller runs the same validation, so an agent never starts on
a registry whose Secrets are missing: its pods could not start anyway.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
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
from omnia.operator.status import READY, Check, merge_conditions

ResourceKeys = Callable[[str], frozenset[str] | None]
"""Name → keys of a Secret or ConfigMap in the registry's namespace, None if absent."""


@dataclass(frozen=True)
class HandlerVerdict:
    name: str
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


def registry_status(
    previous: ToolRegistryStatus,
    *,
    verdicts: list[HandlerVerdict],
    generation: int | None,
    now: datetime.datetime,
) -> ToolRegistryStatus:
    old_handlers = {h.name: h for h in previous.handlers}
    handlers = []
    for verdict in verdicts:
        before = old_handlers.get(verdict.name)
        handlers.append(
            HandlerStatus(
                name=verdict.name,
                tool_count=len(verdict.tools),
                conditions=merge_conditions(
                    before.conditions if before else [], [verdict.check], now=now, generation=generation
                ),
            )
        )
    invalid = [v for v in verdicts if v.check.status == "False"]
    pending = [v.name for v in verdicts if v.check.status == "Unknown"]
    if invalid:
        problem = first_problem(verdicts)
        assert problem is not None
        ready = Check.failed(READY, problem.reason, problem.message)
        phase = "Failed" if len(invalid) == len(verdicts) else "Degraded"
    else:
        note = f"; not yet discovered: {', '.join(pending)}" if pending else ""
        ready = Check.passed(READY, "Validated", f"{len(verdicts)} handlers valid{note}")
        phase = "Ready"
    return ToolRegistryStatus(
        phase=phase,
        discovered_tools=[tool for verdict in verdicts for tool in verdict.tools],
        handlers=handlers,
        conditions=merge_conditions(previous.conditions, [ready], now=now, generation=generation),
        observed_generation=generation,
    )


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
        return HandlerVerdict(handler.name, Check.failed(READY, reason, message), [])
    if handler.type in ("http", "client"):
        tool = DiscoveredTool(name=handler.name, handler=handler.name, description=block.description)
        return HandlerVerdict(handler.name, Check.passed(READY, "Validated", "1 tool"), [tool])
    return HandlerVerdict(
        handler.name,
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
