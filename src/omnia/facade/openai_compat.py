"""The OpenAI-compatible endpoint: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The agent is the one model: its system prompt, tools, provider and budget
apply whatever the request asks (``temperature``, ``max_tokens`` and the like
are accepted and ignored). Each request is one turn through ``turns``:

- **Sessions.** Without the ``X-Omnia-Session`` header a request starts a new
  session, and the messages before its last user message are replayed as
  context inside that message (a labelled transcript), since the runtime
  keeps history only for its own sessions. With the header, the session is
  resumed and only the messages after the last assistant message are new.
  Every response names its session in ``X-Omnia-Session``.
- **Client-side tools.** A request's ``tools`` must be client-side tools of
  the agent (its ToolRegistry declares them). When the model calls one, the
  response ends with that call in ``tool_calls`` (finish reason
  ``tool_calls``) while the turn waits in this replica; the next request
  answers it with a ``role: tool`` message and the turn goes on. One call is
  returned per response. A call must be answered within the turn timeout,
  on the same replica. Client-side tools the request did not offer are
  answered with an error for the model; server-side tools run unseen.
- **Errors** are OpenAI's error object with a matching status; ``code`` is
  Omnia's error code (docs/protocol.md). Errors worth no retry carry
  ``x-should-retry: false``, which the OpenAI SDKs honour.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from omnia.facade import auth, bodies, turns
from omnia.facade.profiles import AgentProfile
from omnia.protocol.errors import ErrorCode

SESSION_HEADER = "X-Omnia-Session"

_STATUS = {
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BUDGET_EXCEEDED: 429,
    ErrorCode.TURN_IN_PROGRESS: 409,
    ErrorCode.SESSION_CONFLICT: 409,
    ErrorCode.SESSION_FULL: 409,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.TOOL_ERROR: 502,
    ErrorCode.RUNTIME_UNAVAILABLE: 503,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.DRAINING: 503,
    ErrorCode.CAPACITY_EXCEEDED: 503,
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# A turn cut short (the model's token limit, the turn timeout) is a truncated reply.
_FINISH_REASONS = {"length": "length", "max_tokens": "length", "cancelled": "length"}


class _Invalid(Exception):
    """A request the endpoint refuses with a 400 (or ``status``)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str = ErrorCode.INVALID_MESSAGE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True)
class _Request:
    content: str
    tool_results: tuple[tuple[str, str], ...]
    offered_tools: frozenset[str]
    stream: bool
    include_usage: bool


@dataclass
class _Parked:
    """A turn waiting in this replica for the answer to a client-side tool call."""

    conversation: turns.Conversation
    principal: auth.Principal
    call_id: str
    expiry: asyncio.TimerHandle


def routes(*, turns_: turns.Turns, profile: AgentProfile) -> list[Route]:
    endpoint = _Endpoint(turns_, profile)
    return [
        Route("/v1/chat/completions", endpoint.chat_completions, methods=["POST"]),
        Route("/v1/models", endpoint.models, methods=["GET"]),
        Route("/v1/models/{model:path}", endpoint.model, methods=["GET"]),
    ]


class _Endpoint:
    def __init__(self, turns_: turns.Turns, profile: AgentProfile) -> None:
        self.turns = turns_
        self.profile = profile
        self.created = int(time.time())
        self.parked: dict[str, _Parked] = {}

    # -- models ------------------------------------------------------------------

    def _model_entry(self) -> dict[str, Any]:
        return {"id": self.profile.name, "object": "model", "created": self.created, "owned_by": "omnia"}

    async def models(self, request: Request) -> Response:
        try:
            await self.turns.authenticate(request.headers)
        except turns.Refused as exc:
            return _error(exc.code, exc.message)
        return JSONResponse({"object": "list", "data": [self._model_entry()]})

    async def model(self, request: Request) -> Response:
        try:
            await self.turns.authenticate(request.headers)
        except turns.Refused as exc:
            return _error(exc.code, exc.message)
        model = request.path_params["model"]
        if model != self.profile.name:
            message = f"no model {model!r}; this agent is the model {self.profile.name!r}"
            return _error("model_not_found", message, status=404, param="model")
        return JSONResponse(self._model_entry())

    # -- chat completions ----------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        try:
            principal = await self.turns.authenticate(request.headers)
            self.turns.admit(request.scope.get("client"))
            body = await self._body(request)
            parsed = self._parse(body, session=request.headers.get(SESSION_HEADER, ""))
        except turns.Refused as exc:
            return _error(exc.code, exc.message, retryable=exc.retryable)
        except _Invalid as exc:
            self.turns.count_error(exc.code)
            return _error(exc.code, exc.message, status=exc.status, param=exc.param)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            conversation, offered = await self._start(parsed, principal=principal, request=request)
        except turns.Refused as exc:
            return _error(exc.code, exc.message, retryable=exc.retryable)
        except _Invalid as exc:
            self.turns.count_error(exc.code)
            return _error(exc.code, exc.message, status=exc.status, param=exc.param)
        reply = _Reply(self, conversation, principal=principal, offered=offered)
        headers = {SESSION_HEADER: conversation.session_id}
        try:
            first = await reply.next_visible()
        except BaseException:
            await conversation.close()
            raise
        if isinstance(first, turns.Failed):
            await conversation.close()
            return _error(first.code, first.message, retryable=first.retryable, headers=headers)
        if parsed.stream:
            return StreamingResponse(
                reply.stream(first, include_usage=parsed.include_usage),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        return await reply.complete(first, headers=headers)

    async def _body(self, request: Request) -> Any:
        try:
            _, body = await bodies.read_json(request, limit=bodies.body_limit(self.turns.config.max_message_bytes))
        except bodies.BodyRefused as exc:
            raise _Invalid(exc.message, status=exc.status, code=exc.code) from None
        return body

    def _parse(self, body: Any, *, session: str) -> _Request:
        if not isinstance(body, dict):
            raise _Invalid("the request body must be a JSON object")
        model = body.get("model")
        if model != self.profile.name:
            raise _Invalid(f"no model {model!r}; this agent is the model {self.profile.name!r}",
                           param="model", status=404, code="model_not_found")
        if body.get("n", 1) != 1:
            raise _Invalid("only n=1 is supported", param="n")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _Invalid("stream must be true or false", param="stream")
        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        offered = self._offered_tools(body.get("tools"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("messages must be a non-empty array", param="messages")
        parsed = [_message(index, message) for index, message in enumerate(messages)]
        if parsed[-1][0] == "tool":
            trailing: list[tuple[str, str]] = []
            for role, content, call_id in reversed(parsed):
                if role != "tool":
                    break
                trailing.append((call_id, content))
            return _Request("", tuple(reversed(trailing)), offered, stream, include_usage)
        if parsed[-1][0] != "user":
            raise _Invalid("the last message must be from the user (or answer tool calls)", param="messages")
        if session:
            last_assistant = max((i for i, (role, _, _) in enumerate(parsed) if role == "assistant"), default=-1)
            new = [content for role, content, _ in parsed[last_assistant + 1:] if role == "user"]
            return _Request("\n\n".join(new), (), offered, stream, include_usage)
        return _Request(_replayed(parsed), (), offered, stream, include_usage)

    def _offered_tools(self, tools: Any) -> frozenset[str]:
        if tools is None:
            return frozenset()
        if not isinstance(tools, list):
            raise _Invalid("tools must be an array", param="tools")
        names = set()
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str):
                raise _Invalid("each tool must be {type: function, function: {name, ...}}", param=f"tools[{index}]")
            if name not in self.profile.client_tools:
                raise _Invalid(
                    f"the agent has no client-side tool {name[:64]!r}; a request may offer only the client-side "
                    "tools its agent declares",
                    param=f"tools[{index}]",
                )
            names.add(name)
        return frozenset(names)

    async def _start(
        self, parsed: _Request, *, principal: auth.Principal, request: Request
    ) -> tuple[turns.Conversation, frozenset[str]]:
        if parsed.tool_results:
            return await self._resume(parsed, principal=principal), parsed.offered_tools
        conversation = await self.turns.open(
            principal=principal, headers=request.headers, session_id=request.headers.get(SESSION_HEADER, "")
        )
        try:
            await conversation.send(parsed.content)
        except BaseException:
            await conversation.close()
            raise
        return conversation, parsed.offered_tools

    async def _resume(self, parsed: _Request, *, principal: auth.Principal) -> turns.Conversation:
        answers = []
        for token, content in parsed.tool_results:
            parked = self.parked.get(token)
            if parked is None or parked.principal != principal:
                raise _Invalid(
                    f"no tool call {token!r} is waiting for a result (answers must come within the turn "
                    "timeout, to the replica that asked)",
                    param="messages",
                )
            answers.append((token, parked, content))
        conversation = answers[0][1].conversation
        if any(parked.conversation is not conversation for _, parked, _ in answers):
            raise _Invalid("the tool messages answer calls of different turns", param="messages")
        for token, parked, content in answers:
            del self.parked[token]
            parked.expiry.cancel()
            await conversation.tool_result(parked.call_id, content)
        return conversation

    def park(self, call: turns.ToolCall, conversation: turns.Conversation, *, principal: auth.Principal) -> str:
        """Keep a turn waiting for a client-side tool result until the turn timeout.

        Returns the call's id for the client: a token of this endpoint, since
        the runtime's own call ids are unique only within a session.
        """
        token = f"call_{secrets.token_hex(12)}"
        timeout = self.turns.config.turn_timeout_seconds
        expiry = asyncio.get_running_loop().call_later(timeout, self._expire, token)
        self.parked[token] = _Parked(conversation, principal, call.id, expiry)
        return token

    def _expire(self, token: str) -> None:
        parked = self.parked.pop(token, None)
        if parked is not None:
            asyncio.create_task(parked.conversation.close())


class _Reply:
    """The events of one response: what the OpenAI client sees of a turn."""

    def __init__(
        self,
        endpoint: _Endpoint,
        conversation: turns.Conversation,
        *,
        principal: auth.Principal,
        offered: frozenset[str],
    ) -> None:
        self.endpoint = endpoint
        self.conversation = conversation
        self.principal = principal
        self.offered = offered
        self.events = conversation.events()
        self.id = f"chatcmpl-{conversation.session_id}-{time.monotonic_ns():x}"
        self.created = int(time.time())
        self.model = endpoint.profile.name

    async def next_visible(self) -> turns.Event:
        """The next event the client sees: text, a client-side call it must answer, or the end."""
        async for event in self.events:
            if isinstance(event, turns.Chunk):
                if event.text:
                    return event
            elif isinstance(event, turns.ToolCall):
                if not event.awaits_result:
                    continue
                if event.name not in self.offered:
                    await self.conversation.tool_result(
                        event.id, f"the client did not offer the tool {event.name!r}", is_error=True
                    )
                    continue
                return event
            elif isinstance(event, turns.Done | turns.Failed):
                return event
        return turns.Failed(ErrorCode.RUNTIME_UNAVAILABLE, "the turn ended without an answer", True)

    def _park(self, call: turns.ToolCall) -> dict[str, Any]:
        """Park the turn; the call as the client sees it."""
        token = self.endpoint.park(call, self.conversation, principal=self.principal)
        return _tool_call(call, token)

    async def complete(self, event: turns.Event, *, headers: Mapping[str, str]) -> Response:
        text: list[str] = []
        parked = False
        try:
            while isinstance(event, turns.Chunk):
                text.append(event.text)
                event = await self.next_visible()
            if isinstance(event, turns.Failed):
                return _error(event.code, event.message, retryable=event.retryable, headers=headers)
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            body: dict[str, Any] = {
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            }
            if isinstance(event, turns.ToolCall):
                message["tool_calls"] = [self._park(event)]
                finish_reason = "tool_calls"
                parked = True
            else:
                assert isinstance(event, turns.Done)
                finish_reason = _FINISH_REASONS.get(event.finish_reason, "stop")
                body["usage"] = _usage(event)
            body["choices"] = [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}]
            return JSONResponse(body, headers=dict(headers))
        finally:
            if not parked:
                await self.conversation.close()

    async def stream(self, event: turns.Event, *, include_usage: bool) -> AsyncIterator[str]:
        parked = False
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            while isinstance(event, turns.Chunk):
                yield self._chunk({"content": event.text})
                event = await self.next_visible()
            if isinstance(event, turns.Failed):
                yield _sse({"error": _error_body(event.code, event.message)})
                return
            if isinstance(event, turns.ToolCall):
                call = self._park(event)
                parked = True
                yield self._chunk({"tool_calls": [{"index": 0, **call}]})
                yield self._chunk({}, finish_reason="tool_calls")
            else:
                assert isinstance(event, turns.Done)
                yield self._chunk({}, finish_reason=_FINISH_REASONS.get(event.finish_reason, "stop"))
                if include_usage:
                    yield _sse(self._envelope(choices=[], usage=_usage(event)))
            yield "data: [DONE]\n\n"
        finally:
            if not parked:
                await self.conversation.close()

    def _envelope(self, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, **fields
        }

    def _chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _sse(self._envelope(choices=[choice]))


def _message(index: int, message: Any) -> tuple[str, str, str]:
    """(role, text, tool_call_id) of one request message."""
    if not isinstance(message, dict):
        raise _Invalid("each message must be an object", param=f"messages[{index}]")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        shown = repr(role[:32]) if isinstance(role, str) else "of the wrong type"
        raise _Invalid(f"unknown role {shown}; expected one of: {', '.join(sorted(_ROLES))}",
                       param=f"messages[{index}].role")
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _Invalid("only text content parts are supported", param=f"messages[{index}].content")
            parts.append(part["text"])
        text = "".join(parts)
    else:
        raise _Invalid("content must be a string or an array of text parts", param=f"messages[{index}].content")
    call_id = message.get("tool_call_id", "")
    if role == "tool" and (not isinstance(call_id, str) or not call_id):
        raise _Invalid("a tool message needs its tool_call_id", param=f"messages[{index}].tool_call_id")
    if role == "user" and not text:
        raise _Invalid("a user message needs content", param=f"messages[{index}].content")
    return role, text, call_id if isinstance(call_id, str) else ""


def _replayed(messages: list[tuple[str, str, str]]) -> str:
    """The last user message, preceded by the earlier messages as a labelled transcript."""
    *earlier, (_, last, _) = messages
    context = [f"[{role}] {text}" for role, text, _ in earlier if text and role != "tool"]
    if not context:
        return last
    return (
        "Earlier messages of this conversation, replayed by the client:\n"
        + "\n".join(context)
        + "\n\nThe user's new message:\n"
        + last
    )


def _tool_call(event: turns.ToolCall, token: str) -> dict[str, Any]:
    function = {"name": event.name, "arguments": event.arguments_json or "{}"}
    return {"id": token, "type": "function", "function": function}


def _usage(done: turns.Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.input_tokens,
        "completion_tokens": done.output_tokens,
        "total_tokens": done.input_tokens + done.output_tokens,
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _error_body(code: str, message: str, *, status: int | None = None, param: str | None = None) -> dict[str, Any]:
    status = status or _STATUS.get(code, 500)
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": message, "type": kind, "param": param, "code": code}


def _error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    param: str | None = None,
    retryable: bool = False,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    status = status or _STATUS.get(code, 500)
    response_headers = {**(headers or {}), "x-should-retry": "true" if retryable else "false"}
    return JSONResponse(
        {"error": _error_body(code, message, status=status, param=param)}, status_code=status, headers=response_headers
    )
