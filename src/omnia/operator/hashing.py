"""Content hashes: what decides that pods roll and that a prompt is a new snapshot.

A hash is over canonical JSON (sorted keys, no whitespace) so that it depends
on content only, never on dict order or formatting, and is the same in the
operator and in ``omnia render``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from omnia.config import AgentConfig, ClientInputsConfig, PromptConfig

HASH_LENGTH = 16


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """A short hex digest of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:HASH_LENGTH]


def config_hash(
    config: AgentConfig,
    *,
    secret_versions: Mapping[str, str | None],
    images: Sequence[str],
    discovered_tools: str | None = None,
    tracing: Mapping[str, Any] | None = None,
) -> str:
    """Hash of everything an agent pod depends on.

    The rendered config covers the PromptPack content, the Provider and the
    tools as the spec declares them; the tools an MCP server or OpenAPI
    document offers are covered by ``discovered_tools``, the digest of the
    registry's discovery (the runtime lists them itself at start-up, so new
    pods are how a change reaches the agent). Secrets are covered by their
    resourceVersions (their values never reach the operator's output; the
    mirror of a default session store by its source's, ``sessionstores.stamp``),
    and the images by name; ``tracing``, the collector, headers reference and
    sampling the pods' OpenTelemetry variables are made of. Any change gives a new hash, the hash is on the pod
    template, so any change rolls the pods.
    """
    covered: dict[str, Any] = {
        "config": json.loads(config.to_json()),
        "secrets": dict(sorted(secret_versions.items())),
        "images": list(images),
    }
    if discovered_tools is not None:
        # Only when there is a discovery, so that other agents keep their hash.
        covered["discoveredTools"] = discovered_tools
    if tracing is not None:
        # Likewise only with traces, so that agents without keep their hash.
        covered["tracing"] = dict(tracing)
    return digest(covered)


def content_hash(prompt: PromptConfig) -> str:
    """Hash of one prompt version's content, without its version number.

    A snapshot is identified by (version, content hash); leaving the version
    out lets the operator recognise the same content under two versions.
    """
    exclude = {"version"}
    if prompt.client_inputs == ClientInputsConfig():
        # Snapshots taken before packs could declare client inputs keep their identity.
        exclude.add("client_inputs")
    # Likewise for packs from before they could describe the agent.
    if not prompt.description:
        exclude.add("description")
    if not prompt.skills:
        exclude.add("skills")
    return digest(prompt.model_dump(mode="json", by_alias=True, exclude=exclude))
