"""Running the operator: kopf configured for Omnia, cluster-wide or for some namespaces.

kopf runs *standalone*: no peering objects, so no kopf CRDs to install and
no RBAC for them. The operator is meant to run as one replica (the
Deployment's ``Recreate`` strategy keeps it so during upgrades); two
replicas would both reconcile, which is safe — every write is idempotent —
but wasteful. Cluster scanning is off too: the operator needs no rights on
CustomResourceDefinitions or Namespaces; the CRDs must be installed before
it starts, and ``--namespace`` takes exact names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import kopf

from omnia.operator import builders, handlers, labels


QUIET_LOGGERS = ("kopf.objects", "kopf.activities", "httpx", "aiohttp.access")
"""Loggers that report every handler call and request at INFO: the operator logs its own outcomes."""


def settings_for_omnia() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    # kopf would post an Event per handler run; the operator posts its own,
    # one per meaningful change, with reasons users can search for.
    settings.posting.enabled = False
    # Only the operator's own Deployments matter; filter them on the server.
    settings.watching.label_selectors[("apps", "v1", "deployments")] = f"{labels.MANAGED_BY}={labels.OPERATOR}"
    # Re-establish watches now and then, as client-go does.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def run(
    *,
    namespaces: Sequence[str] = (),
    liveness: str | None = "0.0.0.0:8080",
    defaults: builders.Defaults = builders.Defaults(),
    workers: int = 4,
    resync_seconds: float = 600.0,
) -> None:
    """Run the operator until SIGTERM or SIGINT.

    ``namespaces`` empty serves the whole cluster; ``liveness`` is the
    ``host:port`` of the liveness endpoint (``GET /healthz``, JSON with the
    reconcile counters), None for none.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    operator = handlers.Operator(defaults=defaults, workers=workers, resync_seconds=resync_seconds)
    handlers.register(registry, operator=operator)
    kopf.run(
        registry=registry,
        settings=settings_for_omnia(),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=f"http://{liveness}/healthz" if liveness else None,
    )
