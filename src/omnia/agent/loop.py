"""The agent loop: one user message in, one committed turn out.

Pure orchestration over three injected parts: a ``Provider`` (the model), a
``SessionStore`` (history) and a ``ToolExecutor`` (server-side tools); the
connected client is reached through a ``ClientChannel`` (client-side tools and
approvals) and everything the client should see goes out through ``emit``.
No sockets here, so the whole loop is tested in memory.

A turn is committed to the store *before* ``TurnDone`` is emitted: a client
that saw ``done`` never loses that turn. A turn that fails (model error,
store outage) commits nothing and emits ``TurnFailed``; a cancelled turn
commits what was generated so far, with finish reason ``cancelled``.

Budgets are checked before the model is called (a spent budget refuses the
turn with ``BUDGET_EXCEEDED``, and nothing is stored) and the turn's usage
is counted after it ends, committed or not, *before* its last event: the
client's next message is checked against a total that includes this turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context

from omnia import telemetry
from omnia.budgets import Budgets, Standing
from omnia.agent.prompts import (
    MESSAGE_VARIABLE,
    PromptError,
    PromptRenderer,
    check_sources,
    choose_version,
    client_choice,
    find_version,
    served_version,
)
from omnia.config import AgentConfig, PromptConfig, ToolConfig
from omnia.protocol.sessions import new_id as new_session_id
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    Provider,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    Usage,
    past,
    runaway_reply,
)
from omnia.sessions.base import (
    Session,
    SessionExists,
    SessionFull,
    SessionNotFound,
    SessionStore,
    StoreUnavailable,
    Turn,
    TurnConflict,
)
from omnia.sessions.cache import SessionCache

log = logging.getLogger(__name__)

# --- what the loop emits ------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    message_id: str


@dataclass(frozen=True)
class ToolCallStarted:
    call: ToolCall
    client_side: bool
    require_approval: bool


@dataclass(frozen=True)
class ToolFinished:
    call_id: str
    name: str
    content: str
    is_error: bool


@dataclass(frozen=True)
class TurnDone:
    finish_reason: str
    usage: Usage
    cost_usd: float
    turn_index: int
    message_id: str
    provider: str
    model: str
    budgets: tuple[Standing, ...] = ()
    """The spending totals after this turn, of every budget the agent counts against."""


@dataclass(frozen=True)
class TurnFailed:
    code: str
    message: str
    retryable: bool


TurnEvent = Chunk | ToolCallStarted | ToolFinished | TurnDone | TurnFailed
Emit = Callable[[TurnEvent], Awaitable[None]]

# --- what the loop needs ------------------------------------------------------


@dataclass(frozen=True)
class ToolOutcome:
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    reason: str = ""


class ClientChannel(Protocol):
    """The connected client, for tools it runs and calls it must approve.

    Both coroutines wait until the client answers; the loop bounds them with
    the tool's timeout and cancels them when the turn is cancelled.
    """

    async def tool_result(self, call_id: str) -> ToolOutcome: ...

    async def approval(self, call_id: str) -> ApprovalDecision: ...


class ToolExecutor(Protocol):
    """Runs server-side tools (``http``, ``mcp``, ``openapi``).

    An executor bounds a call by ``call_budget(tool)`` itself (it may retry
    within it); the loop cancels a call that overruns that budget.
    """

    async def execute(self, tool: ToolConfig, call: ToolCall) -> ToolOutcome: ...


class ToolCatalog(Protocol):
    """The tools offered to the model now; the list may grow while the agent runs
    (tools of an MCP server that came up late). Each turn uses the list it started with.
    """

    def tools(self) -> Sequence[ToolConfig]: ...


class ConfiguredTools:
    """The catalog of an agent whose tools are exactly those of its config."""

    def __init__(self, tools: Sequence[ToolConfig]) -> None:
        self._tools = tuple(tools)

    def tools(self) -> Sequence[ToolConfig]:
        return self._tools


class NoServerTools:
    """The executor of an agent without server-side tool handlers."""

    async def execute(self, tool: ToolConfig, call: ToolCall) -> ToolOutcome:
        return ToolOutcome(f"tool {tool.name!r} has no handler in this runtime", is_error=True)


@dataclass(frozen=True)
class UserInput:
    content: str
    id: str = ""
    metadata: dict = field(default_factory=dict)


class OpenError(Exception):
    """A session could not be opened; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def principal_of(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """Who a session belongs to: the auth method and subject it was opened with.

    ``None`` when it was opened without authentication (auth type ``none``):
    such a session has no owner, and anyone who knows its id may resume it.
    """
    method = metadata.get("auth_method", "")
    if method in ("", "none"):
        return None
    return method, metadata.get("auth_subject", "")


def _store_unavailable(exc: StoreUnavailable) -> OpenError:
    return OpenError("STORE_UNAVAILABLE", f"session store unavailable: {exc}", retryable=True)


MAX_TOOL_OUTPUT_CHARS = 16_000
EXECUTOR_GRACE_SECONDS = 1.0


def call_budget(tool: ToolConfig) -> float:
    """How long one server-side tool call may take, retries and their pauses included."""
    return tool.timeout_seconds * (tool.retries + 1)


@dataclass(frozen=True)
class _ToolTable:
    """The tools of one turn: by name for calls, as specs for the model."""

    tools: tuple[ToolConfig, ...]
    by_name: dict[str, ToolConfig]
    specs: tuple[ToolSpec, ...]

    @classmethod
    def of(cls, tools: Sequence[ToolConfig]) -> _ToolTable:
        tools = tuple(tools)
        return cls(
            tools=tools,
            by_name={tool.name: tool for tool in tools},
            specs=tuple(
                ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in tools
            ),
        )


class Agent:
    """One configured agent; serves any number of sessions concurrently."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        provider: Provider,
        store: SessionStore,
        executor: ToolExecutor | None = None,
        tools: ToolCatalog | None = None,
        new_id: Callable[[], str] = new_session_id,
        tracer: trace.Tracer | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.config = config
        self.budgets = budgets
        self.provider = provider
        self.store = store
        # Decoded histories of recent sessions, brought up to date from the
        # store before every turn (see ``omnia.sessions.cache``).
        self.sessions = SessionCache(store)
        self.executor = executor or NoServerTools()
        self.tools = tools or ConfiguredTools(config.tools)
        self._new_id = new_id
        self._tracer = tracer or trace.get_tracer(telemetry.TRACER_NAME)
        self._provider_name = telemetry.provider_name(provider.type)
        self._tool_table = _ToolTable.of(())
        self._renderers: dict[str, PromptRenderer] = {}

    def _current_tools(self) -> _ToolTable:
        tools = tuple(self.tools.tools())
        if tools != self._tool_table.tools:
            self._tool_table = _ToolTable.of(tools)
        return self._tool_table

    def renderer(self, prompt: PromptConfig) -> PromptRenderer:
        renderer = self._renderers.get(prompt.version)
        if renderer is None or renderer.prompt != prompt:
            renderer = self._renderers[prompt.version] = PromptRenderer(prompt)
        return renderer

    def check(self) -> None:
        """Fail at start-up, not at the first turn, on templates that cannot render.

        Both checks: the sources (syntax, variables nothing defines, in every
        branch) and a render with the defaults.
        """
        rollout = self.config.prompts
        for prompt in (rollout.stable, rollout.canary, *rollout.retained):
            if prompt is not None:
                check_sources(prompt)
                self.renderer(prompt).check()

    async def open_session(
        self, *, session_id: str | None, metadata: dict | None = None
    ) -> tuple[Session, bool]:
        """Resume ``session_id`` or start a new session; returns (session, resumed).

        A session belongs to the principal in the ``metadata`` it was started
        with; another principal resuming it is told it does not exist, the
        same as for an unknown id, so an id reveals nothing to others.
        """
        if not session_id:
            return await self.create_session(self._new_id(), metadata=metadata), False
        try:
            session = await self.store.get(session_id)
        except SessionNotFound:
            raise OpenError("SESSION_NOT_FOUND", f"session {session_id} not found") from None
        except StoreUnavailable as exc:
            raise _store_unavailable(exc) from None
        owner = principal_of(session.metadata)
        if owner is not None and owner != principal_of(metadata or {}):
            raise OpenError("SESSION_NOT_FOUND", f"session {session_id} not found")
        return session, True

    async def create_session(
        self, session_id: str, *, prompt_version: str = "", metadata: dict | None = None
    ) -> Session:
        """Store a new session under ``session_id``, which the caller chose.

        The session gets ``prompt_version`` when the rollout serves it to new
        sessions (the facade announced it from ``Describe``); otherwise the
        version ``choose_version`` gives the id, as the rollout stands now.
        """
        prompt = served_version(self.config.prompts, prompt_version) if prompt_version else None
        if prompt is None:
            prompt = choose_version(self.config.prompts, session_id=session_id)
        session = Session(
            id=session_id,
            agent=self.config.name,
            prompt_version=prompt.version,
            metadata=dict(metadata or {}),
        )
        try:
            await self.store.create(session)
        except SessionExists:
            raise OpenError("INTERNAL", "session id collision", retryable=True) from None
        except StoreUnavailable as exc:
            raise _store_unavailable(exc) from None
        return session

    async def run_turn(
        self,
        session_id: str,
        user: UserInput,
        *,
        channel: ClientChannel,
        emit: Emit,
        cancelled: asyncio.Event | None = None,
        trace_context: Context | None = None,
    ) -> None:
        """Run one turn to its end: ``TurnDone`` or ``TurnFailed`` is always emitted last.

        Setting ``cancelled`` stops generation and tool calls at their next
        await point; the partial turn is committed with reason ``cancelled``.
        If the task running this coroutine is itself cancelled, nothing is
        committed and nothing more is emitted. The turn is traced as an
        ``invoke_agent`` span, a child of ``trace_context`` when given, and
        logged in one line once it has ended: ``turn done`` (tokens, cost,
        latency) or ``turn failed`` (the error code).
        """
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.config.name,
            "gen_ai.conversation.id": session_id,
            "gen_ai.provider.name": self._provider_name,
            "gen_ai.request.model": self.provider.model,
        }
        with self._tracer.start_as_current_span(
            f"invoke_agent {self.config.name}", context=trace_context, attributes=attributes
        ) as span:
            started = time.monotonic()
            event = await self._run_turn(session_id, user, channel=channel, emit=emit, cancelled=cancelled)
            await emit(event)
            latency_ms = round((time.monotonic() - started) * 1000)
            _log_turn(session_id, event, latency_ms=latency_ms)
            if isinstance(event, TurnDone):
                span.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": event.usage.input_tokens,
                        "gen_ai.usage.output_tokens": event.usage.output_tokens,
                        "gen_ai.response.finish_reasons": (event.finish_reason,),
                    }
                )
            else:
                span.set_attribute("error.type", event.code)
                span.set_status(trace.StatusCode.ERROR, event.message)

    async def _run_turn(
        self,
        session_id: str,
        user: UserInput,
        *,
        channel: ClientChannel,
        emit: Emit,
        cancelled: asyncio.Event | None,
    ) -> TurnDone | TurnFailed:
        """Run the turn; its last event, which the caller emits."""
        try:
            session = await self.sessions.get(session_id)
        except SessionNotFound:
            return TurnFailed("SESSION_NOT_FOUND", f"session {session_id} not found", False)
        except StoreUnavailable as exc:
            return TurnFailed("STORE_UNAVAILABLE", f"session store unavailable: {exc}", True)

        turn = _TurnState(message_id=user.id or self._new_id())
        try:
            messages = self._context(session, user)
        except PromptError as exc:
            return TurnFailed("INVALID_MESSAGE", str(exc), False)
        if self.budgets is not None:
            try:
                exceeded = await self.budgets.check()
            except StoreUnavailable as exc:
                return TurnFailed("STORE_UNAVAILABLE", f"budget counters unavailable: {exc}", True)
            if exceeded is not None:
                # Not retryable: the limit holds until the period ends, which the message names.
                return TurnFailed("BUDGET_EXCEEDED", exceeded.message, False)
        user_record = {"role": "user", "content": messages[-1].content}
        if user.id:
            user_record["id"] = user.id
        if user.metadata:
            user_record["metadata"] = user.metadata
        turn.records.append(user_record)

        tools = self._current_tools()
        generation = asyncio.create_task(self._generate(messages, turn, tools, channel, emit))
        stop = asyncio.create_task((cancelled or asyncio.Event()).wait())
        try:
            await asyncio.wait({generation, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not generation.done():
                generation.cancel()
                await asyncio.gather(generation, return_exceptions=True)
        if generation.cancelled():
            turn.finish("cancelled")
        else:
            error = generation.exception()
            if isinstance(error, ProviderError):
                await self._spend(turn)
                return TurnFailed("PROVIDER_ERROR", error.message, error.retryable)
            if error is not None:
                await self._spend(turn)
                return TurnFailed("INTERNAL", f"turn failed: {error}", False)

        committed, failure = await self._commit(session, turn)
        standings = await self._spend(turn)
        if committed is None:
            assert failure is not None
            return failure
        usage = turn.usage
        return TurnDone(
            finish_reason=turn.finish_reason,
            usage=usage,
            cost_usd=self._cost(usage),
            turn_index=committed.index,
            message_id=turn.message_id,
            provider=self.provider.type,
            model=self.provider.model,
            budgets=standings,
        )

    def _cost(self, usage: Usage) -> float:
        return self.config.provider.pricing.cost(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
        )

    async def _spend(self, turn: _TurnState) -> tuple[Standing, ...]:
        """Count what the turn cost; the model was paid whether or not the turn committed.

        A counter outage does not fail a turn the client already has: its
        usage goes uncounted (and logged), and the next turn's check fails
        with ``STORE_UNAVAILABLE`` until the counters are back.
        """
        if self.budgets is None:
            return ()
        usage = turn.usage
        try:
            return await self.budgets.spend(
                tokens=usage.input_tokens + usage.output_tokens, cost_usd=self._cost(usage)
            )
        except StoreUnavailable as exc:
            log.warning("turn usage not counted against the budget: %s", exc)
            return ()

    def _context(self, session: Session, user: UserInput) -> list[Message]:
        prompt = find_version(self.config.prompts, session.prompt_version)
        renderer = self.renderer(prompt)
        choice = client_choice(prompt.client_inputs, user.metadata)
        system = renderer.system(choice.variables)
        content = user.content
        if choice.template is not None:
            content = renderer.template(choice.template, {**choice.variables, MESSAGE_VARIABLE: user.content})
        history = _history(session, limit=self.config.max_history_messages)
        return [Message(role="system", content=system), *history, Message("user", content)]

    async def _generate(
        self,
        messages: list[Message],
        turn: _TurnState,
        tools: _ToolTable,
        channel: ClientChannel,
        emit: Emit,
    ) -> None:
        for iteration in range(self.config.max_tool_iterations + 1):
            offer_tools = iteration < self.config.max_tool_iterations
            request = ChatRequest(
                messages=tuple(messages),
                tools=tools.specs if offer_tools else (),
                temperature=self.config.provider.temperature,
                max_tokens=self.config.provider.max_tokens,
                max_reply_chars=self.config.session.max_bytes,
            )
            text: list[str] = []
            calls: list[ToolCall] = []
            reason = "stop"
            turn.open_reply(text)
            with self._chat_span(request) as span:
                async with contextlib.aclosing(self.provider.stream(request)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            if event.text:
                                # A reply the session could not hold is refused as it comes: a
                                # model server that never ends its reply would otherwise grow
                                # the runtime until the turn's timeout.
                                turn.reply_chars += len(event.text)
                                if past(request.max_reply_chars, turn.reply_chars):
                                    raise runaway_reply(request.max_reply_chars)
                                text.append(event.text)
                                await emit(Chunk(event.text, turn.message_id))
                        elif isinstance(event, ToolCallRequest):
                            calls.append(event.call)
                        elif isinstance(event, Finish):
                            reason = event.reason
                            turn.usage = turn.usage + event.usage
                            span.set_attributes(
                                {
                                    "gen_ai.usage.input_tokens": event.usage.input_tokens,
                                    "gen_ai.usage.output_tokens": event.usage.output_tokens,
                                    "gen_ai.response.finish_reasons": (event.reason,),
                                }
                            )
            turn.close_reply(calls)
            if not calls:
                turn.finish(reason)
                return
            if not offer_tools:
                turn.finish("tool_limit", unanswered="not run: this turn reached its tool call limit")
                return
            reply = Message("assistant", "".join(text), tool_calls=tuple(calls))
            messages.append(reply)
            results = await asyncio.gather(*(self._call_tool(c, tools, channel, emit) for c in calls))
            for call, outcome in zip(calls, results, strict=True):
                record = {
                    "role": "tool",
                    "content": outcome.content,
                    "tool_call_id": call.id,
                    "name": call.name,
                }
                turn.records.append(record)
                messages.append(Message.from_dict(record))

    def _chat_span(self, request: ChatRequest):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._provider_name,
            "gen_ai.request.model": self.provider.model,
        }
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        return self._tracer.start_as_current_span(
            f"chat {self.provider.model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )

    async def _call_tool(
        self, call: ToolCall, tools: _ToolTable, channel: ClientChannel, emit: Emit
    ) -> ToolOutcome:
        tool = tools.by_name.get(call.name)
        client_side = tool is not None and tool.type == "client"
        approval = tool is not None and tool.require_approval
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function" if client_side or tool is None else "extension",
        }
        with self._tracer.start_as_current_span(f"execute_tool {call.name}", attributes=attributes) as span:
            await emit(ToolCallStarted(call, client_side=client_side, require_approval=approval))
            if tool is None:
                outcome = ToolOutcome(f"unknown tool {call.name!r}", is_error=True)
            else:
                outcome = await self._run_tool(tool, call, channel)
            outcome = _bounded(outcome)
            if outcome.is_error:
                span.set_attribute("error.type", "tool_error")
                span.set_status(trace.StatusCode.ERROR, outcome.content[:200])
            await emit(ToolFinished(call.id, call.name, outcome.content, outcome.is_error))
        return outcome

    async def _run_tool(self, tool: ToolConfig, call: ToolCall, channel: ClientChannel) -> ToolOutcome:
        try:
            async with asyncio.timeout(tool.timeout_seconds):
                if tool.require_approval:
                    decision = await channel.approval(call.id)
                    if not decision.approved:
                        reason = f": {decision.reason}" if decision.reason else ""
                        return ToolOutcome(f"the user denied this tool call{reason}", True)
                if tool.type == "client":
                    return await channel.tool_result(call.id)
        except TimeoutError:
            return ToolOutcome(
                f"tool {tool.name!r} timed out after {tool.timeout_seconds:g}s", is_error=True
            )
        # Server-side calls get their own budget, apart from the wait for approval:
        # an executor may retry within it, and answers a timeout itself; the
        # grace makes this bound a backstop for executors that do not.
        budget = call_budget(tool)
        try:
            async with asyncio.timeout(budget + EXECUTOR_GRACE_SECONDS):
                return await self.executor.execute(tool, call)
        except TimeoutError:
            return ToolOutcome(f"tool {tool.name!r} timed out after {budget:g}s", is_error=True)

    async def _commit(self, session: Session, turn: _TurnState) -> tuple[Turn | None, TurnFailed | None]:
        """The committed turn, or why it could not be committed."""
        usage = turn.usage
        record = Turn(
            index=session.next_index,
            messages=tuple(turn.records),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=self._cost(usage),
            finish_reason=turn.finish_reason,
        )
        try:
            await self.store.append_turn(session.id, record)
        except TurnConflict:
            self.sessions.forget(session.id)
            return None, TurnFailed(
                "SESSION_CONFLICT",
                "another connection added a turn to this session first; resend the message",
                True,
            )
        except SessionFull as exc:
            return None, TurnFailed("SESSION_FULL", str(exc), False)
        except SessionNotFound:
            return None, TurnFailed("SESSION_NOT_FOUND", f"session {session.id} expired", False)
        except StoreUnavailable as exc:
            return None, TurnFailed("STORE_UNAVAILABLE", f"session store unavailable: {exc}", True)
        self.sessions.committed(session, record)
        return record, None


@dataclass
class _TurnState:
    """What one turn has produced so far, kept outside the generation task.

    The generation task may be cancelled at any await point; whatever it
    produced until then is still here for the commit of a cancelled turn.
    """

    message_id: str
    records: list[dict] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    # Characters of model text this turn, every model call of it together.
    reply_chars: int = 0
    _open_text: list[str] | None = None

    def open_reply(self, text: list[str]) -> None:
        self._open_text = text

    def close_reply(self, calls: list[ToolCall]) -> None:
        text, self._open_text = self._open_text or [], None
        record: dict = {"role": "assistant", "content": "".join(text)}
        if calls:
            record["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
            ]
        self.records.append(record)

    def finish(self, reason: str, *, unanswered: str = "the tool call was cancelled") -> None:
        if self._open_text is not None:
            self.close_reply([])
        self._answer_pending_calls(unanswered)
        self.finish_reason = reason

    def _answer_pending_calls(self, content: str) -> None:
        """Give every tool call a result, so the stored history stays valid for vendors."""
        answered = {r.get("tool_call_id") for r in self.records if r["role"] == "tool"}
        for record in list(self.records):
            for call in record.get("tool_calls", ()):
                if call["id"] not in answered:
                    self.records.append(
                        {
                            "role": "tool",
                            "content": content,
                            "tool_call_id": call["id"],
                            "name": call["name"],
                        }
                    )


def _log_turn(session_id: str, event: TurnDone | TurnFailed, *, latency_ms: int) -> None:
    """One line per turn, for a person watching ``omnia run --verbose`` and for log queries alike."""
    if isinstance(event, TurnDone):
        log.info(
            "turn done",
            extra={
                "session_id": session_id,
                "turn": event.turn_index,
                "input_tokens": event.usage.input_tokens,
                "output_tokens": event.usage.output_tokens,
                "cost_usd": event.cost_usd,
                "latency_ms": latency_ms,
                "finish_reason": event.finish_reason,
            },
        )
    else:
        log.info(
            "turn failed",
            extra={"session_id": session_id, "code": event.code, "latency_ms": latency_ms},
        )


def _history(session: Session, *, limit: int) -> list[Message]:
    """The last turns' messages, cut at a turn boundary so tool calls keep their results."""
    kept: list[tuple[Message, ...]] = []
    count = 0
    for turn in reversed(session.turns):
        messages = turn.decoded(Message.from_dict)
        if kept and count + len(messages) > limit:
            break
        kept.append(messages)
        count += len(messages)
    return [m for turn in reversed(kept) for m in turn]


def _bounded(outcome: ToolOutcome) -> ToolOutcome:
    if len(outcome.content) <= MAX_TOOL_OUTPUT_CHARS:
        return outcome
    dropped = len(outcome.content) - MAX_TOOL_OUTPUT_CHARS
    notice = f"\n[output truncated: {dropped} more characters were dropped]"
    return ToolOutcome(outcome.content[:MAX_TOOL_OUTPUT_CHARS] + notice, outcome.is_error)
