"""Header and environment values of tool handlers, and the Secrets behind them.

A ToolRegistry names secret values by reference (``secretRef``); the values
must never reach the rendered agent config, which the operator stores in a
ConfigMap. So each secret value gets an environment variable of the runtime
container, named after its handler and header (``OMNIA_TOOL_<HANDLER>_<HEADER>``,
or ``OMNIA_TOOL_<HANDLER>_ENV_<NAME>`` for the environment of an MCP stdio
server). The rendered config carries only that variable's name
(``valueFromEnv``); the pod fills the variable from a ``secretKeyRef`` and
``omnia run`` from the caller's environment or a Secret manifest, and the
runtime reads it when it builds the handler.

Pure functions: no Kubernetes, no process environment unless passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from omnia.api.v1alpha1 import NamedValue, ToolHandler, ToolRegistrySpec

ENV_PREFIX = "OMNIA_TOOL_"

ValueKind = Literal["header", "env"]


class CredentialError(ValueError):
    """A value cannot be had: its variable is unset, or two values claim one variable."""


def env_name(handler: str, name: str, *, kind: ValueKind) -> str:
    """The variable carrying one secret value, e.g. handler ``orders``, header
    ``Authorization`` → ``OMNIA_TOOL_ORDERS_AUTHORIZATION``.
    """
    middle = f"{handler}_{name}" if kind == "header" else f"{handler}_ENV_{name}"
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", middle.upper())


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable of the runtime container, filled from a Secret key."""

    env: str
    secret: str
    key: str
    handler: str
    field: str

    def env_var(self) -> dict:
        """The container's ``env`` entry, as the operator puts it in the Deployment."""
        return {"name": self.env, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": self.key}}}


def handler_secret_envs(handler: ToolHandler) -> list[SecretEnv]:
    """The secret values one handler needs, in spec order."""
    found = []
    for kind, field, values in _value_lists(handler):
        for value in values:
            if value.secret_ref is not None:
                found.append(
                    SecretEnv(
                        env=env_name(handler.name, value.name, kind=kind),
                        secret=value.secret_ref.name,
                        key=value.secret_ref.key,
                        handler=handler.name,
                        field=f"{field}[{value.name}].secretRef",
                    )
                )
    return found


def secret_envs(spec: ToolRegistrySpec) -> list[SecretEnv]:
    """Every secret value of a registry; raises ``CredentialError`` when two share a variable."""
    found = [env for handler in spec.handlers for env in handler_secret_envs(handler)]
    _check_unique(found)
    return found


def _check_unique(found: Iterable[SecretEnv]) -> None:
    claimed: dict[str, SecretEnv] = {}
    for env in found:
        other = claimed.setdefault(env.env, env)
        if other is not env:
            raise CredentialError(
                f"handler {env.handler!r} {env.field} and handler {other.handler!r} {other.field} "
                f"would share the environment variable {env.env}; rename a handler or a header"
            )


def _value_lists(handler: ToolHandler) -> list[tuple[ValueKind, str, Sequence[NamedValue]]]:
    block = getattr(handler, handler.type)
    lists: list[tuple[ValueKind, str, Sequence[NamedValue]]] = []
    if handler.type in ("http", "mcp", "openapi"):
        lists.append(("header", f"{handler.type}.headers", block.headers))
    if handler.type == "mcp":
        lists.append(("env", "mcp.env", block.env))
    return lists


def rendered_values(values: Sequence[NamedValue], *, handler: str, kind: ValueKind) -> list[dict]:
    """Values as the agent config carries them: literal, or the variable to read."""
    return [
        {"name": value.name, "value": value.value}
        if value.secret_ref is None
        else {"name": value.name, "valueFromEnv": env_name(handler, value.name, kind=kind)}
        for value in values
    ]


def resolve(values: Sequence[Mapping], env: Mapping[str, str], *, what: str) -> dict[str, str]:
    """Rendered values (see ``rendered_values``) with each variable read from ``env``."""
    resolved = {}
    for value in values:
        if "valueFromEnv" in value:
            variable = value["valueFromEnv"]
            if variable not in env:
                raise CredentialError(
                    f"{what} {value['name']}: the environment variable {variable} is not set "
                    "(it carries a Secret's value; see docs/tools.md)"
                )
            resolved[value["name"]] = env[variable]
        else:
            resolved[value["name"]] = value.get("value", "")
    return resolved
