"""OpenAPI 3 documents as tools: operations, self-contained schemas, calls on a real service."""

from __future__ import annotations

import copy

import pytest
import yaml

from omnia.config import ToolConfig
from omnia.tools import openapi
from omnia.tools.base import DiscoveryError

from .serving import OPENAPI_DOCUMENT, free_port


def source(**block) -> ToolConfig:
    return ToolConfig(name="shop", type="openapi", timeout_seconds=5, handler=block)


def found(document=OPENAPI_DOCUMENT, **kwargs):
    return openapi.tool_configs(copy.deepcopy(document), source=source(), base="https://api.test/v1", **kwargs)


def test_each_operation_becomes_a_tool_named_by_its_operation_id():
    result = found()
    assert [tool.name for tool in result.tools] == ["getWeather", "createOrder", "getFlaky"]
    weather = result.tools[0]
    assert weather.description == "Current weather of a city"
    assert weather.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "enum": ["C", "F"]},
            "X-Trace": {"type": "string"},
        },
        "required": ["city"],
    }
    assert weather.timeout_seconds == 5 and weather.handler["source"] == "shop"


def test_a_json_body_is_the_body_argument_with_references_inlined():
    """Models get no components section: every $ref is replaced, a recursive one by a free value."""
    order = found().tools[1]
    body = order.parameters["properties"]["body"]
    assert order.parameters["required"] == ["body"]
    assert body["properties"]["quantity"] == {"type": "integer", "minimum": 1}
    assert body["properties"]["gift"] == {"description": "recursive value (same shape as Order)"}
    assert "$ref" not in str(order.parameters)


def _doubling_schemas(levels: int) -> dict:
    """``levels`` schemas, each with two properties of the next: a few hundred
    bytes whose references, inlined, make 2 ** ``levels`` copies of the last."""
    schemas = {
        f"S{i}": {
            "type": "object",
            "properties": {"a": {"$ref": f"#/components/schemas/S{i + 1}"}, "b": {"$ref": f"#/components/schemas/S{i + 1}"}},
        }
        for i in range(levels)
    }
    schemas[f"S{levels}"] = {"type": "string"}
    return schemas


def test_a_schema_whose_references_expand_without_measure_is_skipped_with_the_reason():
    """References without a cycle can still double at every level: a document
    of forty schemas would inline to a trillion nodes (the discovery hung,
    in the operator and the runtime alike, and grew until killed)."""
    document = copy.deepcopy(OPENAPI_DOCUMENT)
    document.setdefault("components", {}).setdefault("schemas", {}).update(_doubling_schemas(40))
    document["paths"]["/bomb"] = {
        "post": {
            "operationId": "bomb",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}},
        }
    }
    result = found(document)
    assert "bomb" not in [tool.name for tool in result.tools]
    assert any(
        reason.startswith("bomb: ") and "more than 10000 nodes" in reason for reason in result.skipped
    ), result.skipped
    assert [tool.name for tool in result.tools] == ["getWeather", "createOrder", "getFlaky"]


def test_the_schemas_of_a_whole_document_are_bounded_too():
    """Each of these operations stays within its own bound, all of them
    together do not: those past the document's bound are skipped."""
    document = copy.deepcopy(OPENAPI_DOCUMENT)
    document.setdefault("components", {}).setdefault("schemas", {}).update(_doubling_schemas(10))
    for index in range(60):
        document["paths"][f"/wide/{index}"] = {
            "post": {
                "operationId": f"wide{index}",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}},
            }
        }
    result = found(document)
    kept = [tool.name for tool in result.tools if tool.name.startswith("wide")]
    assert 0 < len(kept) < 60
    assert all("more than 200000 nodes in all" in reason for reason in result.skipped if reason.startswith("wide"))
    assert len([r for r in result.skipped if r.startswith("wide")]) == 60 - len(kept)


def test_a_schema_that_expands_within_measure_is_inlined():
    document = copy.deepcopy(OPENAPI_DOCUMENT)
    document.setdefault("components", {}).setdefault("schemas", {}).update(_doubling_schemas(6))
    document["paths"]["/wide"] = {
        "post": {
            "operationId": "wide",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}},
        }
    }
    wide = next(tool for tool in found(document).tools if tool.name == "wide")
    assert str(wide.parameters).count("'string'") == 2**6


def test_operations_that_cannot_be_called_are_skipped_with_the_reason():
    assert found().skipped == ("upload: the request body is not JSON (content types: multipart/form-data)",)


def test_the_operations_filter_keeps_those_named_and_reports_unknown_ones():
    result = found(only=("createOrder", "deleteEverything"))
    assert [tool.name for tool in result.tools] == ["createOrder"]
    assert result.missing == ("deleteEverything",)


def test_an_operation_without_an_id_is_named_after_its_method_and_path():
    document = {"openapi": "3.1.0", "paths": {"/a/{b}": {"get": {"parameters": [{"name": "b", "in": "path"}]}}}}
    (tool,) = found(document).tools
    assert tool.name == "get__a__b_"
    assert tool.parameters["required"] == ["b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"swagger": "2.0", "paths": {}}', "found swagger 2.0", id="swagger-2"),
        pytest.param("openapi: 3.0.0\ninfo: {}\n", "no paths", id="no-paths"),
        pytest.param("[1, 2", "neither JSON nor YAML", id="garbage"),
        pytest.param('"just a string"', "not an object", id="not-an-object"),
    ],
)
def test_documents_that_are_not_openapi_3_are_refused(text, message):
    with pytest.raises(DiscoveryError) as caught:
        openapi.parse_document(text)
    assert caught.value.reason == "InvalidDocument" and message in caught.value.message


def test_a_yaml_document_whose_aliases_expand_without_measure_is_refused():
    """YAML aliases share a node, so nine levels of ten aliases each parse
    into a few kilobytes, yet anything that walks the result (here the
    summary, turned into a description) walks a billion nodes."""
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)
    ]
    text = (
        "openapi: 3.0.3\ninfo: {title: bomb, version: '1'}\nx-junk:\n"
        + "".join(f"  {line}\n" for line in levels)
        + "paths:\n  /bomb:\n    get:\n      operationId: bomb\n      summary: *l8\n"
    )
    assert len(text) < 2000
    with pytest.raises(DiscoveryError) as caught:
        openapi.parse_document(text)
    assert caught.value.reason == "InvalidDocument"
    assert "aliases" in caught.value.message


def test_yaml_documents_are_read_too():
    assert openapi.parse_document(yaml.safe_dump(OPENAPI_DOCUMENT))["paths"].keys() == OPENAPI_DOCUMENT["paths"].keys()


@pytest.mark.parametrize(
    ("servers", "configured", "spec_url", "expected"),
    [
        pytest.param(None, "https://override.test", "https://docs.test/openapi.json", "https://override.test",
                     id="baseURL-wins"),
        pytest.param([{"url": "https://{region}.api.test/v1", "variables": {"region": {"default": "eu"}}}],
                     None, None, "https://eu.api.test/v1", id="server-variables"),
        pytest.param([{"url": "/api"}], None, "https://docs.test/spec/openapi.json", "https://docs.test/api",
                     id="relative-to-the-document"),
        pytest.param(None, None, "https://docs.test/openapi.json", "https://docs.test/", id="no-servers"),
    ],
)
def test_the_base_url(servers, configured, spec_url, expected):
    document = {"openapi": "3.0.0", "paths": {}, **({"servers": servers} if servers else {})}
    assert openapi.base_url(document, configured=configured, spec_url=spec_url) == expected


def test_a_relative_server_without_a_document_url_needs_base_url():
    with pytest.raises(DiscoveryError) as caught:
        openapi.base_url({"servers": [{"url": "/api"}]}, configured=None, spec_url=None)
    assert caught.value.reason == "NoServerURL"


def test_requests_put_each_argument_in_its_place():
    weather = found().tools[0]
    request = openapi.build_request(weather, {"city": "New York", "units": "F", "X-Trace": "t-1"}, headers={"A": "b"})
    assert request == openapi.http.Request(
        "GET", "https://api.test/v1/weather/New%20York", {"A": "b", "X-Trace": "t-1"}, query=(("units", "F"),)
    )


async def test_operations_are_read_from_the_spec_url_and_called_on_the_service(http_server, http_state, client):
    handler = openapi.Handler(source(specURL=http_server.url + "/openapi.json"), env={}, client=client)
    result = await handler.discover()
    tools = {tool.name: tool for tool in result.tools}
    assert tools["getWeather"].handler["baseURL"] == http_server.url + "/"
    outcome = await handler.call(tools["createOrder"], {"body": {"item": "tea", "quantity": 2}})
    assert not outcome.is_error and '"id":1' in outcome.content
    assert http_state.requests[-1]["body"] == '{"item":"tea","quantity":2}'
    weather = await handler.call(tools["getWeather"], {"city": "Oslo"})
    assert weather.content == '{"city":"Oslo","temp":21,"units":"C"}'
    assert handler.idempotent(tools["getWeather"]) and not handler.idempotent(tools["createOrder"])


async def test_a_document_carried_in_the_config_needs_no_fetch(http_server, client):
    """A configMapRef document is rendered into the config: the runtime cannot read ConfigMaps."""
    text = yaml.safe_dump(OPENAPI_DOCUMENT)
    handler = openapi.Handler(source(document=text, baseURL=http_server.url), env={}, client=client)
    tools = {tool.name: tool for tool in (await handler.discover()).tools}
    assert (await handler.call(tools["getWeather"], {"city": "Rome"})).content.startswith('{"city":"Rome"')


async def test_an_unreachable_document_is_reported(client):
    handler = openapi.Handler(source(specURL=f"http://127.0.0.1:{free_port()}/openapi.json"), env={}, client=client)
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "Unreachable"


async def test_a_document_that_never_ends_is_refused_at_the_size_bound(http_server, http_state, client):
    """The whole body was read before its size was checked, so a server
    streaming without end grew the runtime (and the operator, which discovers
    every namespace's tools) until it was killed."""
    handler = openapi.Handler(source(specURL=http_server.url + "/endless.json"), env={}, client=client)
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "InvalidDocument"
    assert caught.value.message == f"the document is larger than {openapi.MAX_DOCUMENT_BYTES} bytes"
    assert http_state.endless_sent < 4 * openapi.MAX_DOCUMENT_BYTES


async def test_a_missing_document_is_reported(http_server, client):
    handler = openapi.Handler(source(specURL=http_server.url + "/nothing.json"), env={}, client=client)
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert (caught.value.reason, caught.value.message.endswith("HTTP 404")) == ("DocumentNotFound", True)
