"""The agent configuration: what one agent pod (or one ``omnia run``) needs.

The custom resources describe an agent as four objects owned by different
people; the runtime and the facade should not care about that split, nor about
Kubernetes at all. So the operator and the local CLI both *render* the four
resources into one ``AgentConfig`` document (the operator stores it in a
ConfigMap, ``omnia run`` in a temporary file) and the processes read only that.

Secrets never appear here: a credential is named by the environment variable
that will carry it (``apiKeyEnv``), which Kubernetes fills from a
``secretKeyRef`` and ``omnia run`` fills from the caller's environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = "1"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ScriptedToolCall(_Model):
    """A tool call the mock provider makes instead of (or before) replying."""

    name: str
    arguments: dict = Field(default_factory=dict)
    id: str | None = None


class ScriptedError(_Model):
    """An error the mock provider raises, to test failure paths."""

    code: str = "provider_error"
    message: str = "injected provider error"
    retryable: bool = False
    status: int | None = None
    after_chunks: int = Field(
        default=0, ge=0, description="Text chunks streamed before the error; 0 fails at once."
    )


class ScriptedReply(_Model):
    """One scripted model response of the mock provider.

    A reply with ``tool_calls`` asks for those tools; the next reply in the
    script is then used for the model's answer after the tool results.
    """

    text: str = ""
    chunk_size: int = Field(default=8, ge=1)
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    error: ScriptedError | None = None
    delay_ms: int = Field(default=0, ge=0, description="Pause before the first chunk.")
    chunk_delay_ms: int = Field(default=0, ge=0, description="Pause between chunks.")
    match: str | None = Field(
        default=None,
        description="Use this reply only when the user message contains this text.",
    )
    input_tokens: int | None = Field(default=None, ge=0, description="Reported; estimated if unset.")
    output_tokens: int | None = Field(default=None, ge=0, description="Reported; estimated if unset.")


class MockScript(_Model):
    """The deterministic script of the ``mock`` provider.

    Replies with ``match`` are chosen first by substring; the others are used
    in turn (cycling). With no script at all, the mock echoes the user.
    """

    replies: list[ScriptedReply] = Field(default_factory=list)


class Pricing(_Model):
    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, *, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


class ProviderConfig(_Model):
    type: Literal["claude", "openai", "gemini", "ollama", "vllm", "mock", "local"] = "local"
    name: str = "default"
    model: str = ""
    base_url: str | None = Field(default=None, alias="baseURL")
    api_key_env: str | None = Field(
        default=None, description="Environment variable that carries the API key."
    )
    temperature: float | None = None
    max_tokens: int = 512
    timeout_seconds: float = 60.0
    max_retries: int = 2
    pricing: Pricing = Field(default_factory=Pricing)
    mock: MockScript | None = None
    model_path: str | None = Field(default=None, description="GGUF file for ``local``.")
    context_size: int = 2048
    threads: int | None = None


DEFAULT_CLIENT_MAX_LENGTH = 256
"""Longest string a client may give a declared variable when the pack sets no maxLength."""


class ClientVariableConfig(_Model):
    """A prompt variable a client may set in a message's metadata, and what it accepts."""

    type: Literal["string", "integer", "number", "boolean", "enum"] = "string"
    pattern: str | None = Field(default=None, description="Regular expression the whole value must match.")
    max_length: int = DEFAULT_CLIENT_MAX_LENGTH
    values: list[str] = Field(default_factory=list, description="The accepted values of an enum.")


class ClientInputsConfig(_Model):
    """What a client may set; nothing unless the pack declares it."""

    variables: dict[str, ClientVariableConfig] = Field(default_factory=dict)
    templates: list[str] = Field(default_factory=list)


class SkillConfig(_Model):
    """Something the agent is good at, as its A2A agent card lists it."""

    id: str
    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class PromptConfig(_Model):
    """One immutable version of a PromptPack."""

    version: str = "0.0.0"
    description: str = ""
    skills: list[SkillConfig] = Field(default_factory=list)
    system_prompt: str = "You are a helpful assistant."
    templates: dict[str, str] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)
    client_inputs: ClientInputsConfig = Field(default_factory=ClientInputsConfig)


class PromptRollout(_Model):
    """The stable prompt version and, during a canary, the candidate.

    ``canary_weight`` percent of *new* sessions get the canary; a session
    keeps the version it started with for its whole life.
    """

    stable: PromptConfig = Field(default_factory=PromptConfig)
    canary: PromptConfig | None = None
    canary_weight: int = Field(default=0, ge=0, le=100)
    retained: list[PromptConfig] = Field(
        default_factory=list,
        description="Earlier versions that sessions started on and still use.",
    )


class ToolConfig(_Model):
    """A tool the agent may call. Handlers are resolved by the runtime."""

    name: str
    type: Literal["http", "mcp", "openapi", "client"]
    description: str = ""
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    require_approval: bool = False
    timeout_seconds: float = 30.0
    retries: int = 0
    handler: dict = Field(default_factory=dict, description="The handler's own block.")


class SessionConfig(_Model):
    type: Literal["memory", "redis", "postgres"] = "memory"
    url_env: str | None = Field(
        default=None, description="Environment variable that carries the store URL."
    )
    ttl_seconds: int = 86_400
    max_turns: int = 1_000
    max_bytes: int = 4 * 1024 * 1024


class BudgetLimit(_Model):
    """Most an agent may spend in one period; an unset field is not limited."""

    tokens: int | None = Field(default=None, ge=0, description="Input plus output tokens.")
    cost_usd: float | None = Field(default=None, ge=0, alias="costUSD")

    @property
    def limited(self) -> bool:
        return self.tokens is not None or self.cost_usd is not None


class BudgetLimits(_Model):
    daily: BudgetLimit | None = None
    monthly: BudgetLimit | None = None

    @property
    def limited(self) -> bool:
        return any(limit is not None and limit.limited for limit in (self.daily, self.monthly))


class SharedBudgetConfig(BudgetLimits):
    """A budget that every agent of the namespace naming it counts against."""

    name: str


class BudgetConfig(BudgetLimits):
    """The agent's own budget (``daily``, ``monthly``) and an optional shared one."""

    shared: SharedBudgetConfig | None = None

    @property
    def enforced(self) -> bool:
        return self.limited or (self.shared is not None and self.shared.limited)


class AuthConfig(_Model):
    type: Literal["none", "apiKey", "jwt"] = "none"
    api_keys_env: str | None = Field(
        default=None, description="Environment variable with comma-separated API keys."
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwks_url: str | None = Field(default=None, alias="jwksURL")


class ProtocolsConfig(_Model):
    """The open protocols the facade serves beside its own WebSocket protocol."""

    openai: bool = True
    mcp: bool = True
    a2a: bool = True


class FacadeConfig(_Model):
    port: int = 8080
    auth: AuthConfig = Field(default_factory=AuthConfig)
    protocols: ProtocolsConfig = Field(default_factory=ProtocolsConfig)
    max_connections: int = 1_000
    max_connections_per_principal: int = 0
    max_message_bytes: int = 64 * 1024
    messages_per_second: float = 10.0
    message_burst: int = 20
    drain_timeout_seconds: float = 30.0
    turn_timeout_seconds: float = 300.0
    max_output_buffer_bytes: int = 256 * 1024
    send_timeout_seconds: float = 30.0
    request_header_timeout_seconds: float = 10.0
    max_request_header_bytes: int = 64 * 1024
    max_pending_connections: int = 512
    max_pending_connections_per_address: int = 64


class AgentConfig(_Model):
    """Everything one agent needs, rendered from its custom resources."""

    name: str = "agent"
    namespace: str = "default"
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    prompts: PromptRollout = Field(default_factory=PromptRollout)
    tools: list[ToolConfig] = Field(default_factory=list)
    session: SessionConfig = Field(default_factory=SessionConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    facade: FacadeConfig = Field(default_factory=FacadeConfig)
    max_tool_iterations: int = 8
    max_history_messages: int = 100

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        return cls.model_validate(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        return cls.from_json(Path(path).read_text())
