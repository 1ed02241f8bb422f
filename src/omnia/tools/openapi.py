"""``openapi`` tools: the operations of an OpenAPI 3 document, one tool each.

Reading a document is pure (``operations``, ``tool_configs``): each
operation becomes a tool whose arguments are the operation's path, query and
header parameters, plus ``body`` for a JSON request body, with every local
``$ref`` inlined so the model sees a self-contained JSON schema. Calls are
plain HTTP requests, sent by ``http.send`` under the registry's egress
policy, like the request for ``specURL``; a path parameter stays in its
path segment. The document names the server the calls go to (unless
``baseURL`` does): a hostile document can point them anywhere the egress
policy allows, and the handler's headers go with them.

The document comes from ``specURL`` (fetched at discovery) or, for a
``configMapRef``, is carried in the rendered config as ``document``: the
runtime has no access to ConfigMaps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urljoin

import httpx
import yaml

from omnia.agent.loop import ToolOutcome
from omnia.config import ToolConfig
from omnia.tools import credentials, egress, http
from omnia.tools.base import DiscoveryError, Found, tool_name

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BODY_ARGUMENT = "body"
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 1024
_PATH_PARAMETER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str
    required: bool
    schema: dict
    description: str


@dataclass(frozen=True)
class Operation:
    operation_id: str | None
    method: str
    path: str
    description: str
    parameters: tuple[Parameter, ...]
    body_schema: dict | None
    body_required: bool

    @property
    def key(self) -> str:
        return self.operation_id or f"{self.method.upper()} {self.path}"


def _expands_beyond(document: object, limit: int) -> bool:
    """Whether ``document`` has more than ``limit`` nodes, counting a shared node each time it is reached.

    YAML aliases make a node shared, so a small document can parse into a
    structure that every walk after it (a copy, a ``str``, the schemas)
    walks exponentially often. The count stops at ``limit``.
    """
    count = 0
    stack = [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def parse_document(text: str) -> dict:
    """An OpenAPI 3 document from JSON or YAML text; ``DiscoveryError`` otherwise."""
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DiscoveryError("InvalidDocument", f"the OpenAPI document is neither JSON nor YAML: {exc}") from None
        if _expands_beyond(document, MAX_YAML_NODES):
            raise DiscoveryError(
                "InvalidDocument",
                f"the OpenAPI document has more than {MAX_YAML_NODES} nodes once its YAML aliases are expanded",
            )
    if not isinstance(document, dict):
        raise DiscoveryError("InvalidDocument", "the OpenAPI document is not an object")
    version = str(document.get("openapi", ""))
    if not version.startswith("3."):
        found = f"swagger {document['swagger']}" if "swagger" in document else f"openapi {version or '(missing)'}"
        raise DiscoveryError("InvalidDocument", f"only OpenAPI 3 documents are supported; found {found}")
    if not isinstance(document.get("paths"), dict):
        raise DiscoveryError("InvalidDocument", "the OpenAPI document has no paths")
    return document


def operations(document: dict) -> tuple[list[Operation], list[str]]:
    """The operations that can be called as tools, and why the others cannot."""
    found: list[Operation] = []
    skipped: list[str] = []
    budget = _Budget()
    for path, item in document["paths"].items():
        try:
            item = _resolve(item, document)
        except _Unsupported as exc:
            skipped.append(f"{path}: {exc}")
            continue
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            try:
                found.append(_operation(document, path, method, operation, shared, budget.for_operation()))
            except _Unsupported as exc:
                key = operation.get("operationId") or f"{method.upper()} {path}"
                skipped.append(f"{key}: {exc}")
    return found, skipped


# More nodes than a YAML document of MAX_DOCUMENT_BYTES can hold without
# aliases (three bytes a node at the least): a larger count is aliases
# expanding.
MAX_YAML_NODES = 2_000_000
# The most schema nodes (objects and arrays, once references are inlined)
# of one operation's parameters and body, and of all the document's.
MAX_SCHEMA_NODES = 10_000
MAX_DOCUMENT_NODES = 200_000


class _Unsupported(Exception):
    pass


def _operation(
    document: dict, path: str, method: str, operation: dict, shared: list, budget: _Budget
) -> Operation:
    by_key: dict[tuple[str, str], dict] = {}
    for raw in [*shared, *operation.get("parameters", [])]:
        parameter = _resolve(raw, document)
        if isinstance(parameter, dict) and "name" in parameter and "in" in parameter:
            by_key[(parameter["name"], parameter["in"])] = parameter
    parameters = []
    for (name, location), parameter in by_key.items():
        required = bool(parameter.get("required")) or location == "path"
        if location == "cookie":
            if required:
                raise _Unsupported(f"required cookie parameter {name!r} is not supported")
            continue
        schema = inline_refs(parameter.get("schema") or _content_schema(parameter) or {}, document, budget)
        parameters.append(
            Parameter(name, location, required, schema, str(parameter.get("description") or ""))
        )
    body_schema, body_required = None, False
    if "requestBody" in operation:
        body = _resolve(operation["requestBody"], document)
        body_required = bool(body.get("required"))
        schema = _json_schema(body.get("content") or {})
        if schema is None:
            if body_required:
                kinds = ", ".join(body.get("content") or {}) or "none"
                raise _Unsupported(f"the request body is not JSON (content types: {kinds})")
        else:
            body_schema = inline_refs(schema, document, budget)
    names = [p.name for p in parameters]
    if body_schema is not None and BODY_ARGUMENT in names:
        raise _Unsupported(f"a parameter is named {BODY_ARGUMENT!r}, the name of the request body argument")
    if len(set(names)) != len(names):
        raise _Unsupported("two parameters share a name in different places")
    description = operation.get("summary") or operation.get("description") or f"{method.upper()} {path}"
    if operation.get("summary") and operation.get("description"):
        description = f"{operation['summary']}. {operation['description']}"
    return Operation(
        operation_id=operation.get("operationId"),
        method=method.upper(),
        path=path,
        description=str(description).strip()[:MAX_DESCRIPTION_CHARS],
        parameters=tuple(parameters),
        body_schema=body_schema,
        body_required=body_required,
    )


def _content_schema(parameter: dict) -> dict | None:
    content = parameter.get("content")
    if isinstance(content, dict) and content:
        return next(iter(content.values())).get("schema")
    return None


def _json_schema(content: dict) -> dict | None:
    for media_type, entry in content.items():
        kind = media_type.split(";")[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            return (entry or {}).get("schema") or {}
    return None


def _resolve(node: object, document: dict) -> object:
    """Follow ``$ref`` chains of a parameter, body or path item (not schemas, see ``inline_refs``)."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            raise _Unsupported(f"circular reference {ref}")
        seen.add(ref)
        node = _lookup(ref, document)
    return node


def _lookup(ref: str, document: dict) -> object:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise _Unsupported(f"reference {ref!r} is not local to the document")
    node: object = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise _Unsupported(f"reference {ref} points to nothing")
        node = node[part]
    return node


class _Budget:
    """How many more schema nodes (objects and arrays) inlining may produce.

    References without a cycle can still multiply (each level referring
    twice to the next doubles the result: forty levels, a few kilobytes of
    document, make a trillion nodes), so an operation's schemas together
    get ``MAX_SCHEMA_NODES`` and the whole document ``MAX_DOCUMENT_NODES``.
    """

    def __init__(self, document_left: int = MAX_DOCUMENT_NODES) -> None:
        self.document_left = document_left
        self.operation_left = MAX_SCHEMA_NODES

    def for_operation(self) -> _Budget:
        self.operation_left = MAX_SCHEMA_NODES
        return self

    def spend(self) -> None:
        self.operation_left -= 1
        self.document_left -= 1
        if self.operation_left < 0:
            raise _Unsupported(
                f"its schemas have more than {MAX_SCHEMA_NODES} nodes once their references are inlined"
            )
        if self.document_left < 0:
            raise _Unsupported(
                f"the document's schemas have more than {MAX_DOCUMENT_NODES} nodes in all"
                " once their references are inlined"
            )


def inline_refs(schema: object, document: dict, budget: _Budget | None = None) -> object:
    """``schema`` with every local ``$ref`` replaced by its target.

    A recursive schema (a tree node referring to itself) cannot be inlined:
    the inner occurrence becomes an unconstrained value, described as such.
    A result larger than ``budget`` allows is refused (``_Budget``).
    """
    return _inline(schema, document, (), budget or _Budget())


def _inline(schema: object, document: dict, expanding: tuple[str, ...], budget: _Budget) -> object:
    if not isinstance(schema, dict | list):
        return schema
    budget.spend()
    if isinstance(schema, list):
        return [_inline(item, document, expanding, budget) for item in schema]
    if "$ref" in schema and isinstance(schema["$ref"], str):
        ref = schema["$ref"]
        if ref in expanding:
            return {"description": f"recursive value (same shape as {ref.rsplit('/', 1)[-1]})"}
        target = _lookup(ref, document)
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        inlined = _inline(target, document, (*expanding, ref), budget)
        if not siblings:
            return inlined
        return {**inlined, **_inline(siblings, document, expanding, budget)}  # type: ignore[dict-item]
    return {key: _inline(value, document, expanding, budget) for key, value in schema.items()}


def arguments_schema(operation: Operation) -> dict:
    properties: dict = {}
    required = []
    for parameter in operation.parameters:
        schema = dict(parameter.schema)
        if parameter.description and "description" not in schema:
            schema["description"] = parameter.description
        properties[parameter.name] = schema
        if parameter.required:
            required.append(parameter.name)
    if operation.body_schema is not None:
        properties[BODY_ARGUMENT] = {"description": "The JSON request body.", **operation.body_schema}
        if operation.body_required:
            required.append(BODY_ARGUMENT)
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def base_url(document: dict, *, configured: str | None, spec_url: str | None) -> str:
    """Where the operations are called: ``baseURL``, else the document's first server."""
    if configured:
        return configured
    servers = document.get("servers") or [{"url": "/"}]
    server = servers[0] if isinstance(servers[0], dict) else {"url": "/"}
    url = str(server.get("url") or "/")
    for name, variable in (server.get("variables") or {}).items():
        url = url.replace("{" + name + "}", str((variable or {}).get("default", "")))
    if "://" in url:
        return url
    if spec_url is None:
        raise DiscoveryError(
            "NoServerURL", f"the document's server URL {url!r} is relative and there is no specURL; set baseURL"
        )
    return urljoin(spec_url, url)


def tool_configs(
    document: dict, *, source: ToolConfig, base: str, only: tuple[str, ...] = ()
) -> Found:
    """One tool per callable operation (or per operationId in ``only``)."""
    found, skipped = operations(document)
    if only:
        wanted = set(only)
        missing = tuple(name for name in only if name not in {op.operation_id for op in found})
        found = [op for op in found if op.operation_id in wanted]
    else:
        missing = ()
    tools = tuple(
        ToolConfig(
            name=tool_name(op.operation_id or f"{op.method.lower()}_{op.path}"),
            type="openapi",
            description=op.description,
            parameters=arguments_schema(op),
            require_approval=source.require_approval,
            timeout_seconds=source.timeout_seconds,
            retries=source.retries,
            handler={
                "source": source.name,
                "operationId": op.key,
                "method": op.method,
                "baseURL": base,
                "path": op.path,
                "parameters": [{"name": p.name, "in": p.location} for p in op.parameters],
                "body": op.body_schema is not None,
            },
        )
        for op in found
    )
    return Found(tools=tools, missing=missing, skipped=tuple(skipped))


def build_request(tool: ToolConfig, arguments: Mapping, *, headers: Mapping[str, str]) -> http.Request:
    block = tool.handler
    query: dict = {}
    extra_headers: dict[str, str] = {}
    path_values: dict[str, str] = {}
    for parameter in block["parameters"]:
        name, location = parameter["name"], parameter["in"]
        if name not in arguments or arguments[name] is None:
            if location == "path":
                raise http.ArgumentError(f"the path needs the argument {name!r}")
            continue
        value = arguments[name]
        if location == "path":
            path_values[name] = quote(http.scalar_text(value), safe="")
        elif location == "query":
            query[name] = value
        elif location == "header":
            extra_headers[name] = http.scalar_text(value)
    path = http.fill_segments(block["path"], _PATH_PARAMETER, lambda name: path_values.get(name, "{" + name + "}"))
    url = block["baseURL"].rstrip("/") + "/" + path.lstrip("/")
    body = arguments.get(BODY_ARGUMENT) if block.get("body") else None
    return http.Request(
        method=block["method"],
        url=url,
        headers={**headers, **extra_headers},
        query=http.query_items(query),
        body=body,
    )


class Handler:
    """The operations of one OpenAPI document; the source's block is
    ``{specURL | document, baseURL, operations, headers}``.
    """

    def __init__(self, source: ToolConfig, *, env: Mapping[str, str], client: httpx.AsyncClient) -> None:
        self.name = source.name
        self.source = source
        block = source.handler
        self.spec_url: str | None = block.get("specURL")
        self.document: str | None = block.get("document")
        self.configured_base: str | None = block.get("baseURL")
        self.only = tuple(block.get("operations", ()))
        self._client = client
        self._headers: dict[str, str] = {}
        self._credential_error: str | None = None
        try:
            self._headers = credentials.resolve(block.get("headers", ()), env, what="header")
        except credentials.CredentialError as exc:
            self._credential_error = str(exc)

    def endpoint(self, tool: ToolConfig) -> str:
        return http.origin(tool.handler["baseURL"])

    def idempotent(self, tool: ToolConfig) -> bool:
        return tool.handler["method"] in http.IDEMPOTENT_METHODS

    async def discover(self) -> Found:
        if self._credential_error is not None:
            raise DiscoveryError("SecretNotFound", self._credential_error)
        text = self.document if self.document is not None else await self._fetch()
        document = parse_document(text)
        base = base_url(document, configured=self.configured_base, spec_url=self.spec_url)
        try:
            return tool_configs(document, source=self.source, base=base, only=self.only)
        except _Unsupported as exc:
            raise DiscoveryError("InvalidDocument", str(exc)) from None

    async def _fetch(self) -> str:
        assert self.spec_url is not None
        try:
            request = self._client.build_request("GET", self.spec_url, headers=self._headers)
            response = await http.open_following(self._client, request)
            try:
                content, larger = await http.read_capped(response, MAX_DOCUMENT_BYTES)
            finally:
                await response.aclose()
        except egress.EgressDenied as exc:
            raise DiscoveryError("EgressDenied", exc.message) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DiscoveryError("Unreachable", f"GET {self.spec_url} failed: {str(exc) or type(exc).__name__}") from None
        if response.status_code != 200:
            raise DiscoveryError("DocumentNotFound", f"GET {self.spec_url} answered HTTP {response.status_code}")
        if larger:
            raise DiscoveryError("InvalidDocument", f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
        return content.decode(response.encoding or "utf-8", errors="replace")

    async def call(self, tool: ToolConfig, arguments: dict) -> ToolOutcome:
        if self._credential_error is not None:
            return ToolOutcome(f"tool {tool.name!r} is not configured: {self._credential_error}", is_error=True)
        try:
            request = build_request(tool, arguments, headers=self._headers)
        except http.ArgumentError as exc:
            return ToolOutcome(f"tool {tool.name!r} was not called: {exc}", is_error=True)
        return await http.send(self._client, request)

    async def aclose(self) -> None:
        """The HTTP client is shared and closed by its owner."""
