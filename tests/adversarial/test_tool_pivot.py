"""Class 3, end to end: a model steered into using a tool as a pivot gets an error result, nothing more.

Through real facade and runtime processes, a client's message makes the
(scripted) model call ``http`` tools that would follow a redirect to another
origin with the tool's secret header, reach the link-local metadata address,
or climb out of a path segment. Each call must come back as an error
``tool_result`` that names the policy, the turn must end with ``done``, no
request may reach the other origin or path, the secret must never leave the
configured origin, and both processes must go on serving.
"""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from websockets.sync.client import connect

from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply, ScriptedToolCall

from ..e2e.processes import AgentProcesses
from ..tools.conftest import LOOPBACK_ALLOWED, http_tool
from ..tools.serving import Service
from .conftest import assert_serves_a_turn

SECRET = "Bearer pivot-secret-0123456789"


class Recorder:
    """A loopback HTTP server that records every request, and can redirect elsewhere."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.requests: list[dict] = []
        self.redirect_to = redirect_to
        self.service = Service(self._app)

    def _app(self) -> Starlette:
        async def anything(request: Request):
            self.requests.append({"path": request.url.path, "raw_path": request.scope["raw_path"].decode(),
                                  "headers": dict(request.headers)})
            if self.redirect_to and request.url.path == "/redirect":
                return RedirectResponse(self.redirect_to, status_code=302)
            return JSONResponse({"path": request.url.path})

        return Starlette(routes=[Route("/{path:path}", anything)])


@pytest.fixture(scope="module")
def servers():
    elsewhere = Recorder()
    elsewhere.service.start()
    origin = Recorder(redirect_to=f"{elsewhere.service.url}/steal")
    origin.service.start()
    try:
        yield origin, elsewhere
    finally:
        origin.service.stop()
        elsewhere.service.stop()


def scripted(*calls: tuple[str, str, dict]) -> MockScript:
    replies = []
    for word, tool, arguments in calls:
        replies.append(ScriptedReply(match=word, tool_calls=[ScriptedToolCall(name=tool, arguments=arguments)]))
        replies.append(ScriptedReply(match=f"(after {tool})", text=f"Used {tool}."))
    return MockScript(replies=replies)


@pytest.fixture(scope="module")
def pivot_agent(servers, tmp_path_factory):
    origin, _ = servers
    secret_header = [{"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_PIVOT_AUTHORIZATION"}]
    tools = [
        # The origin is on loopback, so this registry allows loopback; the
        # redirect target is another origin all the same.
        http_tool("follow", f"{origin.service.url}/redirect", egress=LOOPBACK_ALLOWED, headers=secret_header),
        http_tool("metadata", "http://169.254.169.254/latest/meta-data/", egress={}, headers=secret_header),
        http_tool("loopback", f"{origin.service.url}/internal", egress={}, headers=secret_header),
        http_tool("files", f"{origin.service.url}/files/{{{{ name }}}}", egress=LOOPBACK_ALLOWED,
                  schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
    ]
    script = scripted(
        ("follow", "follow", {}),
        ("metadata", "metadata", {}),
        ("loopback", "loopback", {}),
        ("parent", "files", {"name": ".."}),
        ("climb", "files", {"name": "../admin"}),
        ("percent", "files", {"name": "%2e%2e"}),
        ("mixed", "files", {"name": "%2e%2e%2fadmin"}),
    )
    config = AgentConfig(name="pivot", provider=ProviderConfig(type="mock", model="mock", mock=script), tools=tools)
    processes = AgentProcesses(config, tmp_path_factory.mktemp("pivot"),
                               env={"OMNIA_TOOL_PIVOT_AUTHORIZATION": SECRET})
    try:
        yield processes.start()
    finally:
        processes.stop()


def run_turn(agent, text: str) -> list[dict]:
    with connect(agent.ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": text}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=30)))
    return frames


@pytest.mark.parametrize(
    ("message", "path_not_reached"),
    [
        pytest.param("follow the link", "/steal", id="cross-origin-redirect-with-secret"),
        pytest.param("read the metadata", None, id="link-local-metadata-address"),
        pytest.param("call the loopback service", "/internal", id="loopback-not-allowed"),
        pytest.param("the parent folder", "/", id="dot-dot-as-a-path-argument"),
        pytest.param("percent-encoded parent", "/", id="percent-encoded-dot-dot-as-a-path-argument"),
    ],
)
def test_a_tool_cannot_be_used_as_a_pivot(pivot_agent, servers, message, path_not_reached):
    origin, elsewhere = servers
    frames = run_turn(pivot_agent, message)
    kinds = [frame["type"] for frame in frames if frame["type"] != "chunk"]
    assert kinds == ["tool_call", "tool_result", "done"], frames
    (result,) = [frame for frame in frames if frame["type"] == "tool_result"]
    assert result["is_error"] is True, result
    assert "egress" in result["content"].lower() or "path" in result["content"].lower(), result["content"]
    assert SECRET not in json.dumps(frames)
    assert not elsewhere.requests, "nothing may reach another origin"
    if path_not_reached:
        assert all(request["path"] != path_not_reached for request in origin.requests + elsewhere.requests)
    assert_serves_a_turn(pivot_agent)


@pytest.mark.parametrize(
    ("message", "raw_path"),
    [
        pytest.param("climb up a folder", "/files/..%2Fadmin", id="slash-and-dot-dot"),
        pytest.param("mixed encodings", "/files/%252e%252e%252fadmin", id="percent-encoded-dot-dot-and-slash"),
    ],
)
def test_a_path_argument_stays_in_its_segment(pivot_agent, servers, message, raw_path):
    """Arguments that are not a bare ``..`` are sent, but encoded whole: one segment, never a climb."""
    origin, _ = servers
    frames = run_turn(pivot_agent, message)
    assert frames[-1]["type"] == "done", frames
    assert origin.requests[-1]["raw_path"] == raw_path
    assert all(not request["path"].startswith("/admin") for request in origin.requests)
