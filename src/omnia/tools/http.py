"""``http`` tools: one HTTP endpoint per tool, the URL a template of its arguments.

``build_request`` is pure: ``{{ name }}`` placeholders of the URL are filled
with the arguments (URL-encoded), the other arguments go in the query string
(GET, DELETE) or as a JSON object body (POST, PUT, PATCH). An argument stays
in its place: placeholders may stand in the path and the query, never in the
scheme or host (where the tool's secrets go), and an argument that would make
its path segment empty, ``.`` or ``..`` is refused, as every ``/``, ``?``,
``#`` or ``%`` in it is encoded.

``send`` is the adapter around ``httpx``, shared with ``openapi`` tools: it
follows redirects within the request's origin only (``egress``), reads at
most ``MAX_RESPONSE_BYTES`` of the answer and sorts it into an answer for the
model (2xx, and 4xx as an error the model can correct) or ``CallFailed`` (no
connection, 5xx) for the executor to retry. A request the egress policy
denies is an answer too: repeating it would not change anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

from omnia.agent.loop import ToolOutcome
from omnia.config import ToolConfig
from omnia.tools import credentials, egress
from omnia.tools.base import CallFailed, DiscoveryError, Found

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
# A URL (template) up to its path: ``scheme://authority``.
_ORIGIN_PART = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]+")
_NOT_A_SEGMENT = ("", ".", "..")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_RESPONSE_BYTES = 1024 * 1024
USER_AGENT = "omnia-tools"


class ArgumentError(ValueError):
    """The arguments cannot make a request (a placeholder has no value)."""


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    body: object | None = None


def placeholders(url: str) -> list[str]:
    return PLACEHOLDER.findall(url)


def build_request(*, method: str, url: str, arguments: Mapping, headers: Mapping[str, str]) -> Request:
    """The request for one call of an ``http`` tool; ``ArgumentError`` when the arguments cannot make one."""
    used: set[str] = set()

    def value_of(name: str) -> str:
        if name not in arguments or arguments[name] is None:
            raise ArgumentError(f"the URL needs the argument {name!r}")
        used.add(name)
        return quote(scalar_text(arguments[name]), safe="")

    origin_part = _ORIGIN_PART.match(url)
    if origin_part is None or "{{" in origin_part.group(0):
        raise ArgumentError(f"the URL must start with a scheme and host without placeholders: {url}")
    head = origin_part.group(0)
    rest = url[len(head):]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    path = fill_segments(rest[:cut], PLACEHOLDER, value_of)
    filled = head + path + PLACEHOLDER.sub(lambda match: value_of(match.group(1)), rest[cut:])
    rest_arguments = {name: value for name, value in arguments.items() if name not in used}
    if method in BODY_METHODS:
        return Request(method, filled, headers, body=rest_arguments)
    return Request(method, filled, headers, query=query_items(rest_arguments))


def fill_segments(path: str, placeholder: re.Pattern, value_of: Callable[[str], str]) -> str:
    """``path`` with its placeholders replaced by ``value_of(name)`` (already encoded), segment by segment.

    A segment that a placeholder fills must not end up empty, ``.`` or
    ``..``: those change which resource the path names (``..`` climbs).
    """
    segments = []
    for segment in path.split("/"):
        names = placeholder.findall(segment)
        if names:
            segment = placeholder.sub(lambda match: value_of(match.group(1)), segment)
            if segment in _NOT_A_SEGMENT:
                listed = ", ".join(repr(name) for name in names)
                raise ArgumentError(
                    f"the argument {listed} would make the path segment {segment!r}; "
                    "arguments stay in their own path segment"
                )
        segments.append(segment)
    return "/".join(segments)


def scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def query_items(arguments: Mapping) -> tuple[tuple[str, str], ...]:
    """Query parameters: lists repeat the name, objects are sent as JSON, nulls are left out."""
    items = []
    for name, value in arguments.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        items.extend((name, scalar_text(item)) for item in values)
    return tuple(items)


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (template): the endpoint of its circuit breaker."""
    parts = urlsplit(PLACEHOLDER.sub("x", url))
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname}:{port}"


async def send(client: httpx.AsyncClient, request: Request) -> ToolOutcome:
    """Send one request; the answer for the model, or ``CallFailed``.

    Cancellation closes the connection at once (the executor's timeout).
    """
    headers = {"user-agent": USER_AGENT, **request.headers}
    kwargs: dict = {"headers": headers, "params": list(request.query)}
    if request.body is not None:
        kwargs["json"] = request.body
    try:
        outgoing = client.build_request(request.method, request.url, **kwargs)
    except httpx.InvalidURL as exc:
        return ToolOutcome(f"the request was not sent: invalid URL {request.url}: {_describe(exc)}", is_error=True)
    try:
        response = await open_following(client, outgoing)
        try:
            body, cut = await read_capped(response)
        finally:
            await response.aclose()
    except egress.EgressDenied as exc:
        return ToolOutcome(f"the request was not sent: {exc.message}", is_error=True)
    except httpx.TooManyRedirects as exc:
        return ToolOutcome(f"{request.method} {request.url}: {_describe(exc)}", is_error=True)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise CallFailed(f"cannot connect to {origin(request.url)}: {_describe(exc)}", reached=False) from None
    except httpx.HTTPError as exc:
        raise CallFailed(f"{request.method} {request.url} failed: {_describe(exc)}", reached=True) from None
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if cut:
        text += f"\n[response cut at {MAX_RESPONSE_BYTES} bytes]"
    status = response.status_code
    if status >= 500:
        raise CallFailed(f"HTTP {status} from {request.method} {request.url}: {text[:500]}", reached=True)
    if status >= 400:
        return ToolOutcome(f"HTTP {status}: {text}", is_error=True)
    if 300 <= status < 400:
        return ToolOutcome(f"HTTP {status} redirect to {response.headers.get('location', '?')}", is_error=True)
    return ToolOutcome(text if text else f"HTTP {status} (no content)")


async def open_following(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request``, following redirects within its origin only; the response, still to be read.

    A redirect elsewhere raises ``EgressDenied`` without being followed: the
    request's headers (the tool's secrets) go to the configured origin only.
    More than ``egress.MAX_REDIRECTS`` raise ``httpx.TooManyRedirects``.
    """
    start = request.url
    for _ in range(egress.MAX_REDIRECTS + 1):
        response = await client.send(request, stream=True, follow_redirects=False)
        following = response.next_request
        if following is None:
            return response
        await response.aclose()
        if not egress.same_origin(following.url, start):
            raise egress.EgressDenied(
                f"{egress.origin_of(start)} redirected to {egress.origin_of(following.url)}, which the "
                "ToolRegistry's egress policy does not follow: redirects stay within the tool's origin"
            )
        request = following
    raise httpx.TooManyRedirects(f"more than {egress.MAX_REDIRECTS} redirects", request=request)


async def read_capped(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether there was more (then left unread)."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


async def probe(client: httpx.AsyncClient, url: str, *, headers: Mapping[str, str]) -> int:
    """Whether a server answers at ``url``'s fixed part: any HTTP status will do.

    A ``HEAD`` request, which servers must treat as safe; 404 or 405 still
    prove that the server is there and speaks HTTP.
    """
    fixed = url.split("{{", 1)[0]
    try:
        response = await client.request(
            "HEAD", fixed, headers={"user-agent": USER_AGENT, **headers}, follow_redirects=False
        )
    except egress.EgressDenied as exc:
        raise DiscoveryError("EgressDenied", exc.message) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise DiscoveryError("Unreachable", f"HEAD {fixed} failed: {_describe(exc)}") from None
    return response.status_code


class Handler:
    """One ``http`` tool: its handler block is ``{method, url, headers, ...}``."""

    def __init__(self, tool: ToolConfig, *, env: Mapping[str, str], client: httpx.AsyncClient) -> None:
        self.name = tool.name
        self.tool = tool
        self.method = tool.handler.get("method", "POST")
        self.url = tool.handler["url"]
        self._client = client
        self._headers: dict[str, str] = {}
        self._credential_error: str | None = None
        try:
            self._headers = credentials.resolve(tool.handler.get("headers", ()), env, what="header")
        except credentials.CredentialError as exc:
            self._credential_error = str(exc)

    def endpoint(self, tool: ToolConfig) -> str:
        return origin(self.url)

    def idempotent(self, tool: ToolConfig) -> bool:
        return self.method in IDEMPOTENT_METHODS

    async def discover(self) -> Found:
        if self._credential_error is not None:
            raise DiscoveryError("SecretNotFound", self._credential_error)
        await probe(self._client, self.url, headers=self._headers)
        return Found(tools=(self.tool,))

    async def call(self, tool: ToolConfig, arguments: dict) -> ToolOutcome:
        if self._credential_error is not None:
            return ToolOutcome(f"tool {tool.name!r} is not configured: {self._credential_error}", is_error=True)
        try:
            request = build_request(method=self.method, url=self.url, arguments=arguments, headers=self._headers)
        except ArgumentError as exc:
            return ToolOutcome(f"tool {tool.name!r} was not called: {exc}", is_error=True)
        return await send(self._client, request)

    async def aclose(self) -> None:
        """The HTTP client is shared and closed by its owner."""
