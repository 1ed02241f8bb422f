"""The default session store: the Secret key named when Omnia was installed, mirrored beside each agent.

An AgentRuntime with ``session.type`` redis or postgres and no ``secretRef``
uses the store of its type the operator was started with
(``--default-session-secret redis=NAMESPACE/NAME:KEY``, the chart's
``sessionStore.redis.secretRef``). A pod reads Secrets of its own namespace
only, so the operator copies that one key into a Secret it owns beside the
agent, ``<agent>-session-store`` (key ``url``), and the runtime reads it
through the same ``secretKeyRef`` variable an agent's own ``secretRef``
fills. The copy is rewritten when the source's resourceVersion changes, and
that version is part of the agent's config hash, so rotating the URL rolls
the agents that use it.

With no default for the agent's type nothing is rolled out
(``SessionStoreNotConfigured``): its runtime could only exit at start-up.

Pure: the option, which agents use a default, names and messages
(``following`` keeps the source Secrets' summaries current). The URL itself
only passes through the reconciler on its way to the mirror — never into a
ConfigMap, a status, an Event or a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from omnia.api.v1alpha1 import AgentRuntime

TYPES = ("redis", "postgres")
"""The store types whose URL comes from a Secret; ``memory`` needs none."""

MIRROR_KEY = "url"
"""The key of the mirrored Secret, whatever the source's key is called."""

NOT_CONFIGURED = "SessionStoreNotConfigured"
OPTION = "--default-session-secret"
SHAPE = "TYPE=NAMESPACE/NAME:KEY"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_SECRET_KEY = r"[-._a-zA-Z0-9]+"
_OPTION = re.compile(rf"(?P<type>[a-z]+)=(?P<namespace>{_DNS_LABEL})/(?P<name>{_DNS_SUBDOMAIN}):(?P<key>{_SECRET_KEY})")


@dataclass(frozen=True)
class DefaultStore:
    """The Secret key holding the URL of the store that agents of ``type`` use when they name none."""

    type: str
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.key}"


def parse(text: str) -> DefaultStore:
    """``redis=omnia-system/omnia-session-redis:url`` → a :class:`DefaultStore`; ValueError names the shape."""
    match = _OPTION.fullmatch(text.strip())
    if match is None or match["type"] not in TYPES:
        raise ValueError(
            f"{OPTION} {text!r}: expected {SHAPE} with TYPE {' or '.join(TYPES)}, "
            "e.g. redis=omnia-system/omnia-session-redis:url"
        )
    return DefaultStore(type=match["type"], namespace=match["namespace"], name=match["name"], key=match["key"])


def parse_all(texts: Iterable[str]) -> dict[str, DefaultStore]:
    """One store per type, from every ``--default-session-secret`` given."""
    stores: dict[str, DefaultStore] = {}
    for text in texts:
        store = parse(text)
        if store.type in stores:
            raise ValueError(f"{OPTION}: a default {store.type} store is given twice")
        stores[store.type] = store
    return stores


def uses_default(agent: AgentRuntime) -> bool:
    """Whether the agent's session store URL is the installation's default."""
    session = agent.spec.session
    return session.type in TYPES and session.secret_ref is None


def mirror_name(agent: str) -> str:
    return f"{agent}-session-store"


def not_configured_message(session_type: str) -> str:
    return (
        f"session type {session_type} without secretRef uses the default {session_type} store of the "
        f"installation, and none is configured: set spec.session.secretRef to a Secret key holding the "
        f"store's URL, or install Omnia with sessionStore.{session_type}.secretRef "
        f"(omnia operator {OPTION} {session_type}=NAMESPACE/NAME:KEY)"
    )


def stamp(store: DefaultStore, version: str | None) -> str:
    """What the config hash covers for the mirror: which source, at which version."""
    return f"{store}@{version}"
