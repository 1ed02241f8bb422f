"""Manifests shared by the unit tests and the cluster tests of the API.

The same invalid manifests are fed to ``parse_manifest`` and to a real API
server, so the Python twin of each rule and its CEL expression are held to
the same cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from omnia.api.v1alpha1 import parsing

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

BRIEF_EXAMPLE = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: support-agent}
spec:
  replicas: 3
  promptPackRef: {name: support-prompts}
  providerRef: {name: claude-provider}
  session: {type: redis}
  autoscaling:
    enabled: true
    minReplicas: 2
    maxReplicas: 20
    metrics:
      - {type: memory, target: 70%}
      - {type: custom, name: active_connections, target: 100}
"""


@dataclass(frozen=True)
class InvalidCase:
    id: str
    manifest: dict[str, Any]
    expect: list[str]
    expect_python: list[str] = field(default_factory=list)
    expect_server: list[str] = field(default_factory=list)


def invalid_cases() -> list[Any]:
    entries = yaml.safe_load((Path(__file__).parent / "invalid_manifests.yaml").read_text())
    return [pytest.param(InvalidCase(**entry), id=entry["id"]) for entry in entries]


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("**/*.yaml"))


def example_documents() -> list[Any]:
    """Every Omnia manifest under examples/, one param per document."""
    params = []
    for path in example_files():
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document and str(document.get("apiVersion", "")).startswith("omnia.altairalabs.ai/"):
                name = f"{path.relative_to(EXAMPLES)}#{index}"
                params.append(pytest.param(document, id=name))
    return params


def models_below(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """``model`` and every model its fields contain, transitively."""
    seen = set() if seen is None else seen
    if model not in seen:
        seen.add(model)
        for field_info in model.model_fields.values():
            inner = parsing.find_model(field_info.annotation)
            if inner is not None:
                models_below(inner, seen)
    return seen
