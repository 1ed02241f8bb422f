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

from omnia.config import AgentConfig, ClientInputsConfig, PromptConfig, PromptRollout

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
    prompts_held: Mapping[str, str] | None = None,
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

    Of the prompts, only the content of the versions the pods hold is
    covered (``prompts_held``, see :func:`held_prompts`; by default :func:`prompt_versions` of the
    config), not which of them is stable, the canary or retained, nor the
    canary's weight: the runtime applies those from its mounted config
    without a restart (``omnia.runtime.routing``).
    """
    rendered = json.loads(config.to_json())
    rendered["prompts"] = dict(sorted((prompts_held or prompt_versions(config.prompts)).items()))
    covered: dict[str, Any] = {
        "config": rendered,
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


def prompt_versions(rollout: PromptRollout) -> dict[str, str]:
    """Each version the rollout names (stable, canary, retained), with the digest of its whole content."""
    prompts = (rollout.stable, rollout.canary, *rollout.retained)
    return {p.version: digest(p.model_dump(mode="json", by_alias=True)) for p in prompts if p is not None}


def held_prompts(desired: Mapping[str, str], running: Mapping[str, str] | None) -> dict[str, str]:
    """The prompt versions the pods must hold: ``running``'s when they include ``desired``.

    A rollout that names only versions the pods already hold (a weight
    step, a promotion, a rollback) changes nothing the pods must hold, so
    it keeps their hash; a new version or new content means new pods.
    """
    if running is not None and all(running.get(v) == h for v, h in desired.items()):
        return dict(running)
    return dict(desired)


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
