"""Sessions belong to the principal that started them, through real processes.

With API keys, a session started with one key is resumed with that key only;
another key gets the same ``SESSION_NOT_FOUND`` as an id that does not exist,
so a session id reveals nothing to whoever does not own it.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from omnia.config import AuthConfig

from .conftest import mock_config
from .processes import AgentProcesses, wait_until

# Connections one key may hold on the replica.
SHARE = 3


@pytest.fixture(scope="module")
def keyed_agent(tmp_path_factory):
    config = mock_config(
        auth=AuthConfig(type="apiKey", api_keys_env="E2E_API_KEYS"), max_connections_per_principal=SHARE
    )
    processes = AgentProcesses(config, tmp_path_factory.mktemp("keyed"), env={"E2E_API_KEYS": "key-alice,key-bob"})
    try:
        yield processes.start()
    finally:
        processes.stop()


def _start_session(url: str, key: str) -> str:
    with connect(f"{url}?api_key={key}") as ws:
        session_id = json.loads(ws.recv(timeout=10))["session_id"]
        ws.send(json.dumps({"type": "message", "content": "hi"}))
        while json.loads(ws.recv(timeout=30))["type"] != "done":
            pass
    return session_id


def _resume(url: str, key: str, session_id: str) -> tuple[dict, int | None]:
    with connect(f"{url}?api_key={key}&session_id={session_id}") as ws:
        first = json.loads(ws.recv(timeout=10))
        if first["type"] == "connected":
            return first, None
        with pytest.raises(ConnectionClosed):  # the server closes after the error frame
            ws.recv(timeout=10)
        return first, ws.close_code


def test_another_principal_resuming_a_session_gets_session_not_found(keyed_agent):
    session_id = _start_session(keyed_agent.ws_url, "key-alice")
    first, close_code = _resume(keyed_agent.ws_url, "key-bob", session_id)
    assert (first["type"], first["code"], close_code) == ("error", "SESSION_NOT_FOUND", 4404)
    _, unknown_close = _resume(keyed_agent.ws_url, "key-bob", "no-such-session")
    assert unknown_close == close_code


def test_the_owner_resumes_its_session_with_its_history(keyed_agent):
    session_id = _start_session(keyed_agent.ws_url, "key-alice")
    first, _ = _resume(keyed_agent.ws_url, "key-bob", session_id)
    assert first["type"] == "error"
    connected, _ = _resume(keyed_agent.ws_url, "key-alice", session_id)
    assert (connected["type"], connected["session_id"], connected["resumed"], connected["turns"]) == (
        "connected", session_id, True, 1,
    )
    assert keyed_agent.runtime.poll() is None and keyed_agent.facade.poll() is None


def test_without_auth_sessions_have_no_owner_and_resume_as_before(mock_agent):
    session_id = _start_session(mock_agent.ws_url, "unused")
    with connect(f"{mock_agent.ws_url}?session_id={session_id}") as ws:
        connected = json.loads(ws.recv(timeout=10))
    assert (connected["type"], connected["resumed"]) == ("connected", True)


def test_one_key_holds_at_most_its_share_of_the_replica_and_others_still_get_in(keyed_agent):
    """A client with a valid key opening connection after connection is refused past its share
    (WebSocket and OpenAI endpoint alike), while another key connects and talks."""
    completion = {"model": "e2e", "messages": [{"role": "user", "content": "hi"}]}
    with ExitStack() as held:
        for _ in range(SHARE):
            ws = held.enter_context(connect(f"{keyed_agent.ws_url}?api_key=key-alice"))
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        with connect(f"{keyed_agent.ws_url}?api_key=key-alice") as refused:
            error = json.loads(refused.recv(timeout=10))
            with pytest.raises(ConnectionClosed):
                refused.recv(timeout=10)
        over = httpx.post(
            f"{keyed_agent.url}/v1/chat/completions", json=completion,
            headers={"authorization": "Bearer key-alice"}, timeout=30,
        )
        _start_session(keyed_agent.ws_url, "key-bob")
        served = httpx.post(
            f"{keyed_agent.url}/v1/chat/completions", json=completion,
            headers={"authorization": "Bearer key-bob"}, timeout=30,
        )
    assert (error["code"], refused.close_code) == ("CAPACITY_EXCEEDED", 1013)
    assert (over.status_code, over.json()["error"]["code"]) == (503, "CAPACITY_EXCEEDED")
    assert served.status_code == 200, served.text
    # Closed, the connections give their share back (once the facade has seen them close).
    wait_until(lambda: _first_frame(keyed_agent.ws_url, "key-alice") == "connected", what="alice's share back")


def _first_frame(url: str, key: str) -> str:
    with connect(f"{url}?api_key={key}") as ws:
        return json.loads(ws.recv(timeout=10))["type"]
