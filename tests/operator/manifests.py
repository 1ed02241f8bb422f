"""Manifests for the operator's unit tests, as the API server would hold them (namespace, uid, generation)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from omnia.api.v1alpha1 import parse_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-agent"
NAMESPACE = "team-a"


def stored(manifest: dict[str, Any], *, uid: str | None = None, generation: int = 1) -> dict[str, Any]:
    body = copy.deepcopy(manifest)
    metadata = body["metadata"]
    metadata.setdefault("namespace", NAMESPACE)
    metadata.setdefault("uid", uid or f"uid-{metadata['name']}")
    metadata.setdefault("generation", generation)
    metadata.setdefault("resourceVersion", "1")
    return body


def example(name: str) -> dict[str, Any]:
    return stored(yaml.safe_load((EXAMPLE / name).read_text()))


def agent(name: str = "agent", **spec: Any) -> dict[str, Any]:
    spec = {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"}, **spec}
    return stored({"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
                   "metadata": {"name": name}, "spec": spec})


def pack(name: str = "prompts", *, version: str = "1.0.0", prompt: str = "You are helpful.", **spec: Any) -> dict[str, Any]:
    return stored({"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": name},
                   "spec": {"version": version, "systemPrompt": prompt, **spec}})


def provider(name: str = "mock", **spec: Any) -> dict[str, Any]:
    return stored({"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider", "metadata": {"name": name},
                   "spec": {"type": "mock", **spec}})


def registry(name: str = "tools", *handlers: dict[str, Any], egress: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"handlers": list(handlers)}
    if egress is not None:
        spec["egress"] = egress
    return stored({"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "ToolRegistry", "metadata": {"name": name},
                   "spec": spec})


def model(body: dict[str, Any]):
    return parse_manifest(body)
