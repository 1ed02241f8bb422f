"""A2A through real processes, spoken to by the official ``a2a-sdk`` client."""

from __future__ import annotations

import contextlib
import json
import uuid

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import TaskNotFoundError

from omnia.config import (
    AgentConfig,
    AuthConfig,
    FacadeConfig,
    MockScript,
    PromptConfig,
    PromptRollout,
    ProtocolsConfig,
    ProviderConfig,
    ScriptedReply,
    SkillConfig,
)

from .processes import AgentProcesses

API_KEY = "a2a-test-key"


def _config(**facade) -> AgentConfig:
    script = MockScript(
        replies=[
            ScriptedReply(match="count to six", text="one two three four five six", chunk_size=4, chunk_delay_ms=100),
            ScriptedReply(match="slow", text="tick " * 200, chunk_size=5, chunk_delay_ms=50),
        ]
    )
    prompt = PromptConfig(
        version="1.2.0",
        description="Answers questions about orders.",
        skills=[SkillConfig(id="orders", name="Orders", description="Finds orders.", tags=["orders"], examples=["Where is order 7?"])],
    )
    return AgentConfig(
        name="e2e",
        provider=ProviderConfig(type="mock", model="mock", mock=script),
        prompts=PromptRollout(stable=prompt),
        facade=FacadeConfig(**facade),
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    processes = AgentProcesses(
        _config(auth=AuthConfig(type="apiKey", api_keys_env="OMNIA_API_KEYS")),
        tmp_path_factory.mktemp("a2a"),
        env={"OMNIA_API_KEYS": API_KEY},
    )
    try:
        yield processes.start()
    finally:
        processes.stop()


@contextlib.asynccontextmanager
async def _client(url: str, *, streaming: bool = True, key: str = API_KEY):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(httpx_client=http, streaming=streaming))
        async with client:
            yield client


def _message(text: str, *, context_id: str = "", session: str = "") -> a2a.SendMessageRequest:
    message = a2a.Message(
        role=a2a.Role.ROLE_USER, message_id=uuid.uuid4().hex, context_id=context_id, parts=[a2a.Part(text=text)]
    )
    if session:
        message.metadata["omniaSession"] = session
    return a2a.SendMessageRequest(message=message)


def _final_task(responses: list[a2a.StreamResponse]) -> a2a.Task | None:
    return next((r.task for r in reversed(responses) if r.HasField("task")), None)


def test_agent_card_shows_the_pack_description_skills_and_bearer_auth(agent):
    card = httpx.get(f"{agent.url}/.well-known/agent-card.json", timeout=5).json()
    assert card["name"] == "e2e" and card["description"] == "Answers questions about orders."
    assert card["version"] == "1.2.0"
    assert card["supportedInterfaces"] == [
        {"url": f"{agent.url}/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    ]
    assert card["capabilities"]["streaming"] is True
    assert [(s["id"], s["examples"]) for s in card["skills"]] == [("orders", ["Where is order 7?"])]
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "bearer"


async def test_streaming_message_streams_the_reply_as_artifact_chunks(agent):
    async with _client(agent.url) as client:
        responses = [r async for r in client.send_message(_message("count to six"))]
    chunks = [
        part.text for r in responses if r.HasField("artifact_update") for part in r.artifact_update.artifact.parts
    ]
    assert len(chunks) > 1 and "".join(chunks) == "one two three four five six"
    final = [r.status_update for r in responses if r.HasField("status_update")][-1]
    assert final.status.state == a2a.TaskState.TASK_STATE_COMPLETED
    assert final.status.message.parts[0].text == "one two three four five six"
    assert final.status.message.metadata["omniaSession"]


async def test_non_streaming_message_returns_the_completed_task_and_get_task_finds_it(agent):
    async with _client(agent.url, streaming=False) as client:
        responses = [r async for r in client.send_message(_message("hello a2a"))]
        task = _final_task(responses)
        assert task is not None and task.status.state == a2a.TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "hello a2a"
        fetched = await client.get_task(a2a.GetTaskRequest(id=task.id))
    assert fetched.id == task.id and fetched.status.state == a2a.TaskState.TASK_STATE_COMPLETED


async def test_a_context_continues_its_session(agent):
    async with _client(agent.url, streaming=False) as client:
        first = _final_task([r async for r in client.send_message(_message("first"))])
        second = _final_task([r async for r in client.send_message(_message("second", context_id=first.context_id))])
    session = first.status.message.metadata["omniaSession"]
    assert second.context_id == first.context_id
    assert second.status.message.metadata["omniaSession"] == session


async def test_a_message_may_name_the_session_to_continue(agent):
    async with _client(agent.url, streaming=False) as client:
        first = _final_task([r async for r in client.send_message(_message("first"))])
        session = first.status.message.metadata["omniaSession"]
        other = _final_task([r async for r in client.send_message(_message("elsewhere", session=session))])
        unknown = _final_task([r async for r in client.send_message(_message("x", session="nope"))])
    assert other.context_id != first.context_id
    assert other.status.message.metadata["omniaSession"] == session
    assert unknown.status.state == a2a.TaskState.TASK_STATE_FAILED
    assert unknown.status.message.parts[0].text.startswith("SESSION_NOT_FOUND")


async def test_cancel_task_cancels_the_running_turn(agent):
    async with _client(agent.url) as client:
        stream = client.send_message(_message("slow"))
        task_id = ""
        async for response in stream:
            if response.HasField("artifact_update"):
                task_id = response.artifact_update.task_id
                break
        assert task_id
        cancelled = await client.cancel_task(a2a.CancelTaskRequest(id=task_id))
        await stream.aclose()
    assert cancelled.status.state == a2a.TaskState.TASK_STATE_CANCELED


async def test_another_principal_cannot_see_a_task(tmp_path):
    keys = "key-one,key-two"
    processes = AgentProcesses(
        _config(auth=AuthConfig(type="apiKey", api_keys_env="OMNIA_API_KEYS")), tmp_path, env={"OMNIA_API_KEYS": keys}
    )
    try:
        processes.start()
        async with _client(processes.url, streaming=False, key="key-one") as client:
            task = _final_task([r async for r in client.send_message(_message("mine"))])
        async with _client(processes.url, streaming=False, key="key-two") as client:
            with pytest.raises(TaskNotFoundError):
                await client.get_task(a2a.GetTaskRequest(id=task.id))
    finally:
        processes.stop()


def test_json_rpc_without_a_valid_key_is_401(agent):
    response = httpx.post(
        f"{agent.url}/a2a",
        json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}},
        headers={"Authorization": "Bearer wrong"},
        timeout=5,
    )
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["message"].startswith("UNAUTHORIZED")


def test_the_0_3_method_names_work_too(agent):
    """Clients of A2A 0.3 send message/send with kind-tagged parts."""
    response = httpx.post(
        f"{agent.url}/a2a",
        json={
            "jsonrpc": "2.0",
            "id": 7,
            "method": "message/send",
            "params": {
                "message": {
                    "kind": "message", "role": "user", "messageId": uuid.uuid4().hex,
                    "parts": [{"kind": "text", "text": "old client"}],
                }
            },
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    result = response.json()["result"]
    assert result["kind"] == "task" and result["status"]["state"] == "completed"
    assert result["status"]["message"]["parts"][0]["text"] == "old client"


def test_endpoints_are_absent_when_disabled(tmp_path):
    processes = AgentProcesses(_config(protocols=ProtocolsConfig(a2a=False)), tmp_path)
    try:
        processes.start()
        assert httpx.get(f"{processes.url}/.well-known/agent-card.json", timeout=5).status_code == 404
        assert httpx.post(f"{processes.url}/a2a", json={}, timeout=5).status_code == 404
    finally:
        processes.stop()


def _rpc(agent, body: bytes | dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if isinstance(body, dict):
        return httpx.post(f"{agent.url}/a2a", json=body, headers=headers, timeout=30)
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{agent.url}/a2a", content=body, headers=headers, timeout=30)


@pytest.mark.parametrize("depth", [200, 100_000])
def test_a_body_nested_too_deeply_is_a_parse_error_not_an_internal_one(agent, depth):
    """JSON nested deeper than the decoder recurses made the SDK answer
    -32603 (internal error) and log a traceback; it is the client's mistake."""
    lines = len(agent.log("facade").splitlines())
    response = _rpc(agent, b"[" * depth + b"]" * depth)
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32700 and "nests deeper than 64 levels" in error["message"]
    assert "Traceback" not in "\n".join(agent.log("facade").splitlines()[lines:])
    assert _rpc(agent, _send_body("still answering")).json()["result"]["status"]["state"] == "completed"


def test_a_lone_surrogate_escaped_in_the_body_is_a_parse_error(agent):
    body = json.dumps(_send_body("hi")).replace('"hi"', '"hi \\ud800"').encode()
    assert b"\\ud800" in body
    response = _rpc(agent, body)
    error = response.json()["error"]
    assert error["code"] == -32700 and "surrogate" in error["message"]
    assert _rpc(agent, _send_body("still answering")).json()["result"]["status"]["state"] == "completed"


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(agent):
    """The SDK read any body whole (50 MB was accepted); the bound is the
    OpenAI endpoint's: four times the message limit (64 KiB by default)."""
    huge = json.dumps(_send_body("a" * (4 << 20))).encode()
    response = _rpc(agent, huge)
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "MESSAGE_TOO_LARGE: the request body exceeds 262144 bytes"

    def chunked():  # no Content-Length: refused once the limit is passed
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    response = httpx.post(
        f"{agent.url}/a2a", content=chunked(), timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize("value", [12, {"id": "x"}, ["x"], None, True])
def test_an_omnia_session_that_is_not_a_string_fails_the_task_instead_of_starting_a_new_session(agent, value):
    """A client that names its session wrongly must be told, not silently
    given a new session that loses its history."""
    body = _send_body("remember me", metadata={"omniaSession": value})
    status = _rpc(agent, body).json()["result"]["status"]
    assert status["state"] == "failed"
    text = status["message"]["parts"][0]["text"]
    assert text.startswith("INVALID_MESSAGE") and "omniaSession" in text
    assert "omniaSession" not in status["message"].get("metadata", {})


def test_an_empty_message_fails_the_task_as_on_every_other_protocol(agent):
    status = _rpc(agent, _send_body("")).json()["result"]["status"]
    assert status["state"] == "failed"
    assert status["message"]["parts"][0]["text"] == "INVALID_MESSAGE: the message is empty"


def _send_body(text: str, *, metadata: dict | None = None) -> dict:
    message = {"kind": "message", "role": "user", "messageId": uuid.uuid4().hex, "parts": [{"kind": "text", "text": text}]}
    if metadata is not None:
        message["metadata"] = metadata
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
