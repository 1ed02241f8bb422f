"""Provider: one LLM endpoint an agent talks to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from omnia.api.v1alpha1.common import (
    API_VERSION,
    ApiModel,
    Conditions,
    JSONObject,
    ObjectMeta,
    Resource,
    Rule,
    SecretKeySelector,
    StatusModel,
    conditions_field,
    defaults_of,
    observed_generation_field,
)

ProviderType = Literal["claude", "openai", "gemini", "ollama", "vllm", "mock", "local"]
HOSTED_TYPES = ("claude", "openai", "gemini")


class Credentials(ApiModel):
    """Where the provider's API key lives. It is passed to the pod as a secretKeyRef, never copied."""

    secret_ref: SecretKeySelector = Field(
        description="Secret key holding the API key.",
    )


class ProviderDefaults(ApiModel):
    """Request settings applied to every call unless the agent overrides them."""

    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; omitted uses the model's default."
    )
    max_tokens: int = Field(default=512, ge=1, description="Maximum number of output tokens per model call.")
    timeout_seconds: int = Field(default=60, ge=1, description="Timeout of one model call, in seconds.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a model call that failed with a retryable error."
    )


class Pricing(ApiModel):
    """Prices used for cost accounting in metrics and the `done` frame."""

    input_per_million: float = Field(default=0, ge=0, description="USD per million input tokens.")
    output_per_million: float = Field(default=0, ge=0, description="USD per million output tokens.")


class MockToolCall(ApiModel):
    """A tool call the mock model makes."""

    name: str = Field(min_length=1, description="Name of the tool to call.")
    arguments: JSONObject = Field(
        default_factory=dict,
        description="Arguments of the call, as a JSON object.",
    )
    id: str | None = Field(default=None, description="Call id; generated when omitted.")


class MockError(ApiModel):
    """An error the mock model raises, to exercise failure paths."""

    code: str = Field(
        default="provider_error", min_length=1, description="Error code reported by the provider, e.g. rate_limit."
    )
    message: str = Field(default="injected provider error", description="Error message.")
    retryable: bool = Field(default=False, description="Whether the error is reported as retryable.")
    after_chunks: int = Field(
        default=0,
        ge=0,
        description="Number of text chunks streamed before the error; 0 fails before any output.",
    )


class MockReply(ApiModel):
    """One scripted model response: text, tool calls, an error, or a mix."""

    validation_rules = (
        Rule(
            cel="has(self.text) || (has(self.toolCalls) && size(self.toolCalls) > 0) || has(self.error)",
            message="a mock reply needs text, toolCalls or error",
            check=lambda reply: reply.text is not None or bool(reply.tool_calls) or reply.error is not None,
        ),
    )

    match: str | None = Field(
        default=None,
        description="Use this reply whenever the latest user message contains this text. "
        "Replies with match are tried first, in order; the others are served in turn.",
    )
    text: str | None = Field(default=None, description="Text of the reply, streamed in chunks.")
    chunk_size: int = Field(default=8, ge=1, description="Characters per streamed chunk.")
    tool_calls: list[MockToolCall] = Field(
        default_factory=list,
        description="Tool calls the model makes; the next reply answers after the tool results.",
    )
    error: MockError | None = Field(
        default=None,
        description="Error to raise instead of (or during) the reply.",
    )
    delay_ms: int = Field(
        default=0, ge=0,
        description="Delay before the first chunk (time to first token), in ms.",
    )
    chunk_delay_ms: int = Field(default=0, ge=0, description="Delay between chunks, in ms.")
    input_tokens: int | None = Field(
        default=None, ge=0,
        description="Input tokens to report; estimated when omitted.",
    )
    output_tokens: int | None = Field(
        default=None, ge=0, description="Output tokens to report; estimated when omitted."
    )


class MockScript(ApiModel):
    """The script of the deterministic `mock` provider, for tests and load tests."""

    replies: list[MockReply] = Field(
        default_factory=list,
        description="Scripted replies. Replies without match are used in turn, cycling; "
        "with no replies at all the mock echoes the user's message.",
    )


class LocalModel(ApiModel):
    """The embedded llama.cpp model of the `local` provider."""

    model_path: str | None = Field(
        default=None,
        description="Path of a GGUF model file in the runtime container; omitted uses the model shipped with Omnia.",
    )
    context_size: int = Field(default=2048, ge=128, description="Context window in tokens.")
    threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads for inference; omitted uses all cores.",
    )


class ProviderSpec(ApiModel):
    """The desired state of a Provider."""

    validation_rules = (
        Rule(
            cel="!(self.type in ['claude', 'openai', 'gemini']) || has(self.credentials)",
            message="providers of type claude, openai and gemini need credentials.secretRef",
            check=lambda spec: spec.type not in HOSTED_TYPES or spec.credentials is not None,
        ),
        Rule(
            cel="self.type != 'vllm' || has(self.baseURL)",
            message="providers of type vllm need baseURL",
            check=lambda spec: spec.type != "vllm" or spec.base_url is not None,
        ),
        Rule(
            cel="!has(self.mock) || self.type == 'mock'",
            message="the mock block is only allowed with type mock",
            check=lambda spec: spec.mock is None or spec.type == "mock",
        ),
        Rule(
            cel="!has(self.local) || self.type == 'local'",
            message="the local block is only allowed with type local",
            check=lambda spec: spec.local is None or spec.type == "local",
        ),
    )

    type: ProviderType = Field(description="Kind of LLM API: claude, openai, gemini, ollama, vllm, mock or local.")
    model: str | None = Field(
        default=None,
        description="Model name as the API knows it, e.g. claude-sonnet-4-5; omitted uses the provider's default.",
    )
    base_url: str | None = Field(
        default=None,
        alias="baseURL",
        description="Base URL of the API, for OpenAI-compatible servers (vllm, ollama) or proxies.",
    )
    credentials: Credentials | None = Field(
        default=None,
        description="Where the API key lives; required for claude, openai and gemini. "
        "The key reaches the pod as a secretKeyRef and is never copied.",
    )
    defaults: ProviderDefaults = Field(
        default_factory=ProviderDefaults,
        json_schema_extra={"default": defaults_of(ProviderDefaults)},
        description="Request settings applied to every model call: temperature, token limit, timeout, retries.",
    )
    pricing: Pricing | None = Field(
        default=None,
        description="Prices in USD per million tokens, for cost accounting in metrics and the done frame.",
    )
    mock: MockScript | None = Field(
        default=None,
        description="Script of the deterministic mock provider (type mock only): replies, streamed chunks, "
        "tool calls, injected errors and delays.",
    )
    local: LocalModel | None = Field(
        default=None,
        description="Settings of the embedded llama.cpp model (type local only).",
    )


ProviderPhase = Literal["Pending", "Ready", "Failed"]


class ProviderStatus(StatusModel):
    """The observed state of a Provider."""

    phase: ProviderPhase | None = Field(
        default=None,
        description="Summary of the state: Pending, Ready or Failed.",
    )
    conditions: Conditions = conditions_field(
        "Current conditions: CredentialsFound (the referenced Secret key exists), Ready."
    )
    observed_generation: int | None = observed_generation_field()


class Provider(Resource):
    """A Provider is one LLM endpoint: its API type, model, credentials, defaults and prices."""

    plural = "providers"
    singular = "provider"

    api_version: Literal["omnia.altairalabs.ai/v1alpha1"] = Field(
        default=API_VERSION, description="API version: omnia.altairalabs.ai/v1alpha1."
    )
    kind: Literal["Provider"] = Field(default="Provider", description="Kind: Provider.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ProviderSpec = Field(description="Desired state of the Provider.")
    status: ProviderStatus = Field(
        default_factory=ProviderStatus,
        description="Observed state of the Provider.",
    )
