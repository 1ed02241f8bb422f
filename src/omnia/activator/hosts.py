"""Which agent a connection is for, from its HTTP ``Host`` header.

Every scale-to-zero agent's Service routes to the activator while the agent
is at zero, so the activator tells them apart by the name the client
dialled, the only trace of the Service left on the request:
``<agent>.<namespace>[.svc[.<cluster domain>]][:port]``. A bare ``<agent>``
(a client in the agent's own namespace) names no namespace; the caller
resolves it against the scale-to-zero agents it knows.

No sockets and no cluster here: a pure function, tested on its own.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# RFC 1123 labels, as Kubernetes requires of Service names and namespaces.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class HostError(ValueError):
    """A Host header that names no agent; the message says what was expected."""


@dataclass(frozen=True, order=True)
class AgentRef:
    """An AgentRuntime, by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Target:
    """The agent a Host header names; ``namespace`` None for a bare ``<agent>``."""

    name: str
    namespace: str | None = None


def is_address(host: str) -> bool:
    """Whether ``host`` (a Host header) is an IP address, as kubelet probes and scrapes send."""
    try:
        ipaddress.ip_address(_strip_port(host).strip("[]"))
    except ValueError:
        return False
    return True


def parse(host: str | None) -> Target:
    """The agent named by a ``Host`` header; :class:`HostError` when it names none."""
    if not host:
        raise HostError("the request has no Host header, so it names no agent")
    name = _strip_port(host.strip()).rstrip(".").lower()
    if is_address(name):
        raise HostError(f"Host {host!r} is an address; connect through the agent's Service name")
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise HostError(f"Host {host!r} is not a DNS name")
    if len(labels) == 1:
        return Target(name=labels[0])
    if len(labels) == 2 or (len(labels) >= 3 and labels[2] == "svc"):
        return Target(name=labels[0], namespace=labels[1])
    raise HostError(
        f"Host {host!r} names no agent Service; expected <agent>.<namespace>[.svc[.cluster.local]] or <agent>"
    )


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host
