"""The ``openai`` provider: any server that speaks OpenAI's Chat Completions API.

One adapter serves several provider types, because they speak one protocol:

- ``openai``: api.openai.com (an API key is required);
- ``vllm`` and ``ollama``: their OpenAI-compatible endpoints at ``baseURL``
  (the key is optional; without one a placeholder is sent, which they ignore);
- ``gemini``: Google's OpenAI-compatible endpoint. Gemini gets no SDK of its
  own: that endpoint covers streaming, tool calls and usage, which is all the
  agent loop uses;
- ``local``'s HTTP API (``LocalEngine.base_url``), for OpenAI clients of the
  embedded model.

The reply is streamed with ``stream_options.include_usage``, so usage arrives
in a last chunk with no choices. Tool calls arrive as fragments keyed by
``index`` (the id and name first, then pieces of the JSON arguments); they are
put together and announced as complete ``ToolCallRequest`` events once the
model has finished, just before ``Finish``. Some compatible servers report
``finish_reason: stop`` for a reply that calls tools; a reply with tool calls
is always normalised to ``tool_calls``.

``api.openai.com`` takes the output limit as ``max_completion_tokens`` (its
reasoning models refuse ``max_tokens``); compatible servers get the older
``max_tokens``, which all of them accept.

``timeout_seconds`` bounds every network wait (connecting, the first byte,
any gap between streamed chunks), not the length of a whole reply: a long
answer that keeps streaming is not cut off.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import openai
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from omnia.config import ProviderConfig
from omnia.eventbound import too_large_in
from omnia.providers._retrying import (
    RetryPolicy,
    TransientError,
    retry_after_seconds,
    stream_with_retries,
)
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    Usage,
    bounded_events,
    past,
    runaway_reply,
)

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai/",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
}
KEY_REQUIRED = frozenset({"openai", "gemini"})
NO_KEY = "unused"

_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


class OpenAIProvider:
    """A Chat Completions endpoint as a ``Provider``.

    Retries (``retry``) happen only before the first event of a reply.

    Cancellation: cancelling the consumer (or closing the stream) closes the
    HTTP response, which releases the connection and tells the server to stop.
    """

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI,
        model: str,
        provider_type: str = "openai",
        temperature: float | None = None,
        max_tokens: int = 512,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.type = provider_type
        self.model = model
        self._client = client
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._retry = retry
        self._limit_param = "max_completion_tokens" if provider_type == "openai" else "max_tokens"

    @classmethod
    def from_config(
        cls, config: ProviderConfig, *, api_key: str | None, retry: RetryPolicy | None = None
    ) -> OpenAIProvider:
        """Build the provider and its SDK client; no network call is made."""
        if not api_key and config.type in KEY_REQUIRED:
            raise ProviderError(f"the {config.type} provider needs an API key: {_missing_key(config)}")
        base_url = config.base_url or DEFAULT_BASE_URLS.get(config.type)
        if not base_url:
            raise ProviderError(f"the {config.type} provider needs a baseURL")
        client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY,
            base_url=base_url,
            timeout=config.timeout_seconds,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks=bounded_events()),
        )
        return cls(
            client=client,
            model=config.model,
            provider_type=config.type,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            retry=retry or RetryPolicy(max_retries=config.max_retries),
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        return stream_with_retries(lambda: self._attempt(request), policy=self._retry)

    async def prepare(self) -> None:
        """Nothing to load: the API is remote, and its key was checked when this was made."""

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        await self._client.close()

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        try:
            chunks = await self._client.chat.completions.create(**self._params(request))
        except openai.APIError as error:
            raise _error(error, base_url=str(self._client.base_url)) from error
        try:
            calls: dict[int, _PartialCall] = {}
            arguments = 0  # characters of every call's arguments so far
            reason: str | None = None
            usage = Usage()
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0,
                        output_tokens=chunk.usage.completion_tokens or 0,
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    for part in choice.delta.tool_calls or ():
                        arguments += calls.setdefault(part.index, _PartialCall()).add(part)
                        if past(request.max_reply_chars, arguments):
                            raise runaway_reply(request.max_reply_chars)
                    reason = choice.finish_reason or reason
            if reason is None:
                raise TransientError("the stream ended before the model finished its reply")
            for index in sorted(calls):
                yield ToolCallRequest(calls[index].complete())
            yield Finish(reason="tool_calls" if calls else _REASONS.get(reason, "stop"), usage=usage)
        except openai.APIError as error:
            raise _error(error, base_url=str(self._client.base_url)) from error
        finally:
            await chunks.close()

    def _params(self, request: ChatRequest) -> dict:
        params: dict = {
            "model": self.model,
            "messages": [_to_openai(message) for message in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            self._limit_param: request.max_tokens or self._max_tokens,
        }
        temperature = request.temperature if request.temperature is not None else self._temperature
        if temperature is not None:
            params["temperature"] = temperature
        if request.tools:
            params["tools"] = [_tool(spec) for spec in request.tools]
        return params


@dataclass
class _PartialCall:
    """A tool call being put together from streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, part: ChoiceDeltaToolCall) -> int:
        """Take one fragment; the characters of arguments it added."""
        self.id = part.id or self.id
        if part.function is None:
            return 0
        self.name = part.function.name or self.name
        fragment = part.function.arguments or ""
        self.arguments.append(fragment)
        return len(fragment)

    def complete(self) -> ToolCall:
        text = "".join(self.arguments).strip()
        try:
            arguments = json.loads(text) if text else {}
        except json.JSONDecodeError as error:
            raise TransientError(
                f"the model called {self.name} with arguments that are not JSON: {text[:200]!r}"
            ) from error
        if not isinstance(arguments, dict):
            raise TransientError(f"the model called {self.name} with non-object arguments: {text[:200]!r}")
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


def _to_openai(message: Message) -> dict:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool(spec: ToolSpec) -> dict:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def _error(error: openai.APIError, *, base_url: str) -> ProviderError:
    """The vendor's failure as a ``ProviderError``, keeping the vendor's own message."""
    if (too_large := too_large_in(error)) is not None:
        return ProviderError(f"{base_url}: {too_large}")
    if isinstance(error, openai.APITimeoutError):
        return TransientError(f"no answer from {base_url} in time: {error.message}")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return TransientError(f"cannot reach {base_url}: {cause}")
    message = _vendor_message(error)
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        text = f"HTTP {status} from {base_url}: {message}"
        if status in _RETRYABLE_STATUSES or status >= 500:
            return TransientError(text, status=status, retry_after=retry_after_seconds(error.response.headers))
        return ProviderError(text, retryable=False, status=status)
    # An error event inside a stream that began with 200 OK: the server failed mid-way.
    return TransientError(f"error from {base_url} while streaming: {message}")


def _vendor_message(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return error.message


def _missing_key(config: ProviderConfig) -> str:
    if config.api_key_env:
        return f"the environment variable {config.api_key_env} is empty or not set"
    return "no apiKeyEnv is configured (credentials.secretRef on the Provider)"
