"""Routing an agent at zero replicas to the activator, and back to its pods once one is Ready.

A scale-to-zero agent (``builders.scales_to_zero``) keeps its Service and
its selector. While its Deployment has no Ready replica, the operator adds
one EndpointSlice of its own to that Service, ``<agent>-activator``, whose
endpoints are the Ready activator pods, on the activator's HTTP port under
the name of the Service's facade port: kube-proxy then sends the Service's
connections to the activator, which holds them, wakes the agent through
KEDA and proxies them once a pod is Ready. As soon as the Deployment has a
Ready replica the slice is deleted and new connections go straight to the
pods again.

The slice is labelled as the Service's (``kubernetes.io/service-name``)
and as managed by the operator (``endpointslice.kubernetes.io/managed-by``),
which the EndpointSlice controller leaves alone; it is owned by the
AgentRuntime, so deleting the agent collects it.

Pure: the activator's own EndpointSlices in, addresses out; an agent and
those addresses in, the slice out. The reconciler decides when (``wanted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omnia.api.v1alpha1 import GROUP, AgentRuntime
from omnia.operator import builders, labels

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGER = f"operator.{GROUP}"
"""Our value of :data:`MANAGED_BY_LABEL`: the EndpointSlice controller manages only slices labelled its own."""

ENDPOINT_SLICE = builders.ObjectKind("discovery.k8s.io/v1", "EndpointSlice")


def slice_name(agent: str) -> str:
    return f"{agent}-activator"


def wanted(agent: AgentRuntime, *, activator: builders.ActivatorService | None, deployment_exists: bool,
           ready_replicas: int) -> bool:
    """Whether the agent's Service should lead to the activator now.

    Only for a scale-to-zero agent of an installation with an activator,
    whose Deployment exists (an agent not rolled out yet has nothing to
    wake) and has no Ready replica.
    """
    return activator is not None and builders.scales_to_zero(agent) and deployment_exists and ready_replicas == 0


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> list[str]:
    """The IPv4 addresses of the Ready endpoints of the activator Service's EndpointSlices, sorted, once each.

    ``conditions.ready`` unset counts as Ready, as the EndpointSlice API
    says; terminating endpoints are not Ready.
    """
    found: set[str] = set()
    for item in slices:
        if item.get("addressType") != "IPv4":
            continue
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found.update(endpoint.get("addresses") or ())
    return sorted(found)


def build_activator_slice(agent: AgentRuntime, *, addresses: Sequence[str]) -> dict[str, Any]:
    """The agent Service's EndpointSlice that leads to the activator's pods."""
    name = agent.metadata.name
    metadata: dict[str, Any] = {"name": slice_name(name)}
    if agent.metadata.namespace:
        metadata["namespace"] = agent.metadata.namespace
    metadata["labels"] = {**labels.agent_labels(name), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGER}
    owner = builders.owner_reference(agent)
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": ENDPOINT_SLICE.api_version,
        "kind": ENDPOINT_SLICE.kind,
        "metadata": metadata,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}} for address in addresses],
        "ports": [{"name": builders.SERVICE_PORT_NAME, "port": builders.ACTIVATOR_HTTP_PORT, "protocol": "TCP"}],
    }


@dataclass(frozen=True)
class SliceSummary:
    """An ``<agent>-activator`` slice as the cache holds it: enough to delete it, and only if it is ours."""

    uid: str
    controller: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SliceSummary:
        metadata = body.get("metadata") or {}
        owners = metadata.get("ownerReferences") or []
        return cls(uid=str(metadata.get("uid", "")),
                   controller=next((owner.get("uid") for owner in owners if owner.get("controller")), None))
