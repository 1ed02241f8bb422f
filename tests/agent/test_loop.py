"""The agent loop, in memory: the mock model, the memory store, a scripted client."""

from __future__ import annotations

import asyncio

import pytest

from omnia.agent import (
    Agent,
    ApprovalDecision,
    Chunk,
    OpenError,
    ToolCallStarted,
    ToolFinished,
    ToolOutcome,
    TurnDone,
    TurnFailed,
    UserInput,
)
from omnia.agent.loop import MAX_TOOL_OUTPUT_CHARS
from omnia.config import (
    AgentConfig,
    MockScript,
    Pricing,
    PromptConfig,
    PromptRollout,
    ProviderConfig,
    ScriptedError,
    ScriptedReply,
    ScriptedToolCall,
    SessionConfig,
    ToolConfig,
)
from omnia.providers.base import Message, TextDelta
from omnia.providers.mock import MockProvider
from omnia.sessions import MemoryStore, StoreUnavailable


class RecordingProvider:
    """The real mock model, remembering every request it was sent."""

    def __init__(self, script: MockScript | None = None) -> None:
        self.inner = MockProvider(script)
        self.type, self.model = "mock", "mock"
        self.requests = []

    def stream(self, request):
        self.requests.append(request)
        return self.inner.stream(request)

    async def aclose(self):
        pass


class ScriptedClient:
    """A client that answers tool calls and approvals from tables."""

    def __init__(self, *, results=None, approvals=None, silent=False):
        self.results = results or {}
        self.approvals = approvals or {}
        self.silent = silent

    async def tool_result(self, call_id):
        if self.silent:
            await asyncio.Event().wait()
        return self.results[call_id]

    async def approval(self, call_id):
        return self.approvals[call_id]


class Harness:
    def __init__(self, *, replies=(), tools=(), pricing=None, max_tool_iterations=8, store=None, prompt=None):
        prompt = prompt or PromptConfig(version="1.0.0", system_prompt="Be {{ tone }}.", variables={"tone": "kind"})
        self.config = AgentConfig(
            name="helper",
            provider=ProviderConfig(type="mock", pricing=pricing or Pricing()),
            prompts=PromptRollout(stable=prompt),
            tools=list(tools),
            max_tool_iterations=max_tool_iterations,
        )
        self.provider = RecordingProvider(MockScript(replies=list(replies)))
        self.store = store or MemoryStore()
        self.agent = Agent(config=self.config, provider=self.provider, store=self.store)
        self.events = []

    async def emit(self, event):
        self.events.append(event)

    async def turn(self, session_id, text, *, client=None, cancelled=None, metadata=None):
        self.events = []
        await self.agent.run_turn(
            session_id,
            UserInput(text, metadata=metadata or {}),
            channel=client or ScriptedClient(),
            emit=self.emit,
            cancelled=cancelled,
        )
        return self.events


async def test_turn_streams_chunks_then_done_with_usage_and_cost():
    h = Harness(
        replies=[ScriptedReply(text="Hello there, friend", chunk_size=5)],
        pricing=Pricing(input_per_million=1_000_000, output_per_million=2_000_000),
    )
    session, resumed = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "hi")
    chunks = [e.text for e in events if isinstance(e, Chunk)]
    assert "".join(chunks) == "Hello there, friend" and len(chunks) == 4
    done = events[-1]
    assert isinstance(done, TurnDone) and not resumed
    assert done.usage.output_tokens == 3 and done.usage.input_tokens > 0
    assert done.cost_usd == pytest.approx(done.usage.input_tokens * 1.0 + 3 * 2.0)
    assert (done.finish_reason, done.turn_index, done.provider) == ("stop", 0, "mock")


async def test_turn_is_committed_before_done_is_emitted():
    """A client that saw done must never lose that turn."""
    h = Harness()
    session, _ = await h.agent.open_session(session_id=None)
    seen_at_done = []

    async def emit(event):
        if isinstance(event, TurnDone):
            seen_at_done.append(len((await h.store.get(session.id)).turns))

    await h.agent.run_turn(session.id, UserInput("hi"), channel=ScriptedClient(), emit=emit)
    assert seen_at_done == [1]


async def test_model_sees_rendered_system_prompt_and_whole_history():
    h = Harness()
    session, _ = await h.agent.open_session(session_id=None)
    await h.turn(session.id, "first")
    await h.turn(session.id, "second")
    roles = [(m.role, m.content) for m in h.provider.requests[-1].messages]
    assert roles == [
        ("system", "Be kind."),
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second"),
    ]


async def test_resuming_an_unknown_session_is_session_not_found():
    h = Harness()
    with pytest.raises(OpenError) as caught:
        await h.agent.open_session(session_id="missing")
    assert caught.value.code == "SESSION_NOT_FOUND"


def _client_tool(name="pick_color", **extra):
    return ToolConfig(name=name, type="client", description="Ask the user's browser", **extra)


async def test_client_tool_round_trip_feeds_the_result_back_to_the_model():
    h = Harness(
        replies=[
            ScriptedReply(tool_calls=[ScriptedToolCall(id="c1", name="pick_color", arguments={"of": "sky"})]),
            ScriptedReply(text="The sky is blue."),
        ],
        tools=[_client_tool()],
    )
    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "color?", client=ScriptedClient(results={"c1": ToolOutcome("blue")}))
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert started.client_side and started.call.arguments == {"of": "sky"}
    assert (finished.content, finished.is_error) == ("blue", False)
    assert isinstance(events[-1], TurnDone) and events[-1].finish_reason == "stop"
    tool_message = h.provider.requests[-1].messages[-1]
    assert (tool_message.role, tool_message.content, tool_message.tool_call_id) == ("tool", "blue", "c1")
    stored = (await h.store.get(session.id)).turns[0].messages
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize(
    ("tool", "client", "expected"),
    [
        pytest.param(
            _client_tool(require_approval=True),
            ScriptedClient(approvals={"c1": ApprovalDecision(False, "not now")}),
            "the user denied this tool call: not now",
            id="approval-denied",
        ),
        pytest.param(
            _client_tool(timeout_seconds=0.05),
            ScriptedClient(silent=True),
            "tool 'pick_color' timed out after 0.05s",
            id="client-never-answers",
        ),
        pytest.param(
            _client_tool(name="other"),
            ScriptedClient(),
            "unknown tool 'pick_color'",
            id="model-calls-unknown-tool",
        ),
        pytest.param(
            ToolConfig(name="pick_color", type="http"),
            ScriptedClient(),
            "tool 'pick_color' has no handler in this runtime",
            id="server-tool-without-handler",
        ),
    ],
)
async def test_tool_failures_become_error_results_and_the_turn_still_completes(tool, client, expected):
    h = Harness(
        replies=[
            ScriptedReply(tool_calls=[ScriptedToolCall(id="c1", name="pick_color")]),
            ScriptedReply(text="Sorry."),
        ],
        tools=[tool],
    )
    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "go", client=client)
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert (finished.content, finished.is_error) == (expected, True)
    assert isinstance(events[-1], TurnDone)


async def test_approved_call_runs_the_tool():
    h = Harness(
        replies=[ScriptedReply(tool_calls=[ScriptedToolCall(id="c1", name="pick_color")]), ScriptedReply(text="ok")],
        tools=[_client_tool(require_approval=True)],
    )
    session, _ = await h.agent.open_session(session_id=None)
    client = ScriptedClient(approvals={"c1": ApprovalDecision(True)}, results={"c1": ToolOutcome("green")})
    events = await h.turn(session.id, "go", client=client)
    assert next(e for e in events if isinstance(e, ToolCallStarted)).require_approval
    assert next(e for e in events if isinstance(e, ToolFinished)).content == "green"


async def test_huge_tool_output_is_truncated_with_a_notice():
    h = Harness(
        replies=[ScriptedReply(tool_calls=[ScriptedToolCall(id="c1", name="pick_color")]), ScriptedReply(text="ok")],
        tools=[_client_tool()],
    )
    session, _ = await h.agent.open_session(session_id=None)
    client = ScriptedClient(results={"c1": ToolOutcome("x" * (MAX_TOOL_OUTPUT_CHARS + 500))})
    events = await h.turn(session.id, "go", client=client)
    content = next(e for e in events if isinstance(e, ToolFinished)).content
    assert content.startswith("x" * 100) and content.endswith("[output truncated: 500 more characters were dropped]")


async def test_tool_loop_stops_at_the_iteration_bound():
    """A model that always asks for another tool cannot loop forever."""
    h = Harness(
        replies=[ScriptedReply(tool_calls=[ScriptedToolCall(name="pick_color")])],
        tools=[_client_tool()],
        max_tool_iterations=2,
    )

    class Answering(ScriptedClient):
        async def tool_result(self, call_id):
            return ToolOutcome("again")

    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "go", client=Answering())
    assert sum(isinstance(e, ToolCallStarted) for e in events) == 2
    assert isinstance(events[-1], TurnDone) and events[-1].finish_reason == "tool_limit"
    assert h.provider.requests[-1].tools == ()


async def test_provider_error_fails_the_turn_and_commits_nothing():
    h = Harness(replies=[ScriptedReply(text="partial", error=ScriptedError(message="overloaded", retryable=True))])
    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "hi")
    assert events[-1] == TurnFailed("PROVIDER_ERROR", "overloaded", True)
    assert (await h.store.get(session.id)).turns == ()


class EndlessProvider:
    """A model server that never ends its reply (it ignores max_tokens): text for ever."""

    type, model = "openai", "runaway"

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def stream(self, request):
        try:
            while True:
                self.sent += 1
                yield TextDelta("runaway " * 128)
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_a_reply_that_never_ends_fails_the_turn_at_what_the_session_could_hold():
    """Without a bound the runtime kept every chunk of it until the turn timed out."""
    config = AgentConfig(
        name="helper",
        prompts=PromptRollout(stable=PromptConfig(version="1.0.0", system_prompt="Be brief.")),
        session=SessionConfig(max_bytes=100_000),
    )
    provider = EndlessProvider()
    store = MemoryStore(max_bytes=100_000)
    agent = Agent(config=config, provider=provider, store=store)
    session, _ = await agent.open_session(session_id=None)
    events = []

    async def emit(event):
        events.append(event)

    async with asyncio.timeout(30):
        await agent.run_turn(session.id, UserInput("hi"), channel=ScriptedClient(), emit=emit)
    failed = events[-1]
    assert isinstance(failed, TurnFailed) and failed.code == "PROVIDER_ERROR", failed
    assert "100000 characters" in failed.message and not failed.retryable
    streamed = sum(len(e.text) for e in events if isinstance(e, Chunk))
    assert 100_000 - 1024 <= streamed <= 100_000 + 1024
    assert provider.closed and provider.sent < 200
    assert (await store.get(session.id)).turns == ()


async def test_cancel_commits_the_partial_reply_and_reports_cancelled():
    h = Harness(replies=[ScriptedReply(text="a" * 400, chunk_size=1, chunk_delay_ms=5)])
    session, _ = await h.agent.open_session(session_id=None)
    cancelled = asyncio.Event()
    task = asyncio.create_task(h.turn(session.id, "long story", cancelled=cancelled))
    while not any(isinstance(e, Chunk) for e in h.events):
        await asyncio.sleep(0.01)
    cancelled.set()
    events = await task
    done = events[-1]
    assert isinstance(done, TurnDone) and done.finish_reason == "cancelled"
    stored = (await h.store.get(session.id)).turns[0]
    assert stored.finish_reason == "cancelled"
    assert 0 < len(stored.messages[-1]["content"]) < 400


class FlakyStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.down = False

    async def append_turn(self, session_id, turn):
        if self.down:
            raise StoreUnavailable("connection refused")
        await super().append_turn(session_id, turn)


async def test_store_outage_at_commit_is_a_retryable_error_without_done():
    store = FlakyStore()
    h = Harness(store=store)
    session, _ = await h.agent.open_session(session_id=None)
    store.down = True
    events = await h.turn(session.id, "hi")
    assert isinstance(events[-1], TurnFailed)
    assert (events[-1].code, events[-1].retryable) == ("STORE_UNAVAILABLE", True)
    assert not any(isinstance(e, TurnDone) for e in events)
    store.down = False
    events = await h.turn(session.id, "hi again")
    assert isinstance(events[-1], TurnDone) and events[-1].turn_index == 0


async def test_new_sessions_record_their_canary_version():
    h = Harness()
    config = h.config.model_copy(
        update={
            "prompts": PromptRollout(
                stable=PromptConfig(version="1.0.0"), canary=PromptConfig(version="2.0.0"), canary_weight=100
            )
        }
    )
    agent = Agent(config=config, provider=h.provider, store=h.store)
    session, _ = await agent.open_session(session_id=None)
    assert (await h.store.get(session.id)).prompt_version == "2.0.0"


# --- what a client may set in the prompt ---------------------------------------

STEERABLE = PromptConfig.model_validate(
    {
        "version": "1.0.0",
        "systemPrompt": "Be {{ tone }}. {% include 'rules' %}",
        "templates": {"rules": "Refunds up to {{ limit }}.", "ask": "({{ tone }}) {{ message }}", "split": "{{ 10 // parts }}"},
        "variables": {"tone": "kind", "limit": "100 EUR", "parts": "1"},
        "clientInputs": {
            "variables": {"tone": {"type": "enum", "values": ["kind", "brief"]}, "parts": {"type": "integer"}},
            "templates": ["ask", "split"],
        },
    }
)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"variables": {"limit": "any amount"}}, id="variable-the-system-prompt-uses"),
        pytest.param({"template": "rules"}, id="template-the-system-prompt-includes"),
        pytest.param({"variables": {"tone": "rude"}}, id="declared-variable-with-an-undeclared-value"),
    ],
)
async def test_what_the_pack_does_not_declare_never_reaches_the_model(metadata):
    """Refused before the model is called and before anything is stored."""
    h = Harness(prompt=STEERABLE)
    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "hi", metadata=metadata)
    assert [(type(e), e.code, e.retryable) for e in events] == [(TurnFailed, "INVALID_MESSAGE", False)]
    assert h.provider.requests == []
    assert (await h.store.get(session.id)).turns == ()


async def test_a_declared_variable_the_author_put_in_the_system_prompt_applies_to_its_message_only():
    h = Harness(prompt=STEERABLE)
    session, _ = await h.agent.open_session(session_id=None)
    await h.turn(session.id, "hi", metadata={"variables": {"tone": "brief"}})
    await h.turn(session.id, "and again")
    systems = [request.messages[0] for request in h.provider.requests]
    assert [(m.role, m.content) for m in systems] == [
        ("system", "Be brief. Refunds up to 100 EUR."),
        ("system", "Be kind. Refunds up to 100 EUR."),
    ]


async def test_a_picked_template_becomes_the_user_message_and_is_stored_as_sent():
    h = Harness(prompt=STEERABLE)
    session, _ = await h.agent.open_session(session_id=None)
    metadata = {"template": "ask", "variables": {"tone": "brief"}, "channel": "web"}
    await h.turn(session.id, "where is my order?", metadata=metadata)
    assert h.provider.requests[0].messages[-1] == Message("user", "(brief) where is my order?")
    stored = (await h.store.get(session.id)).turns[0].messages[0]
    assert stored == {"role": "user", "content": "(brief) where is my order?", "metadata": metadata}


async def test_a_template_that_fails_on_a_declared_value_is_invalid_message_not_internal():
    h = Harness(prompt=STEERABLE)
    session, _ = await h.agent.open_session(session_id=None)
    events = await h.turn(session.id, "hi", metadata={"template": "split", "variables": {"parts": 0}})
    assert [(type(e), e.code) for e in events] == [(TurnFailed, "INVALID_MESSAGE")]


# --- who may resume a session --------------------------------------------------

ALICE = {"auth_method": "apiKey", "auth_subject": "key:alice"}
BOB = {"auth_method": "apiKey", "auth_subject": "key:bob"}
ANONYMOUS = {"auth_method": "none", "auth_subject": "anonymous"}


@pytest.mark.parametrize(
    ("started_by", "resumed_by", "allowed"),
    [
        pytest.param(ALICE, ALICE, True, id="owner"),
        pytest.param(ALICE, BOB, False, id="another-key"),
        pytest.param(ALICE, {"auth_method": "jwt", "auth_subject": "key:alice"}, False, id="same-subject-other-method"),
        pytest.param(ALICE, ANONYMOUS, False, id="anonymous-after-auth-was-turned-off"),
        pytest.param(ALICE, {}, False, id="no-principal-at-all"),
        pytest.param(ANONYMOUS, ANONYMOUS, True, id="no-auth-no-owner"),
        pytest.param(ANONYMOUS, BOB, True, id="ownerless-session-after-auth-was-turned-on"),
        pytest.param({}, BOB, True, id="session-without-metadata"),
    ],
)
async def test_a_session_is_resumed_only_by_the_principal_that_started_it(started_by, resumed_by, allowed):
    """Another principal is told the session does not exist, exactly as for an unknown id."""
    h = Harness()
    session, _ = await h.agent.open_session(session_id=None, metadata=started_by)
    if allowed:
        resumed, was_resumed = await h.agent.open_session(session_id=session.id, metadata=resumed_by)
        assert (resumed.id, was_resumed) == (session.id, True)
    else:
        with pytest.raises(OpenError) as refused:
            await h.agent.open_session(session_id=session.id, metadata=resumed_by)
        with pytest.raises(OpenError) as unknown:
            await h.agent.open_session(session_id="no-such-session", metadata=resumed_by)
        assert refused.value.code == unknown.value.code == "SESSION_NOT_FOUND"
        assert refused.value.message == f"session {session.id} not found"
