"""The ``claude`` provider: Anthropic's Messages API, through the official SDK.

The Messages API differs from Chat Completions in ways the mapping absorbs:

- the system prompt is a parameter, not a message (several system messages
  are joined with blank lines);
- an assistant turn is a list of blocks, text and ``tool_use``; tool results
  are ``tool_result`` blocks of the *next user* turn, so consecutive tool
  messages (and a user message after them) are merged into one user turn;
- ``max_tokens`` is required;
- there are no sampling parameters: the SDK (2.x) and the API it describes
  have dropped ``temperature``, ``top_p`` and ``top_k``, so a configured
  temperature is not sent to Claude.

The reply is read from the raw event stream (``messages.create(stream=True)``)
rather than the SDK's accumulating helper, because the agent loop only needs
the deltas: text deltas become ``TextDelta``; a ``tool_use`` block's
``input_json_delta`` fragments are put together and announced as one
``ToolCallRequest`` when the block stops. Usage comes from ``message_start``
(input) and ``message_delta`` (cumulative output). Input tokens include cache
writes and reads, so the count is what the model actually read.

Anthropic can fail *inside* a stream that began with ``200 OK`` (an ``error``
event, typically ``overloaded_error``); such an error before any output is
retried like its HTTP equivalent.

The SDK's own retries and OpenTelemetry spans are off: retries live in
``_retrying`` and the runtime emits the GenAI ``chat`` span itself. Credentials
and the base URL are always passed explicitly, so the SDK never falls back to
``ANTHROPIC_*`` variables or profile files of the process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import anthropic
import httpx2

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

DEFAULT_BASE_URL = "https://api.anthropic.com"

_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# The HTTP status each error type has when it is not sent inside a stream.
_ERROR_TYPE_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class ClaudeProvider:
    """Anthropic's Messages API as a ``Provider``.

    Retries (``retry``) happen only before the first event of a reply.

    Cancellation: cancelling the consumer (or closing the stream) closes the
    HTTP response, which releases the connection and stops the generation.
    """

    type = "claude"

    def __init__(
        self,
        *,
        client: anthropic.AsyncAnthropic,
        model: str,
        max_tokens: int = 512,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.model = model
        self._client = client
        self._max_tokens = max_tokens
        self._retry = retry

    @classmethod
    def from_config(
        cls, config: ProviderConfig, *, api_key: str | None, retry: RetryPolicy | None = None
    ) -> ClaudeProvider:
        """Build the provider and its SDK client; no network call is made."""
        if not api_key:
            where = (
                f"the environment variable {config.api_key_env} is empty or not set"
                if config.api_key_env
                else "no apiKeyEnv is configured (credentials.secretRef on the Provider)"
            )
            raise ProviderError(f"the claude provider needs an API key: {where}")
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=config.base_url or DEFAULT_BASE_URL,
            timeout=config.timeout_seconds,
            max_retries=0,
            open_telemetry=False,
            http_client=anthropic.DefaultAsyncHttpxClient(event_hooks=bounded_events()),
        )
        return cls(
            client=client,
            model=config.model,
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
        base_url = str(self._client.base_url)
        try:
            events = await self._client.messages.create(**self._params(request))
        except (anthropic.APIError, httpx2.HTTPError) as error:
            raise _error(error, base_url=base_url) from error
        try:
            tool_uses: dict[int, _PartialToolUse] = {}
            arguments = 0  # characters of every tool use's input so far
            called = False
            reason: str | None = None
            input_tokens = output_tokens = 0
            finished = False
            async for event in events:
                if event.type == "message_start":
                    input_tokens = _input_tokens(event.message.usage)
                    output_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        tool_uses[event.index] = _PartialToolUse(id=block.id, name=block.name)
                    elif block.type == "text" and block.text:
                        yield TextDelta(block.text)
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(event.delta.text)
                    elif event.delta.type == "input_json_delta" and event.index in tool_uses:
                        tool_uses[event.index].parts.append(event.delta.partial_json)
                        arguments += len(event.delta.partial_json)
                        if past(request.max_reply_chars, arguments):
                            raise runaway_reply(request.max_reply_chars)
                elif event.type == "content_block_stop" and event.index in tool_uses:
                    called = True
                    yield ToolCallRequest(tool_uses.pop(event.index).complete())
                elif event.type == "message_delta":
                    reason = event.delta.stop_reason or reason
                    output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        input_tokens = _input_tokens(event.usage)
                elif event.type == "message_stop":
                    finished = True
            if not finished:
                raise TransientError("the stream ended before the model finished its reply")
            yield Finish(
                reason="tool_calls" if called else _REASONS.get(reason or "", "stop"),
                usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            )
        except (anthropic.APIError, httpx2.HTTPError) as error:
            raise _error(error, base_url=base_url) from error
        finally:
            await events.close()

    def _params(self, request: ChatRequest) -> dict:
        system, turns = _to_anthropic(request.messages)
        params: dict = {
            "model": self.model,
            "messages": turns,
            "max_tokens": request.max_tokens or self._max_tokens,
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [_tool(spec) for spec in request.tools]
        return params


@dataclass
class _PartialToolUse:
    """A ``tool_use`` block being put together from ``input_json_delta`` fragments."""

    id: str
    name: str
    parts: list[str] = field(default_factory=list)

    def complete(self) -> ToolCall:
        text = "".join(self.parts).strip()
        try:
            arguments = json.loads(text) if text else {}
        except json.JSONDecodeError as error:
            raise TransientError(
                f"the model called {self.name} with input that is not JSON: {text[:200]!r}"
            ) from error
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


def _to_anthropic(messages: tuple[Message, ...]) -> tuple[str, list[dict]]:
    """The system prompt and the alternating user/assistant turns of a conversation."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: Message) -> list[dict]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}
        ]
    blocks: list[dict] = [{"type": "text", "text": message.content}] if message.content else []
    blocks += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in message.tool_calls
    ]
    return blocks


def _tool(spec: ToolSpec) -> dict:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


def _input_tokens(usage: anthropic.types.Usage | anthropic.types.MessageDeltaUsage) -> int:
    return (
        (usage.input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def _error(error: Exception, *, base_url: str) -> ProviderError:
    """The vendor's failure as a ``ProviderError``, keeping the vendor's own message."""
    if (too_large := too_large_in(error)) is not None:
        return ProviderError(f"{base_url}: {too_large}")
    if isinstance(error, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return TransientError(f"no answer from {base_url} in time")
    if isinstance(error, anthropic.APIConnectionError):
        return TransientError(f"cannot reach {base_url}: {error.__cause__ or error}")
    if isinstance(error, httpx2.HTTPError):
        return TransientError(f"connection to {base_url} failed while streaming: {error}")
    if isinstance(error, anthropic.APIStatusError):
        message = error.api_message or error.message
        status = error.status_code
        if status < 400:  # an error event inside a stream that began with 200 OK
            status = _ERROR_TYPE_STATUSES.get(error.type or "", 500)
            message = f"{error.type or 'error'} while streaming from {base_url}: {message}"
        else:
            message = f"HTTP {status} from {base_url}: {message}"
        if status in _RETRYABLE_STATUSES or status >= 500:
            return TransientError(message, status=status, retry_after=retry_after_seconds(error.response.headers))
        return ProviderError(message, retryable=False, status=status)
    return ProviderError(f"error from {base_url}: {error}")
