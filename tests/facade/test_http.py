"""The HTTP side: probes, Prometheus metrics and the chat page."""

from __future__ import annotations

import pytest

from .conftest import RunningFacade
from .harness import connect, eventually, receive, receive_until, send


async def test_healthz_is_up_even_without_a_runtime(facade: RunningFacade, runtime) -> None:
    """Liveness must not fail for the runtime's sake, or Kubernetes restarts a healthy facade."""
    await runtime.kill()
    async with facade.http() as http:
        response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_reports_runtime_and_store(facade: RunningFacade) -> None:
    async with facade.http() as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "agent": "test-agent", "runtime": True, "store": True, "detail": "",
    }


async def test_metrics_describe_connections_turns_tokens_and_errors(
    facade: RunningFacade,
) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        await receive_until(ws, "done")
        await send(ws, {"type": "message", "content": "please fail"})
        await receive(ws)
        await send(ws, {"type": "message", "content": "use the client tool"})
        call = await receive(ws)
        await send(ws, {"type": "tool_result", "id": call["id"], "content": "here"})
        await receive_until(ws, "done")
        await ws.send("junk")
        await receive(ws)
        async with facade.http() as http:
            response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in [
        'active_connections{agent="support-agent"} 1.0',
        'omnia_active_connections{agent="support-agent"} 1.0',
        'omnia_connections_total{result="accepted"} 1.0',
        'omnia_turns_total{outcome="done"} 2.0',
        'omnia_turns_total{outcome="error"} 1.0',
        "omnia_turn_duration_seconds_count 3.0",
        "omnia_time_to_first_chunk_seconds_count 2.0",
        'omnia_tokens_total{direction="input",model="scripted-1",provider="mock"} 14.0',
        'omnia_tokens_total{direction="output",model="scripted-1",provider="mock"} 6.0',
        'omnia_cost_usd_total{model="scripted-1",provider="mock"} 0.004',
        'omnia_tool_calls_total{tool="get_location"} 1.0',
        'omnia_errors_total{code="PROVIDER_ERROR"} 1.0',
        'omnia_errors_total{code="INVALID_MESSAGE"} 1.0',
        'omnia_messages_received_total{type="message"} 3.0',
        'omnia_messages_received_total{type="tool_result"} 1.0',
        'omnia_messages_received_total{type="refused"} 1.0',
    ]:
        assert line in text, line


async def test_active_connections_falls_back_when_clients_leave(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        assert facade.connections() == 1
    assert await eventually(lambda: facade.connections() == 0)


@pytest.mark.parametrize(
    ("path", "content_type", "contains"),
    [
        pytest.param("/", "text/html", "/static/app.js", id="page"),
        pytest.param("/static/app.js", "javascript", "WebSocket", id="script"),
        pytest.param("/static/style.css", "text/css", "{", id="style"),
    ],
)
async def test_chat_page_is_served(
    facade: RunningFacade, path: str, content_type: str, contains: str
) -> None:
    async with facade.http() as http:
        response = await http.get(path)
    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert contains in response.text


async def test_plain_http_on_the_websocket_path_asks_for_an_upgrade(
    facade: RunningFacade,
) -> None:
    async with facade.http() as http:
        response = await http.get("/ws")
    assert response.status_code == 426
