"""Where tools' requests may go: the egress policy of a ToolRegistry.

A tool's arguments come from the model, and the model reads text anyone may
have written; a tool's server, its OpenAPI document or a redirect may be
hostile too. None of them may turn a tool into a pivot into the agent's own
network. So every connection an ``http``, ``openapi`` or ``mcp`` (HTTP)
tool opens is checked here, *when it is opened*:

- The host is resolved once, **every** address it resolves to is checked
  (a name with one internal address is denied whole), and the connection
  goes to a checked address, never to the name again. A name that answers
  differently a moment later (DNS rebinding) cannot slip between check and
  connect; the ``Host`` header and TLS server name still carry the name.
- Loopback (``127.0.0.0/8``, ``::1``, and ``0.0.0.0``/``::``, which reach
  the local host) and link-local (``169.254.0.0/16``, ``fe80::/10``: cloud
  metadata services) are denied unless the registry allows them. Private
  ranges are allowed unless it denies them: in-cluster services live there.
  IPv6 forms that embed an IPv4 address (``::ffff:127.0.0.1``) are judged by
  that address too; ``2130706433`` or ``0x7f.0.0.1`` are judged by what
  they resolve to.
- Environment proxy settings are not used: a proxy would resolve names
  itself, out of reach of the check.

Redirects are the other half (``follows``): only within the configured
origin, so the secrets that go with a tool's requests never leave it.

``Clients`` makes the checked ``httpx`` clients (one per policy) for
``http`` and ``openapi`` tools; ``mcp_client`` the ``httpx2`` ones the MCP
SDK uses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpcore2
import httpx
import httpx2

from omnia.eventbound import EventBound

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]

LOOPBACK = "loopback"
LINK_LOCAL = "link-local"
PRIVATE = "private"

_RANGES: dict[str, tuple[Network, ...]] = {
    LOOPBACK: tuple(
        ipaddress.ip_network(net) for net in ("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128")
    ),
    # fd00:ec2::254 is a ULA, but it is the metadata service of EC2 over IPv6.
    LINK_LOCAL: tuple(ipaddress.ip_network(net) for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")),
    PRIVATE: tuple(
        ipaddress.ip_network(net)
        for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
    ),
}
_SETTING = {LOOPBACK: "allowLoopback", LINK_LOCAL: "allowLinkLocal", PRIVATE: "allowPrivate"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
MAX_REDIRECTS = 5


class EgressDenied(Exception):
    """A request the egress policy does not allow; nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Policy:
    """A ToolRegistry's ``egress`` block, as rendered (camelCase keys)."""

    allow_loopback: bool = False
    allow_link_local: bool = False
    allow_private: bool = True
    allowed_cidrs: tuple[Network, ...] = ()

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | None) -> Policy:
        block = block or {}
        return cls(
            allow_loopback=bool(block.get("allowLoopback", False)),
            allow_link_local=bool(block.get("allowLinkLocal", False)),
            allow_private=bool(block.get("allowPrivate", True)),
            allowed_cidrs=tuple(ipaddress.ip_network(cidr, strict=False) for cidr in block.get("allowedCIDRs", ())),
        )

    def denial(self, address: IPAddress) -> str | None:
        """Which denied kind of address ``address`` is (``loopback``, …), or None when it may be reached.

        An IPv6 address that embeds an IPv4 one is judged by both.
        """
        judged = (address, *_embedded_ipv4(address))
        if any(_within(candidate, self.allowed_cidrs) for candidate in judged):
            return None
        allowed = {LOOPBACK: self.allow_loopback, LINK_LOCAL: self.allow_link_local, PRIVATE: self.allow_private}
        for candidate in judged:
            kind = kind_of(candidate)
            if kind is not None and not allowed[kind]:
                return kind
        return None

    def check(self, host: str, addresses: Iterable[str]) -> list[str]:
        """``addresses`` (``host`` resolved), all of them allowed; ``EgressDenied`` otherwise."""
        checked = list(addresses)
        for text in checked:
            kind = self.denial(ipaddress.ip_address(text))
            if kind is not None:
                shown = host if host == text else f"{host} ({text})"
                raise EgressDenied(
                    f"{shown} is a {kind} address, which the ToolRegistry's egress policy denies "
                    f"(spec.egress.{_SETTING[kind]} or allowedCIDRs allow it)"
                )
        if not checked:
            raise EgressDenied(f"{host} resolves to no address")
        return checked


def kind_of(address: IPAddress) -> str | None:
    """``loopback``, ``link-local``, ``private``, or None for any other address."""
    for kind, networks in _RANGES.items():
        if _within(address, networks):
            return kind
    return None


def _within(address: IPAddress, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 address an IPv6 one reaches: mapped, NAT64 and the old IPv4-compatible forms."""
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    return ()


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (IP literals resolve to themselves)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _kind, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


class _CheckingBackend:
    """A network backend for ``httpcore`` (or ``httpcore2``): resolve, check, connect to the checked address.

    Both packages share the backend interface; ``core`` is the module, for
    its inner backend and the exceptions its connection pool understands.
    """

    def __init__(self, policy: Policy, *, core: Any, resolve: Resolve) -> None:
        self._policy = policy
        self._core = core
        self._inner = core.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise self._core.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from None
        except OSError as exc:
            raise self._core.ConnectError(f"cannot resolve {host}: {exc}") from None
        failure: Exception | None = None
        for address in self._policy.check(host, addresses):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (self._core.ConnectError, self._core.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise EgressDenied("tools connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: Policy, *, resolve: Resolve) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its connection pool is replaced by one with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_CheckingBackend(policy, core=httpcore, resolve=resolve),
        )


# The largest MCP message read from a server: a JSON body, or one server-sent
# event. The SDK buffers a message whole, so a server that never ends one
# would otherwise grow the reader (the runtime, or the operator discovering
# every namespace's tools) until it is killed.
MAX_MCP_MESSAGE_BYTES = 16 * 1024 * 1024


class _Transport2(httpx2.AsyncHTTPTransport):
    def __init__(self, policy: Policy, *, resolve: Resolve) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            network_backend=_CheckingBackend(policy, core=httpcore2, resolve=resolve),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        response.stream = EventBound(response.stream, MAX_MCP_MESSAGE_BYTES, what="an MCP message")
        return response


DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


class Clients:
    """The HTTP clients of ``http`` and ``openapi`` tools: one per egress policy, made on first use.

    ``shared``, when given, is used for every policy as it is (a test seam:
    its transport decides where requests go). ``resolve`` turns a host name
    into addresses (the system resolver by default).
    """

    def __init__(
        self,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        shared: httpx.AsyncClient | None = None,
        resolve: Resolve = resolve,
    ) -> None:
        self._timeout = timeout
        self._shared = shared
        self._resolve = resolve
        self._clients: dict[Policy, httpx.AsyncClient] = {}

    def get(self, policy: Policy) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        client = self._clients.get(policy)
        if client is None:
            client = self._clients[policy] = httpx.AsyncClient(
                transport=_Transport(policy, resolve=self._resolve),
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=False,
            )
        return client

    def mcp_client(self, policy: Policy, *, headers: Mapping[str, str] | None, timeout: Any) -> httpx2.AsyncClient:
        """A new ``httpx2`` client for the MCP SDK, checked by ``policy``; its user closes it.

        The SDK follows redirects itself, within the endpoint's origin only.
        """
        return httpx2.AsyncClient(
            transport=_Transport2(policy, resolve=self._resolve),
            headers=dict(headers or {}),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port or _default_port(a)) == (b.scheme, b.host, b.port or _default_port(b))


def _default_port(url: httpx.URL) -> int | None:
    return {"http": 80, "https": 443}.get(url.scheme)


def origin_of(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def denial_in(error: BaseException | None) -> EgressDenied | None:
    """The ``EgressDenied`` behind ``error``, looking inside exception groups, causes and contexts.

    The MCP SDK runs its HTTP requests in tasks of its own, so a denial
    reaches its caller wrapped.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, EgressDenied):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend((current.__cause__, current.__context__))
    return None
