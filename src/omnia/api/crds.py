"""CustomResourceDefinitions of the four kinds, generated from the models.

What ``kubectl`` shows about a kind (printer columns, short names) is
presentation, so it lives here rather than on the models; the schemas come
from :mod:`omnia.api.schemas`. ``scripts/gen-crds`` writes the result to
``deploy/crds/`` and ``omnia crds`` prints it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from omnia.api import schemas
from omnia.api.v1alpha1 import AgentRuntime, PromptPack, Provider, ToolRegistry
from omnia.api.v1alpha1.common import GROUP, VERSION, Resource


@dataclass(frozen=True)
class Column:
    """One column of ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE = Column("Age", ".metadata.creationTimestamp", type="date")


@dataclass(frozen=True)
class Presentation:
    """How one kind appears in kubectl: short names, columns, subresources."""

    resource: type[Resource]
    short_names: tuple[str, ...]
    columns: tuple[Column, ...]
    scalable: bool = False
    categories: tuple[str, ...] = field(default=("omnia",))


PRESENTATIONS: tuple[Presentation, ...] = (
    Presentation(
        resource=AgentRuntime,
        short_names=("agent", "ar"),
        columns=(
            Column("Phase", ".status.phase", description="Summary of the state."),
            Column("Replicas", ".spec.replicas", type="integer", description="Desired number of pods."),
            Column("Ready", ".status.readyReplicas", type="integer", description="Pods that are ready."),
            Column("Provider", ".spec.providerRef.name", description="The Provider the agent calls."),
            Column("Prompt", ".status.activePromptVersions", description="Prompt versions served to new sessions."),
            Column("Budget", ".status.budgetPercentUsed", type="integer",
                   description="Percent used of its most spent budget; 100 or more refuses turns."),
            AGE,
            Column("Endpoint", ".status.endpoint", description="In-cluster WebSocket URL.", priority=1),
        ),
        scalable=True,
    ),
    Presentation(
        resource=PromptPack,
        short_names=("pp",),
        columns=(
            Column("Version", ".spec.version", description="Version in the spec."),
            Column("Stable", ".status.stableVersion", description="Version served outside a canary."),
            Column("Canary", ".status.canaryVersion", description="Candidate version during a canary."),
            Column(
                "Weight", ".status.canaryWeight", type="integer", description="Percent of new sessions on the canary."
            ),
            Column("Phase", ".status.phase", description="Summary of the state."),
            AGE,
        ),
    ),
    Presentation(
        resource=ToolRegistry,
        short_names=("tr",),
        columns=(
            Column("Phase", ".status.phase", description="Summary of the state."),
            AGE,
        ),
    ),
    Presentation(
        resource=Provider,
        short_names=("prov",),
        columns=(
            Column("Type", ".spec.type", description="Kind of LLM API."),
            Column("Model", ".spec.model", description="Model name."),
            Column("Phase", ".status.phase", description="Summary of the state."),
            AGE,
        ),
    ),
)


def custom_resource_definition(presentation: Presentation) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CRD of one kind."""
    resource = presentation.resource
    kind = resource.model_fields["kind"].default
    subresources: dict[str, Any] = {"status": {}}
    if presentation.scalable:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(presentation.short_names),
                "categories": list(presentation.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schemas.resource_schema(resource)},
                    "subresources": subresources,
                    "additionalPrinterColumns": [column.to_crd() for column in presentation.columns],
                }
            ],
        },
    }


def custom_resource_definitions() -> list[dict[str, Any]]:
    """The CRDs of the four kinds, as dicts ready to apply."""
    return [custom_resource_definition(presentation) for presentation in PRESENTATIONS]


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors, and long descriptions folded for reading."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    """One YAML document, keys in the order given, no anchors."""
    return yaml.dump(copy.deepcopy(obj), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def render_yaml() -> str:
    """All CRDs as one multi-document YAML stream (what ``omnia crds`` prints)."""
    return "".join(f"---\n{to_yaml(crd)}" for crd in custom_resource_definitions())
