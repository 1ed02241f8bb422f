"""``http`` tools: requests built from URL templates, answers sorted for the model and the executor."""

from __future__ import annotations

import pytest

from omnia.tools import http
from omnia.tools.base import CallFailed, DiscoveryError

from .conftest import http_tool
from .serving import free_port


@pytest.mark.parametrize(
    ("method", "url", "arguments", "expected"),
    [
        pytest.param(
            "GET", "https://api.test/weather/{{ city }}", {"city": "São Paulo", "units": "C"},
            http.Request("GET", "https://api.test/weather/S%C3%A3o%20Paulo", {}, query=(("units", "C"),)),
            id="get-fills-the-path-and-queries-the-rest",
        ),
        pytest.param(
            "POST", "https://api.test/orders/{{id}}/items", {"id": "a/b", "item": "tea", "qty": 2},
            http.Request("POST", "https://api.test/orders/a%2Fb/items", {}, body={"item": "tea", "qty": 2}),
            id="post-sends-the-rest-as-json",
        ),
        pytest.param(
            "GET", "https://api.test/search", {"tags": ["a", "b"], "exact": True, "page": None, "filter": {"x": 1}},
            http.Request(
                "GET", "https://api.test/search", {},
                query=(("tags", "a"), ("tags", "b"), ("exact", "true"), ("filter", '{"x":1}')),
            ),
            id="lists-repeat-booleans-lowercase-nulls-dropped-objects-as-json",
        ),
        pytest.param(
            "DELETE", "https://api.test/items/{{ id }}", {"id": 7},
            http.Request("DELETE", "https://api.test/items/7", {}),
            id="delete-has-no-body",
        ),
        pytest.param(
            "POST", "https://api.test/ping", {},
            http.Request("POST", "https://api.test/ping", {}, body={}),
            id="post-without-arguments-sends-an-empty-object",
        ),
    ],
)
def test_build_request(method, url, arguments, expected):
    assert http.build_request(method=method, url=url, arguments=arguments, headers={}) == expected


def test_a_placeholder_without_its_argument_is_an_argument_error():
    with pytest.raises(http.ArgumentError, match="'city'"):
        http.build_request(method="GET", url="https://api.test/{{ city }}", arguments={}, headers={})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://api.test/x/{{ id }}", "https://api.test:443", id="https-default-port"),
        pytest.param("http://127.0.0.1:8080/{{a}}?q={{b}}", "http://127.0.0.1:8080", id="explicit-port"),
    ],
)
def test_the_endpoint_of_a_url_is_its_origin(url, expected):
    assert http.origin(url) == expected


async def test_answers_of_the_server_become_results(http_server, client):
    handler = http.Handler(http_tool("weather", http_server.url + "/weather/{{ city }}"), env={}, client=client)
    outcome = await handler.call(handler.tool, {"city": "Lisbon", "units": "F"})
    assert (outcome.content, outcome.is_error) == ('{"city":"Lisbon","temp":21,"units":"F"}', False)


async def test_a_client_error_is_an_answer_the_model_can_correct(http_server, client):
    handler = http.Handler(http_tool("missing", http_server.url + "/missing"), env={}, client=client)
    outcome = await handler.call(handler.tool, {})
    assert (outcome.content, outcome.is_error) == ("HTTP 404: no such thing", True)


async def test_a_server_error_is_no_answer(http_server, http_state, client):
    http_state.failures = 1
    handler = http.Handler(http_tool("flaky", http_server.url + "/flaky"), env={}, client=client)
    with pytest.raises(CallFailed) as caught:
        await handler.call(handler.tool, {})
    assert caught.value.reached and "HTTP 500" in caught.value.message


async def test_a_refused_connection_never_reached_the_server(client):
    handler = http.Handler(http_tool("gone", f"http://127.0.0.1:{free_port()}/x", method="POST"), env={}, client=client)
    with pytest.raises(CallFailed) as caught:
        await handler.call(handler.tool, {})
    assert not caught.value.reached and "cannot connect" in caught.value.message


async def test_secret_headers_are_read_from_the_environment(http_server, client):
    tool = http_tool(
        "whoami", http_server.url + "/whoami",
        headers=[{"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_WHOAMI_AUTHORIZATION"}],
    )
    handler = http.Handler(tool, env={"OMNIA_TOOL_WHOAMI_AUTHORIZATION": "Bearer s3cret"}, client=client)
    assert (await handler.call(tool, {})).content == "Bearer s3cret"


async def test_an_unset_secret_variable_fails_the_call_and_names_the_variable(http_server, http_state, client):
    tool = http_tool(
        "whoami", http_server.url + "/whoami",
        headers=[{"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_WHOAMI_AUTHORIZATION"}],
    )
    handler = http.Handler(tool, env={}, client=client)
    outcome = await handler.call(tool, {})
    assert outcome.is_error and "OMNIA_TOOL_WHOAMI_AUTHORIZATION is not set" in outcome.content
    assert http_state.requests == []


async def test_a_huge_answer_is_cut_while_reading(http_server, client):
    handler = http.Handler(http_tool("big", http_server.url + "/big"), env={}, client=client)
    outcome = await handler.call(handler.tool, {"size": http.MAX_RESPONSE_BYTES + 10})
    assert outcome.content.endswith(f"[response cut at {http.MAX_RESPONSE_BYTES} bytes]")


async def test_probe_accepts_any_http_answer_and_reports_a_dead_server(http_server, client):
    assert await http.probe(client, http_server.url + "/no/such/path/{{ id }}", headers={}) == 404
    with pytest.raises(DiscoveryError) as caught:
        await http.probe(client, f"http://127.0.0.1:{free_port()}/", headers={})
    assert caught.value.reason == "Unreachable"
