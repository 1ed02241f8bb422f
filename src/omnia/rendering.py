"""From custom resources to the one ``AgentConfig`` an agent pod reads.

Pure functions shared by the operator (which stores the result in the
agent's ConfigMap) and ``omnia run`` (which writes it to a temporary file):
the same manifests give the same agent in both places.

Credentials stay references: the rendered config names the environment
variables that will carry them (``PROVIDER_API_KEY_ENV`` and friends); the
pod fills those from ``secretKeyRef``, ``omnia run`` from the caller's
environment or Secret manifests beside the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import yaml

from omnia.api.v1alpha1 import (
    AgentRuntime,
    BudgetSpec,
    ClientInputs,
    PromptPackSpec,
    Provider,
    EgressPolicy,
    ToolHandler,
    ToolRegistry,
    parse_duration,
)
from omnia.config import (
    DEFAULT_CLIENT_MAX_LENGTH,
    AgentConfig,
    AuthConfig,
    BudgetConfig,
    ClientInputsConfig,
    ClientVariableConfig,
    FacadeConfig,
    MockScript,
    Pricing,
    PromptConfig,
    PromptRollout,
    ProtocolsConfig,
    ProviderConfig,
    SessionConfig,
    SkillConfig,
    ToolConfig,
)
from omnia.tools import credentials

PROVIDER_API_KEY_ENV = "OMNIA_PROVIDER_API_KEY"
SESSION_URL_ENV = "OMNIA_SESSION_URL"
FACADE_API_KEYS_ENV = "OMNIA_API_KEYS"


class RenderError(ValueError):
    """The resources cannot make an agent; the message names the field."""


def prompt_config(spec: PromptPackSpec, *, source_text: str | None = None) -> PromptConfig:
    """One PromptPack version; ``source_text`` is the ConfigMap value when the pack uses one."""
    inputs = client_inputs_config(spec.client_inputs)
    described = {
        "description": spec.description or "",
        "skills": [SkillConfig.model_validate(skill.model_dump()) for skill in spec.skills],
    }
    if spec.source is None:
        return PromptConfig(
            version=spec.version,
            system_prompt=spec.system_prompt or "",
            templates=dict(spec.templates),
            variables=dict(spec.variables),
            client_inputs=inputs,
            **described,
        )
    ref = spec.source.config_map_ref
    if source_text is None:
        raise RenderError(f"spec.source.configMapRef: ConfigMap {ref.name!r} key {ref.key!r} not found")
    try:
        content = yaml.safe_load(source_text)
    except yaml.YAMLError as exc:
        raise RenderError(f"ConfigMap {ref.name!r} key {ref.key!r} is not YAML: {exc}") from None
    if isinstance(content, str):
        content = {"systemPrompt": content}
    if not isinstance(content, dict) or not isinstance(content.get("systemPrompt"), str):
        raise RenderError(
            f"ConfigMap {ref.name!r} key {ref.key!r} must hold a systemPrompt "
            "(with optional templates and variables)"
        )
    unknown = set(content) - {"systemPrompt", "templates", "variables"}
    if unknown:
        raise RenderError(f"ConfigMap {ref.name!r} key {ref.key!r}: unknown fields {sorted(unknown)}")
    templates = {str(k): str(v) for k, v in (content.get("templates") or {}).items()}
    missing = [name for name in inputs.templates if name not in templates]
    if missing:
        raise RenderError(
            f"spec.clientInputs.templates: {missing} are not templates of ConfigMap {ref.name!r} key {ref.key!r}"
        )
    return PromptConfig(
        version=spec.version,
        system_prompt=content["systemPrompt"],
        templates=templates,
        variables={str(k): str(v) for k, v in (content.get("variables") or {}).items()},
        client_inputs=inputs,
        **described,
    )


def client_inputs_config(inputs: ClientInputs | None) -> ClientInputsConfig:
    """What clients may set (nothing without a declaration), the API's omitted limits filled in."""
    if inputs is None:
        return ClientInputsConfig()
    variables = {}
    for variable in inputs.variables:
        if variable.pattern is not None:
            try:
                re.compile(variable.pattern)
            except re.error as exc:
                raise RenderError(f"spec.clientInputs.variables[{variable.name}].pattern: {exc}") from None
        variables[variable.name] = ClientVariableConfig(
            type=variable.type,
            pattern=variable.pattern,
            max_length=variable.max_length or DEFAULT_CLIENT_MAX_LENGTH,
            values=list(variable.values),
        )
    return ClientInputsConfig(variables=variables, templates=list(inputs.templates))


def provider_config(provider: Provider | None) -> ProviderConfig:
    """The provider block; no Provider at all means the embedded ``local`` model."""
    if provider is None:
        return ProviderConfig(type="local", name="local", model="smollm2-135m-instruct")
    spec = provider.spec
    defaults = spec.defaults
    mock = None
    if spec.mock is not None:
        mock = MockScript.model_validate(spec.mock.model_dump(by_alias=True, exclude_none=True))
    local = spec.local
    return ProviderConfig(
        type=spec.type,
        name=provider.metadata.name,
        model=spec.model or _default_model(spec.type),
        base_url=spec.base_url,
        api_key_env=PROVIDER_API_KEY_ENV if spec.credentials is not None else None,
        temperature=defaults.temperature,
        max_tokens=defaults.max_tokens,
        timeout_seconds=defaults.timeout_seconds,
        max_retries=defaults.max_retries,
        pricing=Pricing(
            input_per_million=spec.pricing.input_per_million if spec.pricing else 0.0,
            output_per_million=spec.pricing.output_per_million if spec.pricing else 0.0,
        ),
        mock=mock,
        model_path=local.model_path if local else None,
        context_size=local.context_size if local else 2048,
        threads=local.threads if local else None,
    )


def _default_model(provider_type: str) -> str:
    return {
        "claude": "claude-sonnet-4-5",
        "openai": "gpt-4o-mini",
        "gemini": "gemini-2.0-flash",
        "mock": "mock",
        "local": "smollm2-135m-instruct",
    }.get(provider_type, "")


def tool_configs(
    registry: ToolRegistry | None,
    *,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    working_dir: str | None = None,
) -> list[ToolConfig]:
    """One entry per handler, in spec order.

    ``http`` and ``client`` handlers are one tool each. An ``mcp`` or
    ``openapi`` entry names a source of tools instead: the runtime lists its
    tools at start-up (``omnia.tools.Toolbox``). Secret header values become
    the names of the environment variables that carry them. ``config_maps``
    (name → data) holds the ConfigMaps that OpenAPI documents come from;
    ``working_dir`` is where ``omnia run`` starts stdio MCP servers.
    """
    if registry is None:
        return []
    try:
        credentials.secret_envs(registry.spec)
    except credentials.CredentialError as exc:
        raise RenderError(f"ToolRegistry {registry.metadata.name!r}: {exc}") from None
    return [
        tool_config(handler, config_maps=config_maps or {}, working_dir=working_dir, egress=registry.spec.egress)
        for handler in registry.spec.handlers
    ]


def tool_config(
    handler: ToolHandler,
    *,
    config_maps: Mapping[str, Mapping[str, str]],
    working_dir: str | None = None,
    egress: EgressPolicy | None = None,
) -> ToolConfig:
    """The config entry of one handler; see ``tool_configs``.

    Handlers that reach servers over the network carry the registry's
    ``egress`` policy (the defaults when None) in their block.
    """
    block = getattr(handler, handler.type)
    data = block.model_dump(by_alias=True, exclude_none=True)
    description, schema = "", None
    if handler.type in ("http", "mcp", "openapi"):
        data["headers"] = credentials.rendered_values(block.headers, handler=handler.name, kind="header")
        if handler.type != "mcp" or block.transport != "stdio":
            data["egress"] = (egress or EgressPolicy()).model_dump(by_alias=True, exclude_none=True)
    if handler.type == "http":
        description, schema = block.description, block.arguments_schema
    elif handler.type == "client":
        description, schema = block.description, block.parameters_schema
    elif handler.type == "mcp":
        data["env"] = credentials.rendered_values(block.env, handler=handler.name, kind="env")
        if block.transport == "stdio" and working_dir is not None:
            data["workingDir"] = working_dir
    elif block.config_map_ref is not None:
        ref = block.config_map_ref
        document = config_maps.get(ref.name, {}).get(ref.key)
        if document is None:
            raise RenderError(
                f"handler {handler.name!r} openapi.configMapRef: ConfigMap {ref.name!r} key {ref.key!r} not found"
            )
        del data["configMapRef"]
        data["document"] = document
    return ToolConfig(
        name=handler.name,
        type=handler.type,
        description=description or "",
        parameters=schema or {"type": "object", "properties": {}},
        require_approval=handler.require_approval,
        timeout_seconds=handler.timeout_seconds,
        retries=handler.retries,
        handler=data,
    )


def render_agent_config(
    agent: AgentRuntime,
    *,
    prompts: PromptRollout,
    provider: Provider | None,
    tools: Iterable[ToolConfig] = (),
) -> AgentConfig:
    spec = agent.spec
    session = spec.session
    facade = spec.facade
    auth = facade.auth
    return AgentConfig(
        name=agent.metadata.name,
        namespace=agent.metadata.namespace or "default",
        provider=provider_config(provider),
        prompts=prompts,
        tools=list(tools),
        session=SessionConfig(
            type=session.type,
            # The agent's own secretRef, the installation's default store
            # (the operator's mirror) or, for omnia run, the environment.
            url_env=SESSION_URL_ENV if session.type != "memory" else None,
            ttl_seconds=int(parse_duration(session.ttl).total_seconds()),
            max_turns=session.max_turns,
            max_bytes=session.max_bytes,
        ),
        facade=FacadeConfig(
            port=facade.port,
            auth=AuthConfig(
                type=auth.type,
                api_keys_env=FACADE_API_KEYS_ENV if auth.type == "apiKey" else None,
                jwt_issuer=auth.jwt.issuer if auth.jwt else None,
                jwt_audience=auth.jwt.audience if auth.jwt else None,
                jwks_url=auth.jwt.jwks_url if auth.jwt else None,
            ),
            protocols=ProtocolsConfig(
                openai=facade.protocols.openai, mcp=facade.protocols.mcp, a2a=facade.protocols.a2a
            ),
            max_connections=facade.max_connections,
            max_connections_per_principal=facade.max_connections_per_principal,
            max_message_bytes=facade.max_message_bytes,
            messages_per_second=facade.messages_per_second,
            message_burst=facade.message_burst,
            drain_timeout_seconds=facade.drain_timeout_seconds,
            turn_timeout_seconds=facade.turn_timeout_seconds,
            max_output_buffer_bytes=facade.max_output_buffer_bytes,
            send_timeout_seconds=facade.send_timeout_seconds,
            request_header_timeout_seconds=facade.request_header_timeout_seconds,
            max_request_header_bytes=facade.max_request_header_bytes,
            max_pending_connections=facade.max_pending_connections,
            max_pending_connections_per_address=facade.max_pending_connections_per_address,
        ),
        budget=budget_config(spec.budget),
        max_tool_iterations=spec.max_tool_iterations,
    )


def budget_config(budget: BudgetSpec | None) -> BudgetConfig:
    if budget is None:
        return BudgetConfig()
    return BudgetConfig.model_validate(budget.model_dump(by_alias=True, exclude_none=True))
