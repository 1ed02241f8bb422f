"""Reading the cluster's manifests from disk, for ``omnia run`` and ``omnia render``.

The same YAML that goes to ``kubectl apply`` is read here: Omnia's four kinds,
plus the ConfigMaps and Secrets they reference. Every error names the file,
the document and the field, so a broken manifest is fixed before it reaches a
cluster.
"""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnia import sessions
from omnia.agent import prompts as prompting
from omnia.api.v1alpha1 import (
    AgentRuntime,
    ManifestError,
    PromptPack,
    Provider,
    ToolRegistry,
    parse_manifest,
)
from omnia.config import AgentConfig, PromptRollout
from omnia.rendering import (
    FACADE_API_KEYS_ENV,
    PROVIDER_API_KEY_ENV,
    SESSION_URL_ENV,
    RenderError,
    prompt_config,
    render_agent_config,
    tool_configs,
)
from omnia.tools import credentials

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
OMNIA_GROUP = "omnia.altairalabs.ai"
OMNIA_KINDS = ("AgentRuntime", "PromptPack", "Provider", "ToolRegistry")

# Locally, a hosted Provider's key may also come from the variable its vendor's own
# tools read. Only ``omnia run`` looks here: in a cluster keys come from Secrets alone.
VENDOR_KEY_ENVS = {"claude": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}


class ManifestLoadError(Exception):
    """Manifests that cannot make an agent; ``str()`` is the message for the user."""


@dataclass
class Manifests:
    agents: dict[str, AgentRuntime] = field(default_factory=dict)
    prompt_packs: dict[str, PromptPack] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)
    tool_registries: dict[str, ToolRegistry] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    files: dict[tuple[str, str], Path] = field(default_factory=dict)


def manifest_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each file given, and the manifest files of each folder, sorted."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            if not found:
                raise ManifestLoadError(f"{path}: no manifest files (*.yaml, *.yml, *.json) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestLoadError(f"{path}: no such file or folder")
    return files


def load(paths: Sequence[str | Path]) -> Manifests:
    manifests = Manifests()
    for path in manifest_files(paths):
        for index, obj in _documents(path):
            _add(manifests, obj, where=f"{path} (document {index + 1})", path=path)
    return manifests


def _documents(path: Path) -> Iterable[tuple[int, dict]]:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        raise ManifestLoadError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ManifestLoadError(f"{path}: {exc.strerror}") from None
    for index, obj in enumerate(documents):
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise ManifestLoadError(f"{path} (document {index + 1}): a manifest must be a mapping")
        if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            for item in obj["items"]:
                yield index, item
        else:
            yield index, obj


def _add(manifests: Manifests, obj: dict, *, where: str, path: Path) -> None:
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name")
    if kind in ("ConfigMap", "Secret"):
        if not name:
            raise ManifestLoadError(f"{where}: {kind} needs metadata.name")
        target = manifests.config_maps if kind == "ConfigMap" else manifests.secrets
        target[name] = _secret_data(obj, where=where) if kind == "Secret" else _string_map(obj.get("data"), where)
        return
    if kind not in OMNIA_KINDS and str(obj.get("apiVersion", "")).partition("/")[0] == OMNIA_GROUP:
        # Ignoring it would leave the real mistake to a confusing "not among the manifests" later.
        close = difflib.get_close_matches(str(kind), OMNIA_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the kinds are {', '.join(OMNIA_KINDS)}"
        raise ManifestLoadError(f"{where}: kind {kind!r} is not a kind of {OMNIA_GROUP}{hint}")
    if kind not in OMNIA_KINDS:
        manifests.ignored.append(f"{where}: {kind or 'a document without kind'} {name or ''}".rstrip())
        return
    try:
        resource = parse_manifest(obj)
    except ManifestError as exc:
        raise ManifestLoadError(f"{where}: {exc}") from None
    table = {
        "AgentRuntime": manifests.agents,
        "PromptPack": manifests.prompt_packs,
        "Provider": manifests.providers,
        "ToolRegistry": manifests.tool_registries,
    }[kind]
    resource_name = resource.metadata.name
    if resource_name in table:
        raise ManifestLoadError(f"{where}: {kind} {resource_name!r} is defined twice")
    table[resource_name] = resource
    manifests.origins[(kind, resource_name)] = where
    manifests.files[(kind, resource_name)] = path


def _string_map(data: Any, where: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ManifestLoadError(f"{where}: data must be a mapping")
    return {str(k): str(v) for k, v in data.items()}


def _secret_data(obj: dict, *, where: str) -> dict[str, str]:
    values = _string_map(obj.get("stringData"), where)
    for key, encoded in _string_map(obj.get("data"), where).items():
        try:
            values.setdefault(key, base64.b64decode(encoded, validate=True).decode())
        except ValueError:
            # binascii.Error, UnicodeDecodeError and non-ASCII input are all ValueErrors.
            raise ManifestLoadError(f"{where}: data.{key} is not base64-encoded text") from None
    return values


def secret_env_name(name: str, key: str) -> str:
    """The environment variable ``omnia run`` reads a Secret key from, e.g.
    Secret ``claude-credentials`` key ``api-key`` → ``CLAUDE_CREDENTIALS_API_KEY``.
    """
    return re.sub(r"[^A-Z0-9]", "_", f"{name}_{key}".upper())


@dataclass(frozen=True)
class LocalAgentPlan:
    """What ``omnia run`` starts: the config, and secret values for the children's environment."""

    config: AgentConfig
    secret_env: dict[str, str]
    notes: list[str]
    where: str
    """The AgentRuntime's file and document, for messages about it."""


def plan_local_agent(
    manifests: Manifests, *, agent_name: str | None, env: Mapping[str, str]
) -> LocalAgentPlan:
    """Resolve one AgentRuntime's references into the config a local run uses."""
    agent = _pick_agent(manifests, agent_name)
    where = manifests.origins[("AgentRuntime", agent.metadata.name)]
    spec = agent.spec
    pack = manifests.prompt_packs.get(spec.prompt_pack_ref.name)
    if pack is None:
        raise ManifestLoadError(
            f"{where}: spec.promptPackRef: PromptPack {spec.prompt_pack_ref.name!r} is not among the manifests"
        )
    provider = None
    notes = []
    if spec.provider_ref is not None:
        provider = manifests.providers.get(spec.provider_ref.name)
        if provider is None:
            raise ManifestLoadError(
                f"{where}: spec.providerRef: Provider {spec.provider_ref.name!r} is not among the manifests"
            )
    else:
        notes.append("no providerRef: using the embedded local model")
    registry = None
    if spec.tool_registry_ref is not None:
        registry = manifests.tool_registries.get(spec.tool_registry_ref.name)
        if registry is None:
            raise ManifestLoadError(
                f"{where}: spec.toolRegistryRef: ToolRegistry {spec.tool_registry_ref.name!r} is not among the manifests"
            )

    secret_env: dict[str, str] = {}
    lookup = _SecretLookup(manifests, env)
    if provider is not None and provider.spec.credentials is not None:
        ref = provider.spec.credentials.secret_ref
        provider_where = manifests.origins[("Provider", provider.metadata.name)]
        secret_env[PROVIDER_API_KEY_ENV], source = lookup.get_with_source(
            ref.name,
            ref.key,
            field=f"{provider_where}: Provider {provider.metadata.name!r} spec.credentials.secretRef",
            fallback_env=VENDOR_KEY_ENVS.get(provider.spec.type),
        )
        notes.append(f"Provider {provider.metadata.name!r}: API key from {source}")
    if spec.session.secret_ref is not None:
        ref = spec.session.secret_ref
        secret_env[SESSION_URL_ENV] = lookup.get(ref.name, ref.key, field=f"{where}: spec.session.secretRef")
    elif spec.session.type != "memory" and not env.get(SESSION_URL_ENV, "").strip():
        # In a cluster the operator fills the URL from the store named at
        # install time; locally the caller's environment stands in for it.
        raise ManifestLoadError(
            f"{where}: spec.session: type {spec.session.type} without secretRef uses the store named when Omnia "
            f"was installed; locally, set {SESSION_URL_ENV} to the store's URL, or set spec.session.secretRef "
            "(or use type memory)"
        )
    auth = spec.facade.auth
    if auth.type == "apiKey" and auth.secret_ref is not None:
        ref = auth.secret_ref
        secret_env[FACADE_API_KEYS_ENV] = lookup.get(ref.name, ref.key, field=f"{where}: spec.facade.auth.secretRef")
    tools_dir = None
    if registry is not None:
        registry_name = registry.metadata.name
        registry_where = manifests.origins[("ToolRegistry", registry_name)]
        # stdio MCP servers start beside their manifest, so an example folder is self-contained.
        tools_dir = str(manifests.files[("ToolRegistry", registry_name)].resolve().parent)
        try:
            needed = credentials.secret_envs(registry.spec)
        except credentials.CredentialError as exc:
            raise ManifestLoadError(f"{registry_where}: ToolRegistry {registry_name!r}: {exc}") from None
        for tool_secret in needed:
            secret_env[tool_secret.env] = lookup.get(
                tool_secret.secret,
                tool_secret.key,
                field=f"{registry_where}: ToolRegistry {registry_name!r} handler {tool_secret.handler!r} "
                f"{tool_secret.field}",
            )

    source_text = None
    if pack.spec.source is not None:
        ref = pack.spec.source.config_map_ref
        source_text = manifests.config_maps.get(ref.name, {}).get(ref.key)
    try:
        tools = tool_configs(registry, config_maps=manifests.config_maps, working_dir=tools_dir)
    except RenderError as exc:
        registry_where = manifests.origins[("ToolRegistry", registry.metadata.name)]
        raise ManifestLoadError(f"{registry_where}: {exc}") from None
    pack_where = manifests.origins[("PromptPack", pack.metadata.name)]
    try:
        prompt = prompt_config(pack.spec, source_text=source_text)
        prompting.check_sources(prompt)
        config = render_agent_config(agent, prompts=PromptRollout(stable=prompt), provider=provider, tools=tools)
    except (RenderError, prompting.PromptError) as exc:
        raise ManifestLoadError(f"{pack_where}: PromptPack {pack.metadata.name!r}: {exc}") from None
    if config.session.type != "memory":
        try:
            sessions.store_url(config.session, env={**env, **secret_env})
        except sessions.StoreConfigError as exc:
            raise ManifestLoadError(f"{where}: spec.session: {exc}") from None
    return LocalAgentPlan(config=config, secret_env=secret_env, notes=notes, where=where)


def _pick_agent(manifests: Manifests, agent_name: str | None) -> AgentRuntime:
    if agent_name is not None:
        try:
            return manifests.agents[agent_name]
        except KeyError:
            known = ", ".join(sorted(manifests.agents)) or "none"
            raise ManifestLoadError(f"no AgentRuntime named {agent_name!r} (found: {known})") from None
    if not manifests.agents:
        raise ManifestLoadError("no AgentRuntime among the manifests: nothing to run")
    if len(manifests.agents) > 1:
        known = ", ".join(sorted(manifests.agents))
        raise ManifestLoadError(f"several AgentRuntimes ({known}): choose one with --agent")
    return next(iter(manifests.agents.values()))


class _SecretLookup:
    def __init__(self, manifests: Manifests, env: Mapping[str, str]) -> None:
        self._manifests = manifests
        self._env = env

    def get(self, name: str, key: str, *, field: str) -> str:
        return self.get_with_source(name, key, field=field)[0]

    def get_with_source(
        self, name: str, key: str, *, field: str, fallback_env: str | None = None
    ) -> tuple[str, str]:
        """The value and where it came from, for a note that names the source but never the value.

        Order: the variable named after the Secret key, the Secret's manifest, then
        ``fallback_env`` (a vendor's conventional variable) when it is set and not empty.
        """
        variable = secret_env_name(name, key)
        if variable in self._env:
            return self._env[variable], f"the environment variable {variable}"
        secret = self._manifests.secrets.get(name)
        if secret is not None and key in secret:
            return secret[key], f"Secret {name!r} among the manifests"
        if fallback_env is not None and self._env.get(fallback_env, "").strip():
            return self._env[fallback_env], f"the environment variable {fallback_env}"
        also = f", or {fallback_env}," if fallback_env is not None else ""
        raise ManifestLoadError(
            f"{field}: Secret {name!r} key {key!r} not found; set the environment variable "
            f"{variable}{also} or add the Secret's manifest"
        )
