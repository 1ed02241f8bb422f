"""ToolRegistry: the tools agents may call, grouped by handler."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from omnia.api.v1alpha1.common import (
    API_VERSION,
    ApiModel,
    ConfigMapKeySelector,
    Conditions,
    JSONObject,
    ObjectMeta,
    Resource,
    Rule,
    SecretKeySelector,
    StatusModel,
    conditions_field,
    defaults_of,
    observed_generation_field,
)

HANDLER_TYPES = ("http", "mcp", "openapi", "client")
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class NamedValue(ApiModel):
    """A header or environment variable: a literal value or one read from a Secret."""

    validation_rules = (
        Rule(
            cel="has(self.value) != has(self.secretRef)",
            message="set exactly one of value and secretRef",
            check=lambda item: (item.value is None) != (item.secret_ref is None),
        ),
    )

    name: str = Field(min_length=1, description="Name of the header or variable.")
    value: str | None = Field(default=None, description="Literal value.")
    secret_ref: SecretKeySelector | None = Field(default=None, description="Secret key holding the value.")


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
# A placeholder before the path: in the scheme or the host, where the tool's secrets go. (Whether the
# URL is absolute is the operator's check, reported in the handler's condition.)
_PLACEHOLDER_IN_ORIGIN = r"^[^/?#]*//[^/?#]*[{][{]"


class HttpHandler(ApiModel):
    """A single tool backed by an HTTP endpoint."""

    validation_rules = (
        Rule(
            cel=f"!self.url.matches('{_PLACEHOLDER_IN_ORIGIN}')",
            message="url: {{ }} placeholders may stand in the path and the query, not in the scheme or host",
            check=lambda http: re.search(_PLACEHOLDER_IN_ORIGIN, http.url) is None,
        ),
    )

    method: HttpMethod = Field(default="POST", description="HTTP method.")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="URL template; {{ argument }} placeholders in the path and query are filled from the call's "
        "arguments (URL-encoded; an argument stays in its path segment). Remaining arguments are sent as the JSON "
        "body (or query for GET and DELETE).",
    )
    headers: list[NamedValue] = Field(
        default_factory=list,
        description="Request headers, e.g. Authorization from a Secret.",
    )
    description: str | None = Field(default=None, description="What the tool does, shown to the model.")
    arguments_schema: JSONObject | None = Field(
        default=None, description="JSON schema of the tool's arguments, shown to the model and checked before calls."
    )


McpTransport = Literal["streamable-http", "sse", "stdio"]


class McpHandler(ApiModel):
    """Tools served by a Model Context Protocol server."""

    validation_rules = (
        Rule(
            cel="self.transport == 'stdio' ? has(self.command) && !has(self.url) : has(self.url) && !has(self.command)",
            message="transport stdio needs command (and no url); streamable-http and sse need url (and no command)",
            check=lambda mcp: (
                mcp.command is not None and mcp.url is None
                if mcp.transport == "stdio"
                else mcp.url is not None and mcp.command is None
            ),
        ),
    )

    transport: McpTransport = Field(default="streamable-http", description="How to reach the server.")
    url: str | None = Field(default=None, description="Server URL for streamable-http and sse.")
    headers: list[NamedValue] = Field(
        default_factory=list,
        description="Request headers for streamable-http and sse.",
    )
    command: str | None = Field(
        default=None,
        description="Executable started in the runtime container, for stdio.",
    )
    args: list[str] = Field(default_factory=list, description="Arguments of the command, for stdio.")
    env: list[NamedValue] = Field(default_factory=list, description="Environment of the command, for stdio.")
    tools: list[str] = Field(
        default_factory=list, description="Names of the server's tools to expose; empty exposes all of them."
    )


class OpenApiHandler(ApiModel):
    """Tools generated from the operations of an OpenAPI document."""

    validation_rules = (
        Rule(
            cel="has(self.specURL) != has(self.configMapRef)",
            message="set exactly one of specURL and configMapRef",
            check=lambda openapi: (openapi.spec_url is None) != (openapi.config_map_ref is None),
        ),
    )

    spec_url: str | None = Field(default=None, alias="specURL", description="URL of the OpenAPI document.")
    config_map_ref: ConfigMapKeySelector | None = Field(
        default=None, description="ConfigMap key holding the OpenAPI document."
    )
    base_url: str | None = Field(
        default=None, alias="baseURL", description="Base URL of the API; omitted uses the document's first server."
    )
    operations: list[str] = Field(
        default_factory=list, description="operationIds to expose as tools; empty exposes every operation."
    )
    headers: list[NamedValue] = Field(
        default_factory=list,
        description="Request headers, e.g. Authorization from a Secret.",
    )


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


class EgressPolicy(ApiModel):
    """Where the registry's tools may send requests (http, openapi, and mcp over streamable-http or sse).

    Every address a server's name resolves to is checked when a connection is
    opened, and the connection goes to the checked address. Redirects are
    followed only within the configured origin, so headers from Secrets are
    never sent anywhere else.
    """

    validation_rules = (
        Rule(
            cel="!has(self.allowedCIDRs) || self.allowedCIDRs.all(c, isCIDR(c))",
            message="allowedCIDRs: each entry must be an IP address range such as 10.1.0.0/16 or fd00::/8",
            check=lambda egress: all(_is_cidr(cidr) for cidr in egress.allowed_cidrs),
        ),
    )

    allow_loopback: bool = Field(
        default=False,
        description="Allow loopback targets (127.0.0.0/8, ::1, and 0.0.0.0, which reaches the local host): "
        "the agent's own pod.",
    )
    allow_link_local: bool = Field(
        default=False,
        description="Allow link-local targets (169.254.0.0/16, fe80::/10), where cloud metadata services and "
        "their credentials live.",
    )
    allow_private: bool = Field(
        default=True,
        description="Allow private targets (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7), "
        "where in-cluster services live.",
    )
    allowed_cidrs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list,
        alias="allowedCIDRs",
        max_length=64,
        description="Address ranges allowed whatever the settings above, e.g. 169.254.20.10/32 for a node-local "
        "cache.",
    )


class ClientHandler(ApiModel):
    """A single tool executed by the connected WebSocket client."""

    description: str | None = Field(default=None, description="What the tool does, shown to the model.")
    parameters_schema: JSONObject | None = Field(
        default=None, description="JSON schema of the tool's parameters, shown to the model."
    )


HandlerType = Literal["http", "mcp", "openapi", "client"]


def _has_only_its_block(handler: ToolHandler) -> bool:
    return all((getattr(handler, kind) is not None) == (handler.type == kind) for kind in HANDLER_TYPES)


class ToolHandler(ApiModel):
    """A source of tools: one HTTP or client tool, or every tool of an MCP server or OpenAPI document."""

    validation_rules = (
        Rule(
            cel=" && ".join(f"has(self.{kind}) == (self.type == '{kind}')" for kind in HANDLER_TYPES),
            message="handler type must match its block: "
            "set exactly the block named by type (http, mcp, openapi or client)",
            check=_has_only_its_block,
        ),
    )

    name: str = Field(
        pattern=TOOL_NAME_PATTERN,
        max_length=64,
        description="Name of the handler; for http and client handlers also the tool's name.",
    )
    type: HandlerType = Field(description="Kind of handler: http, mcp, openapi or client.")
    require_approval: bool = Field(
        default=False, description="Ask the connected client to approve each call before it runs."
    )
    timeout_seconds: int = Field(
        default=30, ge=1, le=3600,
        description="Timeout of one tool call, in seconds.",
    )
    retries: int = Field(
        default=0, ge=0, le=10,
        description="Retries of a tool call that failed or timed out.",
    )
    http: HttpHandler | None = Field(default=None, description="Settings of an http handler.")
    mcp: McpHandler | None = Field(default=None, description="Settings of an mcp handler.")
    openapi: OpenApiHandler | None = Field(default=None, description="Settings of an openapi handler.")
    client: ClientHandler | None = Field(default=None, description="Settings of a client handler.")


class ToolRegistrySpec(ApiModel):
    """The desired state of a ToolRegistry."""

    validation_rules = (
        Rule(
            cel="self.handlers.all(h, self.handlers.exists_one(o, o.name == h.name))",
            message="handler names must be unique",
            check=lambda spec: len({h.name for h in spec.handlers}) == len(spec.handlers),
        ),
    )

    handlers: list[ToolHandler] = Field(
        min_length=1,
        max_length=64,
        description="The handlers, each providing one or more tools.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    egress: EgressPolicy = Field(
        default_factory=EgressPolicy,
        json_schema_extra={"default": defaults_of(EgressPolicy)},
        description="Where the tools (http, openapi, and mcp over streamable-http or sse) may send requests. "
        "Every address a server's name resolves to is checked when a connection opens, and redirects are "
        "followed within the configured origin only, so headers from Secrets never leave it. Loopback and "
        "link-local targets are denied by default, private ones allowed.",
    )


class DiscoveredTool(StatusModel):
    """A tool found and validated by the operator."""

    name: str = Field(description="Name of the tool as the model sees it.")
    handler: str = Field(description="Name of the handler providing the tool.")
    description: str | None = Field(default=None, description="Description of the tool.")


class HandlerStatus(StatusModel):
    """The observed state of one handler."""

    name: str = Field(description="Name of the handler.")
    tool_count: int = Field(default=0, ge=0, description="Number of tools the handler provides.")
    tools_hash: str | None = Field(
        default=None,
        description="Digest of the handler's tools (names, descriptions, input schemas) as last discovered; "
        "a change rolls the AgentRuntimes using the registry. Kept while the server is unreachable.",
    )
    conditions: Conditions = conditions_field("Conditions of the handler, e.g. Ready (reachable and valid).")


ToolRegistryPhase = Literal["Pending", "Ready", "Degraded", "Failed"]


class ToolRegistryStatus(StatusModel):
    """The observed state of a ToolRegistry."""

    phase: ToolRegistryPhase | None = Field(
        default=None, description="Summary: Pending, Ready, Degraded (some handlers failed) or Failed."
    )
    discovered_tools: list[DiscoveredTool] = Field(
        default_factory=list,
        description=(
            "The tools discovered across the handlers: at most 100 of each handler, descriptions cut to"
            " 200 characters (a handler's toolCount counts them all)."
        ),
    )
    handlers: list[HandlerStatus] = Field(
        default_factory=list,
        description="Per-handler status and conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    conditions: Conditions = conditions_field("Current conditions: Ready when every handler is ready.")
    observed_generation: int | None = observed_generation_field()


class ToolRegistry(Resource):
    """A ToolRegistry lists the tools agents may call: HTTP endpoints, MCP servers, OpenAPI operations, client tools."""

    plural = "toolregistries"
    singular = "toolregistry"

    api_version: Literal["omnia.altairalabs.ai/v1alpha1"] = Field(
        default=API_VERSION, description="API version: omnia.altairalabs.ai/v1alpha1."
    )
    kind: Literal["ToolRegistry"] = Field(default="ToolRegistry", description="Kind: ToolRegistry.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ToolRegistrySpec = Field(description="Desired state of the ToolRegistry.")
    status: ToolRegistryStatus = Field(
        default_factory=ToolRegistryStatus, description="Observed state of the ToolRegistry."
    )
