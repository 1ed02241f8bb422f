"""``omnia render``: the objects the operator would create, computed offline.

The same builder functions as the operator, fed from manifest files instead
of the cluster's caches. Some things cannot be known offline and differ from
what the operator writes: ownerReferences (the owners have no uid yet) and
the parts of the config hash that cover Secret versions and the tools a
ToolRegistry's MCP and OpenAPI handlers discover. A PromptPack is
rendered as its first version (stable, no canary), which is what the
operator publishes when it first sees it.

An agent on the default session store (redis or postgres, no secretRef)
needs the store the operator would be given: ``defaults.session_stores``
(``omnia render --default-session-secret``, as for ``omnia operator``). Its
mirror Secret is printed without data and without the source's version,
which only the cluster knows; without a default of its type the operator
would roll nothing out, and rendering fails with its reason
(``SessionStoreNotConfigured``) and advice.
"""

from __future__ import annotations

from typing import Any

import yaml

from omnia.api.v1alpha1 import AgentRuntime
from omnia.config import PromptRollout
from omnia.manifests import ManifestLoadError, Manifests
from omnia.operator import builders, hashing, sessionstores
from omnia.rendering import RenderError, prompt_config, render_agent_config, tool_configs
from omnia.tools.credentials import CredentialError


def render(manifests: Manifests, *, defaults: builders.Defaults) -> list[dict[str, Any]]:
    """Every object for every AgentRuntime and PromptPack in ``manifests``.

    Raises ``ManifestLoadError`` naming the file and field when an agent
    references something that is not among the manifests.
    """
    objects: list[dict[str, Any]] = []
    prompts = {}
    for name, pack in sorted(manifests.prompt_packs.items()):
        where = manifests.origins[("PromptPack", name)]
        source_text = None
        if pack.spec.source is not None:
            ref = pack.spec.source.config_map_ref
            source_text = manifests.config_maps.get(ref.name, {}).get(ref.key)
        try:
            prompt = prompt_config(pack.spec, source_text=source_text)
        except RenderError as exc:
            raise ManifestLoadError(f"{where}: {exc}") from None
        prompts[name] = prompt
        objects.append(builders.build_prompt_snapshot(pack, prompt=prompt, content_hash=hashing.content_hash(prompt)))
    for name, agent in sorted(manifests.agents.items()):
        objects.extend(_agent_objects(agent, manifests, prompts, defaults=defaults))
    return objects


def _agent_objects(agent: AgentRuntime, manifests: Manifests, prompts: dict, *, defaults: builders.Defaults) -> list[dict]:
    where = manifests.origins[("AgentRuntime", agent.metadata.name)]
    spec = agent.spec

    def lookup(table: dict, ref, field: str, kind: str):
        if ref is None:
            return None
        if ref.name not in table:
            raise ManifestLoadError(f"{where}: {field}: {kind} {ref.name!r} is not among the manifests")
        return table[ref.name]

    lookup(manifests.prompt_packs, spec.prompt_pack_ref, "spec.promptPackRef", "PromptPack")
    provider = lookup(manifests.providers, spec.provider_ref, "spec.providerRef", "Provider")
    registry = lookup(manifests.tool_registries, spec.tool_registry_ref, "spec.toolRegistryRef", "ToolRegistry")
    traces = builders.tracing(agent, defaults=defaults.tracing)
    try:
        tools = tool_configs(registry, config_maps=manifests.config_maps)
        secrets = builders.secret_env(agent, provider=provider, registry=registry, tracing=traces)
    except (RenderError, CredentialError) as exc:
        registry_where = manifests.origins[("ToolRegistry", registry.metadata.name)] if registry else where
        raise ManifestLoadError(f"{registry_where}: {exc}") from None
    config = render_agent_config(
        agent,
        prompts=PromptRollout(stable=prompts[spec.prompt_pack_ref.name]),
        provider=provider,
        tools=tools,
    )
    images = builders.pod_images(agent, default=defaults.image)
    config_hash = hashing.config_hash(
        config,
        secret_versions={item.secret: None for item in secrets},
        images=[images.facade, images.runtime],
        tracing=traces.to_dict() if traces else None,
    )
    mirrors = []
    if sessionstores.uses_default(agent):
        store = defaults.session_stores.get(spec.session.type)
        if store is None:
            message = sessionstores.not_configured_message(spec.session.type)
            raise ManifestLoadError(f"{where}: spec.session: {sessionstores.NOT_CONFIGURED}: {message}")
        mirrors.append(builders.build_session_store_secret(agent, store=store, source_version=None, value=None))
    try:
        return mirrors + builders.build_agent_objects(
            agent,
            config=config,
            config_hash=config_hash,
            secrets=secrets,
            registry=registry,
            defaults=defaults,
            replicas=builders.desired_replicas(agent, deployment_exists=False),
            prompt_versions=hashing.prompt_versions(config.prompts),
        ).objects
    except builders.BuildError as exc:
        raise ManifestLoadError(f"{where}: {exc}") from None


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (``agent.json``, prompts) as literal blocks, readable in a diff."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, in the order given, keys in manifest order."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, explicit_start=True,
                         width=120)
