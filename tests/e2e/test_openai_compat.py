"""The OpenAI-compatible endpoint through real processes, spoken to by the official ``openai`` client."""

from __future__ import annotations

import httpx
import openai
import pytest

from omnia.config import (
    AgentConfig,
    AuthConfig,
    BudgetConfig,
    BudgetLimit,
    FacadeConfig,
    MockScript,
    ProtocolsConfig,
    ProviderConfig,
    ScriptedReply,
    ScriptedToolCall,
    ToolConfig,
)
from omnia.facade.openai_compat import SESSION_HEADER

from .processes import AgentProcesses

API_KEY = "sk-test-key-1"
# Replies used only after tool results (the mock picks those by position);
# every other message is echoed.
FOLLOW_UP = "(only after the tool result)"


def _config(**facade) -> AgentConfig:
    script = MockScript(
        replies=[
            ScriptedReply(match="count to six", text="one two three four five six", chunk_size=4, chunk_delay_ms=100),
            ScriptedReply(match="where am I", tool_calls=[ScriptedToolCall(name="get_location", arguments={"precise": True})]),
            ScriptedReply(text="You are in Lisbon.", chunk_size=4, match=FOLLOW_UP),
            ScriptedReply(match="weather", tool_calls=[ScriptedToolCall(name="weather", arguments={})]),
            ScriptedReply(text="It is sunny.", chunk_size=4, match=FOLLOW_UP),
            ScriptedReply(match="approve", tool_calls=[ScriptedToolCall(name="delete_all", arguments={})]),
            ScriptedReply(text="Nothing was deleted.", chunk_size=4, match=FOLLOW_UP),
        ]
    )
    tools = [
        ToolConfig(name="get_location", type="client", description="The user's location."),
        ToolConfig(name="weather", type="client", description="The weather where the user is."),
        ToolConfig(name="delete_all", type="client", require_approval=True),
    ]
    return AgentConfig(
        name="e2e",
        provider=ProviderConfig(type="mock", model="mock", mock=script),
        tools=tools,
        facade=FacadeConfig(**facade),
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    processes = AgentProcesses(_config(), tmp_path_factory.mktemp("openai"))
    try:
        yield processes.start()
    finally:
        processes.stop()


@pytest.fixture
def client(agent) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{agent.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_lists_the_agent_as_the_one_model(client):
    models = client.models.list()
    assert [model.id for model in models.data] == ["e2e"]
    assert client.models.retrieve("e2e").id == "e2e"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


def test_non_streaming_completion_has_the_agent_reply_and_usage(client):
    """Without a script match the mock echoes the message it got; the usage is the turn's."""
    completion = client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "hello there"}])
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens == 2
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streaming_completion_arrives_in_chunks_and_ends_with_usage(client):
    stream = client.chat.completions.create(
        model="e2e",
        messages=[{"role": "user", "content": "count to six"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_turns_count_in_the_same_metrics_as_the_websocket(agent, client):
    def sample(name: str, labels: str) -> float:
        text = httpx.get(f"{agent.url}/metrics", timeout=5).text
        line = next((l for l in text.splitlines() if l.startswith(f"{name}{{{labels}}}")), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    turns_before = sample("omnia_turns_total", 'outcome="done"')
    tokens_before = sample("omnia_tokens_total", 'direction="output",model="mock",provider="mock"')
    client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "three words here"}])
    assert sample("omnia_turns_total", 'outcome="done"') == turns_before + 1
    assert sample("omnia_tokens_total", 'direction="output",model="mock",provider="mock"') == tokens_before + 3
    assert sample("active_connections", 'agent="e2e"') == 0


def test_stateless_request_replays_earlier_messages_as_context(client):
    """The mock echoes what the runtime got, which shows the replayed transcript."""
    completion = client.chat.completions.create(
        model="e2e",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    content = completion.choices[0].message.content
    assert "[user] My name is Ada." in content and "[assistant] Hello Ada." in content
    assert "[system] Be brief." in content
    assert content.endswith("What is my name?")


def test_session_header_resumes_the_session_and_sends_only_new_messages(client):
    first = client.chat.completions.with_raw_response.create(
        model="e2e", messages=[{"role": "user", "content": "first message"}]
    )
    session = first.headers[SESSION_HEADER]
    assert session
    second = client.chat.completions.with_raw_response.create(
        model="e2e",
        messages=[
            {"role": "user", "content": "first message"},
            {"role": "assistant", "content": "first message"},
            {"role": "user", "content": "second message"},
        ],
        extra_headers={SESSION_HEADER: session},
    )
    assert second.headers[SESSION_HEADER] == session
    assert second.parse().choices[0].message.content == "second message"


def test_unknown_session_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="e2e", messages=[{"role": "user", "content": "hi"}], extra_headers={SESSION_HEADER: "nope"}
        )
    assert caught.value.code == "SESSION_NOT_FOUND"


def _location_tool(name: str = "get_location") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def test_client_tool_call_is_returned_and_answered_in_the_next_request(client):
    messages = [{"role": "user", "content": "where am I?"}]
    asked = client.chat.completions.create(model="e2e", messages=messages, tools=[_location_tool()])
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_location" and call.function.arguments == '{"precise": true}'
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Lisbon"},
    ]
    answered = client.chat.completions.create(model="e2e", messages=messages, tools=[_location_tool()])
    assert answered.choices[0].message.content == "You are in Lisbon."
    assert answered.choices[0].finish_reason == "stop"
    assert answered.usage.completion_tokens > 0


def test_client_tool_call_streams_as_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model="e2e", messages=[{"role": "user", "content": "weather?"}], tools=[_location_tool("weather")], stream=True
    )
    chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    answer = client.chat.completions.create(
        model="e2e",
        stream=True,
        tools=[_location_tool("weather")],
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": deltas[0].id, "type": "function",
                                                  "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": deltas[0].id, "content": "sunny"},
        ],
    )
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "It is sunny."


def test_client_tool_the_request_did_not_offer_is_answered_with_an_error_for_the_model(client):
    completion = client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "where am I?"}])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == "You are in Lisbon."


def test_tool_requiring_approval_is_denied(client):
    tool = _location_tool("delete_all")
    completion = client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "approve"}], tools=[tool])
    assert completion.choices[0].message.content == "Nothing was deleted."


def test_answer_to_a_call_nobody_waits_for_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="e2e",
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function",
                                                      "function": {"name": "get_location", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_x", "content": "Lisbon"},
            ],
        )
    assert "call_x" in caught.value.message and caught.value.code == "INVALID_MESSAGE"


BAD_REQUESTS = [
    pytest.param({"model": "e2e", "messages": []}, 400, "messages", id="no-messages"),
    pytest.param({"model": "e2e", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", id="bad-role"),
    pytest.param({"model": "e2e", "messages": [{"role": "assistant", "content": "x"}]}, 400, "messages", id="last-not-user"),
    pytest.param(
        {"model": "e2e", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400, "messages[0].content", id="image-part",
    ),
    pytest.param({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, 404, "model", id="other-model"),
    pytest.param(
        {"model": "e2e", "messages": [{"role": "user", "content": "x"}], "tools": [_location_tool("rm_rf")]},
        400, "tools[0]", id="tool-not-declared",
    ),
    pytest.param({"model": "e2e", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n", id="n-2"),
    # Every field is the client's JSON, of any type.
    pytest.param({"model": "e2e", "messages": [{"role": ["user"], "content": "x"}]}, 400, "messages[0].role", id="role-a-list"),
    pytest.param({"model": "e2e", "messages": [{"role": {"user": 1}, "content": "x"}]}, 400, "messages[0].role", id="role-an-object"),
    pytest.param({"model": "e2e", "messages": ["hello"]}, 400, "messages[0]", id="message-a-string"),
    pytest.param({"model": "e2e", "messages": [{"role": "user", "content": 7}]}, 400, "messages[0].content", id="content-a-number"),
    pytest.param({"model": "e2e", "messages": [{"role": "user", "content": [["x"]]}]}, 400, "messages[0].content", id="content-part-a-list"),
    pytest.param({"model": ["e2e"], "messages": [{"role": "user", "content": "x"}]}, 404, "model", id="model-a-list"),
    pytest.param({"model": "e2e", "messages": [{"role": "user", "content": "x"}], "tools": [["x"]]}, 400, "tools[0]", id="tool-a-list"),
    pytest.param(
        {"model": "e2e", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": ["x"]}]},
        400, "tools[0]", id="tool-function-a-list",
    ),
    pytest.param(
        {"model": "e2e", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": ["c"], "content": "y"}]},
        400, "messages[1].tool_call_id", id="tool-call-id-a-list",
    ),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(agent, body, status, param):
    response = httpx.post(f"{agent.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert response.headers["x-should-retry"] == "false"


def test_body_that_is_not_json_is_400(agent):
    response = httpx.post(f"{agent.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_MESSAGE"


@pytest.mark.parametrize(
    "body",
    [
        rb'{"model": "e2e", "messages": [{"role": "user", "content": "hi \ud800"}]}',
        rb'{"model": "e2e", "messages": [{"role": "user", "content": "hi"}], "user": "\udfff"}',
    ],
    ids=["content", "another-field"],
)
def test_a_lone_surrogate_escaped_in_the_body_is_400(agent, body):
    """Valid JSON whose string holds half a surrogate pair is not text: it
    failed to encode on the way to the runtime, a 500 with a traceback."""
    response = httpx.post(
        f"{agent.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_MESSAGE"
    assert "surrogate" in response.json()["error"]["message"]


def test_oversized_message_is_413(agent):
    content = "x" * (FacadeConfig().max_message_bytes + 1)
    response = httpx.post(
        f"{agent.url}/v1/chat/completions",
        json={"model": "e2e", "messages": [{"role": "user", "content": content}]},
        timeout=10,
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "MESSAGE_TOO_LARGE"


@pytest.fixture
def keyed_agent(tmp_path):
    config = _config(auth=AuthConfig(type="apiKey", api_keys_env="OMNIA_API_KEYS"), messages_per_second=1, message_burst=2)
    config = config.model_copy(update={"budget": BudgetConfig(daily=BudgetLimit(tokens=1))})
    processes = AgentProcesses(config, tmp_path, env={"OMNIA_API_KEYS": API_KEY})
    try:
        yield processes.start()
    finally:
        processes.stop()


def test_auth_rate_limit_and_budget_behave_as_on_the_websocket(keyed_agent):
    with openai.OpenAI(base_url=f"{keyed_agent.url}/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert caught.value.code == "UNAUTHORIZED"
    # One HTTP connection, so one rate-limit bucket, as for one WebSocket.
    with openai.OpenAI(base_url=f"{keyed_agent.url}/v1", api_key=API_KEY, max_retries=0) as client:
        first = client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "spend"}])
        assert first.choices[0].message.content == "spend"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "again"}])
        assert caught.value.code == "BUDGET_EXCEEDED"
        assert caught.value.response.headers["x-should-retry"] == "false"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "again"}])
        assert caught.value.code == "RATE_LIMITED"
        assert caught.value.response.headers["x-should-retry"] == "true"


def test_turn_timeout_cuts_the_reply_with_finish_reason_length(tmp_path):
    config = _config(turn_timeout_seconds=1)
    slow = ScriptedReply(match="slow", text="tick " * 400, chunk_size=5, chunk_delay_ms=20)
    config = config.model_copy(
        update={"provider": config.provider.model_copy(update={"mock": MockScript(replies=[slow])})}
    )
    processes = AgentProcesses(config, tmp_path)
    try:
        processes.start()
        with openai.OpenAI(base_url=f"{processes.url}/v1", api_key="x", max_retries=0) as client:
            completion = client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "slow"}])
    finally:
        processes.stop()
    assert completion.choices[0].finish_reason == "length"
    assert 0 < len(completion.choices[0].message.content) < len("tick " * 400)


def test_endpoint_is_absent_when_disabled(tmp_path):
    config = _config(protocols=ProtocolsConfig(openai=False))
    processes = AgentProcesses(config, tmp_path)
    try:
        processes.start()
        assert httpx.get(f"{processes.url}/v1/models", timeout=5).status_code == 404
    finally:
        processes.stop()


def test_runtime_down_is_503(tmp_path):
    processes = AgentProcesses(_config(), tmp_path)
    try:
        processes.start()
        processes.kill_runtime()
        with openai.OpenAI(base_url=f"{processes.url}/v1", api_key="x", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="e2e", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 503 and caught.value.code == "RUNTIME_UNAVAILABLE"
    finally:
        processes.stop()
