"""What the operator remembers of each watched object: just enough, typed.

The watch streams deliver whole objects; the caches keep these summaries
instead. Custom resources are parsed once per change (not once per
reconcile of every agent that reads them), Secrets are reduced to their
resourceVersion and key names (their values never stay in the operator's
memory), and Deployments to their rollout counters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic

from omnia.api.v1alpha1 import API_VERSION, GROUP, KINDS, ManifestError, parse_manifest
from omnia.api.v1alpha1.common import Resource
from omnia.operator import labels

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Parsed(Generic[R]):
    """A custom resource as the cache holds it: the typed model, or why it is invalid.

    ``resource`` is None exactly when ``error`` says what is wrong with the
    spec. ``status`` is parsed on its own and leniently (an unreadable status
    is an empty one): the spec is the user's, the status only the operator's
    own earlier output, needed even for an invalid spec to keep its
    conditions' transition times.
    """

    kind: str
    namespace: str
    name: str
    uid: str | None
    generation: int | None
    annotations: Mapping[str, str]
    status: Any
    resource: R | None
    error: str | None = None

    def regarding(self) -> dict[str, str]:
        """The object reference an Event about this resource carries."""
        return {"apiVersion": API_VERSION, "kind": self.kind, "namespace": self.namespace,
                "name": self.name, "uid": self.uid or ""}


def parse(body: Mapping[str, Any]) -> Parsed:
    """Parse a custom resource of one of the four kinds as the watch delivered it."""
    kind = str(body.get("kind", ""))
    metadata = dict(body.get("metadata") or {})
    metadata.pop("managedFields", None)
    status_model = KINDS[kind].model_fields["status"].annotation
    try:
        status = status_model.model_validate(body.get("status") or {})
    except pydantic.ValidationError:
        status = status_model()
    common = dict(
        kind=kind,
        namespace=metadata.get("namespace") or "",
        name=metadata.get("name") or "",
        uid=metadata.get("uid"),
        generation=metadata.get("generation"),
        annotations=dict(metadata.get("annotations") or {}),
        status=status,
    )
    manifest = {key: value for key, value in body.items() if key != "status"} | {"metadata": metadata}
    try:
        resource = parse_manifest(manifest)
    except ManifestError as exc:
        return Parsed(**common, resource=None, error="; ".join(str(error) for error in exc.errors))
    return Parsed(**common, resource=resource.model_copy(update={"status": status}))


@dataclass(frozen=True)
class SecretSummary:
    """A Secret without its values.

    ``uid``, ``controller`` (the uid of its controlling owner) and the
    operator's own annotations (``omnia.altairalabs.ai/…``) tell a Secret the
    operator wrote for an agent (the mirror of a default session store) from
    anyone else's of the same name.
    """

    resource_version: str
    keys: frozenset[str]
    uid: str = ""
    controller: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SecretSummary:
        metadata = body.get("metadata") or {}
        owners = metadata.get("ownerReferences") or []
        return cls(
            resource_version=str(metadata.get("resourceVersion", "")),
            keys=frozenset((body.get("data") or {}).keys()) | frozenset((body.get("stringData") or {}).keys()),
            uid=str(metadata.get("uid", "")),
            controller=next((owner.get("uid") for owner in owners if owner.get("controller")), None),
            annotations={key: value for key, value in (metadata.get("annotations") or {}).items()
                         if key.startswith(f"{GROUP}/")},
        )


@dataclass(frozen=True)
class ConfigMapSummary:
    resource_version: str
    keys: frozenset[str]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ConfigMapSummary:
        return cls(
            resource_version=str((body.get("metadata") or {}).get("resourceVersion", "")),
            keys=frozenset((body.get("data") or {}).keys()) | frozenset((body.get("binaryData") or {}).keys()),
        )


@dataclass(frozen=True)
class DeploymentCondition:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentSummary:
    """An agent's Deployment as far as rollout tracking goes."""

    generation: int
    observed_generation: int
    spec_replicas: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    config_hash: str | None
    replicas_applied_by_operator: bool
    """Whether the operator's field manager owns ``spec.replicas`` (see labels.SCALE_FIELD_MANAGER)."""
    conditions: Mapping[str, DeploymentCondition] = field(default_factory=dict)
    prompt_versions: Mapping[str, str] | None = None
    """The prompt versions the pod template holds (``labels.PROMPT_VERSIONS``); None when unknown."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeploymentSummary:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        return cls(
            generation=int(metadata.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            spec_replicas=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            config_hash=(template.get("annotations") or {}).get(labels.CONFIG_HASH),
            replicas_applied_by_operator=_owns_replicas(metadata.get("managedFields") or []),
            conditions={
                c.get("type", ""): DeploymentCondition(
                    status=c.get("status", "Unknown"), reason=c.get("reason", ""), message=c.get("message", "")
                )
                for c in status.get("conditions") or []
            },
            prompt_versions=_prompt_versions((template.get("annotations") or {}).get(labels.PROMPT_VERSIONS)),
        )


def _prompt_versions(annotation: str | None) -> dict[str, str] | None:
    """The annotation's version-to-digest map; None when absent or not one (it is then rewritten)."""
    if not annotation:
        return None
    try:
        value = json.loads(annotation)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value


def _owns_replicas(managed_fields: list[Mapping[str, Any]]) -> bool:
    for entry in managed_fields:
        if entry.get("manager") == labels.OPERATOR and entry.get("operation") == "Apply":
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            if "f:replicas" in spec:
                return True
    return False
