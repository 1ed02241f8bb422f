"""The egress policy of tools, tested the way an attacker would try to get around it.

A tool's arguments come from the model, and the model reads text an attacker
may have written; a tool's server, its OpenAPI document or a redirect may be
hostile too. None of them may turn a tool into a pivot: no request to
loopback, link-local (cloud metadata) or, when the registry says so, private
addresses; no redirect away from the configured origin, so secret headers
never leave it; no argument climbing out of its path segment. Every case runs
against real servers on loopback: a bystander that records what reaches it,
and a redirector.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools

import pytest

from omnia import rendering
from omnia.api.v1alpha1 import ToolRegistry, ToolRegistrySpec
from omnia.config import ToolConfig
from omnia.providers.base import ToolCall
from omnia.tools import Toolbox, discover, discovery, egress, http, mcp
from omnia.tools.base import DiscoveryError

from .conftest import LOOPBACK_ALLOWED, http_tool, mcp_source
from .serving import Flood, Visits, endless_mcp_service, mcp_sse_service, recording_service, redirecting_service

SECRET_HEADERS = [
    {"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_T_AUTHORIZATION"},
    {"name": "X-Api-Key", "valueFromEnv": "OMNIA_TOOL_T_X_API_KEY"},
]
SECRETS = {"OMNIA_TOOL_T_AUTHORIZATION": "Bearer s3cret", "OMNIA_TOOL_T_X_API_KEY": "k3y"}
SEGMENT_SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}}


@pytest.fixture
def visits() -> Visits:
    return Visits()


@pytest.fixture
def bystander(visits):
    """A service on loopback that must not be reached (or, when allowed, shows what reached it)."""
    service = recording_service(visits).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def redirector_to():
    started = []

    def start(location, *, status: int = 302):
        service = redirecting_service(location, status=status).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
async def clients():
    made = egress.Clients()
    try:
        yield made
    finally:
        await made.aclose()


async def call(tool: ToolConfig, arguments: dict, *, clients: egress.Clients, env=None):
    handler = discovery.handler_for(tool, env=env or {}, clients=clients)
    try:
        async with asyncio.timeout(10):
            return await handler.call(tool, arguments)
    finally:
        await handler.aclose()


def names_the_policy(text: str) -> bool:
    return "egress policy" in text


# --- The policy itself, pure ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "address", "denied"),
    [
        pytest.param({}, "93.184.215.14", None, id="public-allowed"),
        pytest.param({}, "10.0.0.7", None, id="private-allowed-by-default"),
        pytest.param({}, "fd12::7", None, id="ipv6-ula-allowed-by-default"),
        pytest.param({}, "127.0.0.1", "loopback", id="loopback"),
        pytest.param({}, "0.0.0.0", "loopback", id="unspecified-is-loopback"),
        pytest.param({}, "::", "loopback", id="ipv6-unspecified-is-loopback"),
        pytest.param({}, "::ffff:127.0.0.1", "loopback", id="ipv4-mapped"),
        pytest.param({}, "::127.0.0.1", "loopback", id="ipv4-compatible"),
        pytest.param({}, "64:ff9b::a9fe:a9fe", "link-local", id="nat64-of-metadata"),
        pytest.param({}, "::ffff:169.254.169.254", "link-local", id="ipv4-mapped-metadata"),
        pytest.param({}, "fd00:ec2::254", "link-local", id="ec2-metadata-over-ipv6"),
        pytest.param({"allowPrivate": False}, "172.20.1.1", "private", id="private-denied"),
        pytest.param({"allowPrivate": False}, "100.64.0.1", "private", id="shared-address-space"),
        pytest.param({"allowLoopback": True}, "::1", None, id="loopback-allowed"),
        pytest.param({"allowLoopback": True}, "169.254.169.254", "link-local", id="loopback-allows-no-metadata"),
        pytest.param({"allowedCIDRs": ["169.254.20.10/32"]}, "169.254.20.10", None, id="cidr-opens-one-address"),
        pytest.param({"allowedCIDRs": ["169.254.20.10/32"]}, "169.254.169.254", "link-local", id="cidr-opens-no-more"),
        pytest.param({"allowedCIDRs": ["127.0.0.1/32"]}, "::ffff:127.0.0.1", None, id="cidr-applies-to-mapped-forms"),
    ],
)
def test_which_addresses_the_policy_denies(block, address, denied):
    assert egress.Policy.from_block(block).denial(ipaddress.ip_address(address)) == denied


def test_the_registrys_policy_is_rendered_into_each_network_handler():
    """The runtime gets the policy with each tool: the operator's discovery and the runtime read the same block."""
    registry = ToolRegistry.model_validate({
        "apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "ToolRegistry", "metadata": {"name": "tools"},
        "spec": {"egress": {"allowLoopback": True}, "handlers": [
            {"name": "t", "type": "http", "http": {"url": "http://localhost:8080/x"}},
            {"name": "m", "type": "mcp", "mcp": {"url": "http://localhost:8081/mcp"}},
            {"name": "s", "type": "mcp", "mcp": {"transport": "stdio", "command": "server"}},
            {"name": "c", "type": "client", "client": {}},
        ]},
    })
    rendered = {tool.name: tool.handler.get("egress") for tool in rendering.tool_configs(registry)}
    policy = {"allowLoopback": True, "allowLinkLocal": False, "allowPrivate": True, "allowedCIDRs": []}
    assert rendered == {"t": policy, "m": policy, "s": None, "c": None}


# --- Addresses -------------------------------------------------------------------------------


def denied_targets(port: int) -> list:
    """Every spelling of an internal address an attacker might put in a tool's URL."""
    return [
        pytest.param(f"http://169.254.169.254:{port}/latest/meta-data/", id="cloud-metadata"),
        pytest.param(f"http://127.0.0.1:{port}/", id="loopback"),
        pytest.param(f"http://127.1.2.3:{port}/", id="loopback-range"),
        pytest.param(f"http://[::1]:{port}/", id="ipv6-loopback"),
        pytest.param(f"http://[::ffff:127.0.0.1]:{port}/", id="ipv4-mapped-ipv6"),
        pytest.param(f"http://2130706433:{port}/", id="decimal-ip"),
        pytest.param(f"http://0177.0.0.1:{port}/", id="octal-ip"),  # httpx refuses the URL itself
        pytest.param(f"http://0x7f.0.0.1:{port}/", id="hex-ip"),
        pytest.param(f"http://0.0.0.0:{port}/", id="unspecified-reaches-the-host"),
        pytest.param(f"http://localhost:{port}/", id="name-resolving-to-loopback"),
        pytest.param(f"http://[fe80::1]:{port}/", id="ipv6-link-local"),
    ]


@pytest.fixture
def target_port(bystander) -> int:
    return bystander.port


@pytest.mark.parametrize("template", denied_targets(0))
async def test_internal_addresses_are_denied_by_default(template, bystander, visits, clients):
    """Loopback and link-local are denied however the address is written, and nothing is sent."""
    url = template.replace(":0/", f":{bystander.port}/")
    tool = http_tool("t", url, egress={}, headers=SECRET_HEADERS)
    outcome = await call(tool, {}, clients=clients, env=SECRETS)
    assert outcome.is_error and (names_the_policy(outcome.content) or "invalid URL" in outcome.content), outcome.content
    assert visits.requests == []


async def test_allow_loopback_lets_loopback_through_but_not_link_local(bystander, visits, clients):
    reached = await call(http_tool("t", f"http://localhost:{bystander.port}/x", egress=LOOPBACK_ALLOWED), {},
                         clients=clients)
    assert (reached.content, reached.is_error) == ("reached", False)
    metadata = await call(http_tool("t", "http://169.254.169.254:9/", egress=LOOPBACK_ALLOWED), {}, clients=clients)
    assert metadata.is_error and "link-local" in metadata.content and names_the_policy(metadata.content)


async def test_allowed_cidrs_open_exactly_those_addresses(bystander, visits, clients):
    policy = {"allowedCIDRs": ["127.0.0.1/32"]}
    reached = await call(http_tool("t", f"http://127.0.0.1:{bystander.port}/", egress=policy), {}, clients=clients)
    assert reached.content == "reached"
    other = await call(http_tool("t", f"http://127.0.0.2:{bystander.port}/", egress=policy), {}, clients=clients)
    assert other.is_error and names_the_policy(other.content)


async def test_private_ranges_are_allowed_unless_the_registry_denies_them(clients):
    """In-cluster services live in private ranges, so they are allowed by default; ``allowPrivate: false`` denies them."""
    denied = await call(http_tool("t", "http://10.255.255.1:9/", egress={"allowPrivate": False}), {}, clients=clients)
    assert denied.is_error and "private" in denied.content and names_the_policy(denied.content)


async def test_each_connection_is_checked_with_the_address_it_uses(bystander, visits):
    """DNS rebinding: a name that answers a harmless address, then an internal one.

    The name is resolved once per connection, every address is checked, and
    the connection goes to the checked address, never to the name again. The
    first connection goes through (to 127.0.0.1, allowed here); the second
    resolution answers the metadata address, and that connection is denied.
    """
    answers = itertools.chain([["127.0.0.1"]], itertools.repeat(["169.254.169.254"]))

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "tools.rebinding.test"
        return next(answers)

    rebinding = egress.Clients(resolve=resolve)
    try:
        tool = http_tool("t", f"http://tools.rebinding.test:{bystander.port}/x", egress={"allowedCIDRs": ["127.0.0.1/32"]})
        first = await call(tool, {}, clients=rebinding)
        assert first.content == "reached"
        assert visits.requests[0]["headers"]["host"] == f"tools.rebinding.test:{bystander.port}"
        await rebinding.aclose()
        rebinding = egress.Clients(resolve=resolve)
        second = await call(tool, {}, clients=rebinding)
        assert second.is_error and names_the_policy(second.content)
        assert len(visits.requests) == 1
    finally:
        await rebinding.aclose()


async def test_a_name_with_any_internal_address_is_denied(bystander, visits):
    async def resolve(host: str, port: int) -> list[str]:
        return ["203.0.113.9", "127.0.0.1"]

    both = egress.Clients(resolve=resolve)
    try:
        outcome = await call(http_tool("t", f"http://mixed.test:{bystander.port}/", egress={}), {}, clients=both)
    finally:
        await both.aclose()
    assert outcome.is_error and "127.0.0.1" in outcome.content and names_the_policy(outcome.content)


# --- Redirects and secrets -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_redirect_to_another_origin_is_not_followed_and_secrets_stay_home(
    status, host, bystander, visits, redirector_to, clients
):
    """The bystander is another origin (port, or host name): it must see nothing, least of all the secrets."""
    redirector = redirector_to(lambda path: f"http://{host}:{bystander.port}/steal", status=status)
    tool = http_tool("t", redirector.url + "/start", egress=LOOPBACK_ALLOWED, headers=SECRET_HEADERS)
    outcome = await call(tool, {}, clients=clients, env=SECRETS)
    assert outcome.is_error and names_the_policy(outcome.content), outcome.content
    assert "redirect" in outcome.content
    assert visits.requests == []


async def test_a_redirect_within_the_origin_is_followed_with_the_secrets(redirector_to, clients):
    redirector = redirector_to(lambda path: "/new" if path == "/old" else None)
    tool = http_tool("t", redirector.url + "/old", egress=LOOPBACK_ALLOWED, headers=SECRET_HEADERS)
    outcome = await call(tool, {}, clients=clients, env=SECRETS)
    assert (outcome.content, outcome.is_error) == ("arrived with k3y", False)


async def test_endless_redirects_within_the_origin_are_given_up(redirector_to, clients):
    redirector = redirector_to(lambda path: path + "x")
    outcome = await call(http_tool("t", redirector.url + "/", egress=LOOPBACK_ALLOWED), {}, clients=clients)
    assert outcome.is_error and "redirects" in outcome.content


async def test_a_redirect_to_an_internal_address_is_denied(redirector_to, clients):
    redirector = redirector_to(lambda path: "http://169.254.169.254/latest/meta-data/")
    outcome = await call(http_tool("t", redirector.url + "/", egress=LOOPBACK_ALLOWED), {}, clients=clients)
    assert outcome.is_error and names_the_policy(outcome.content)


# --- Arguments stay in their path segment ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("..", id="dot-dot"),
        pytest.param(".", id="dot"),
        pytest.param("", id="empty"),
        pytest.param("../../admin", id="climbing"),
        pytest.param("%2e%2e", id="pre-encoded-dot-dot"),
        pytest.param("%2E%2E%2Fadmin", id="pre-encoded-climb"),
        pytest.param("a/b", id="slash"),
        pytest.param("a%2Fb", id="pre-encoded-slash"),
        pytest.param("a\\..\\b", id="backslashes"),
        pytest.param("x?admin=1", id="query-injection"),
        pytest.param("x#frag", id="fragment-injection"),
        pytest.param("x/../../admin?y", id="all-at-once"),
    ],
)
async def test_a_path_argument_stays_in_its_segment(value, bystander, visits, clients):
    """Either the call is refused, or the server gets one segment holding the value, and nothing else changes."""
    tool = http_tool(
        "t", bystander.url + "/api/orders/{{ id }}/details", egress=LOOPBACK_ALLOWED, schema=SEGMENT_SCHEMA
    )
    outcome = await call(tool, {"id": value}, clients=clients)
    if outcome.is_error:
        assert "not called" in outcome.content and visits.requests == []
        return
    [seen] = visits.requests
    prefix, suffix = "/api/orders/", "/details"
    assert seen["raw_path"].startswith(prefix) and seen["raw_path"].endswith(suffix), seen["raw_path"]
    segment = seen["raw_path"][len(prefix):-len(suffix)]
    assert "/" not in segment and segment not in ("", ".", "..") and seen["query"] == ""


async def test_openapi_path_parameters_stay_in_their_segment(bystander, visits, clients):
    source = ToolConfig(name="shop", type="openapi", handler={"document": "{}", "egress": LOOPBACK_ALLOWED})
    tool = ToolConfig(
        name="getOrder", type="openapi",
        handler={"source": "shop", "operationId": "getOrder", "method": "GET", "baseURL": bystander.url + "/api",
                 "path": "/orders/{id}/details", "parameters": [{"name": "id", "in": "path"}], "body": False},
    )
    handler = discovery.handler_for(source, env={}, clients=clients)
    for value in ("..", "."):
        outcome = await handler.call(tool, {"id": value})
        assert outcome.is_error and "not called" in outcome.content
    assert visits.requests == []
    assert (await handler.call(tool, {"id": "../../admin"})).content == "reached"
    assert [seen["raw_path"] for seen in visits.requests] == ["/api/orders/..%2F..%2Fadmin/details"]


def test_a_placeholder_in_the_host_is_refused_by_the_api():
    """Arguments fill path segments and query values only: the origin, where secrets go, is fixed."""
    with pytest.raises(ValueError, match="placeholder"):
        ToolRegistrySpec.model_validate(
            {"handlers": [{"name": "t", "type": "http", "http": {"url": "https://{{ host }}/x"}}]}
        )


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://{{ host }}/x", id="host"),
        pytest.param("https://api.{{ region }}.example.com/x", id="part-of-host"),
        pytest.param("{{ base }}/x", id="whole-origin"),
        pytest.param("http{{ s }}://api.example.com/x", id="scheme"),
    ],
)
def test_the_runtime_refuses_a_url_whose_origin_an_argument_would_choose(url):
    """The same rule at call time, whatever config the runtime was given."""
    with pytest.raises(http.ArgumentError):
        http.build_request(method="GET", url=url, arguments={"host": "h", "region": "r", "base": "b", "s": "s"},
                           headers={})


# --- OpenAPI ---------------------------------------------------------------------------------


async def test_an_openapi_documents_server_cannot_point_calls_at_metadata(bystander, clients):
    """The document names the server; a hostile document naming 169.254.169.254 gets nothing, no secrets either."""
    source = ToolConfig(name="shop", type="openapi", handler={
        "document": '{"openapi": "3.0.3", "servers": [{"url": "http://169.254.169.254/"}], '
                    '"paths": {"/x": {"get": {"operationId": "getX", "responses": {}}}}}',
        "egress": LOOPBACK_ALLOWED, "headers": SECRET_HEADERS,
    })
    handler = discovery.handler_for(source, env=SECRETS, clients=clients)
    [tool] = (await handler.discover()).tools
    outcome = await handler.call(tool, {})
    assert outcome.is_error and names_the_policy(outcome.content)


async def test_an_openapi_spec_url_on_loopback_is_denied_by_default(bystander, visits, clients):
    source = ToolConfig(name="shop", type="openapi", handler={"specURL": bystander.url + "/openapi.json", "egress": {}})
    handler = discovery.handler_for(source, env={}, clients=clients)
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "EgressDenied" and names_the_policy(caught.value.message)
    assert visits.requests == []


async def test_an_openapi_spec_url_redirecting_elsewhere_keeps_its_secrets(bystander, visits, redirector_to, clients):
    redirector = redirector_to(lambda path: f"http://localhost:{bystander.port}/openapi.json")
    source = ToolConfig(name="shop", type="openapi", handler={
        "specURL": redirector.url + "/openapi.json", "egress": LOOPBACK_ALLOWED, "headers": SECRET_HEADERS,
    })
    handler = discovery.handler_for(source, env=SECRETS, clients=clients)
    with pytest.raises(DiscoveryError) as caught:
        await handler.discover()
    assert caught.value.reason == "EgressDenied"
    assert visits.requests == []


# --- MCP over HTTP ---------------------------------------------------------------------------


@pytest.fixture(params=["streamable-http", "sse"])
def mcp_url(request):
    if request.param == "sse":
        service = mcp_sse_service().start()
        request.addfinalizer(service.stop)
        return request.param, service.url + "/sse"
    return request.param, request.getfixturevalue("mcp_server").url + "/mcp"


async def test_an_mcp_server_on_loopback_is_denied_by_default(mcp_url):
    transport, url = mcp_url
    handler = mcp.Handler(mcp_source("calc", url=url, transport=transport, egress={}), env={}, connect_timeout=5)
    try:
        with pytest.raises(DiscoveryError) as caught:
            await handler.discover()
        assert caught.value.reason == "EgressDenied" and names_the_policy(caught.value.message)
        outcome = await handler.call(ToolConfig(name="add", type="mcp", handler={"source": "calc", "tool": "add"}), {})
        assert outcome.is_error and names_the_policy(outcome.content)
    finally:
        await handler.aclose()


async def test_an_mcp_server_on_loopback_is_reached_when_allowed(mcp_url):
    transport, url = mcp_url
    handler = mcp.Handler(mcp_source("calc", url=url, transport=transport, egress=LOOPBACK_ALLOWED), env={})
    try:
        assert (await handler.discover()).tools
    finally:
        await handler.aclose()


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_an_mcp_redirect_to_another_origin_keeps_the_secrets(transport, bystander, visits, redirector_to):
    redirector = redirector_to(lambda path: f"http://localhost:{bystander.port}{path}", status=307)
    source = mcp_source("calc", url=redirector.url + "/mcp", transport=transport, egress=LOOPBACK_ALLOWED,
                        headers=SECRET_HEADERS)
    handler = mcp.Handler(source, env=SECRETS, connect_timeout=5)
    try:
        with pytest.raises(DiscoveryError):
            await handler.discover()
    finally:
        await handler.aclose()
    assert visits.requests == []


@pytest.mark.parametrize("event_stream", [False, True], ids=["json-body", "one-event"])
async def test_an_mcp_answer_that_never_ends_is_cut_at_the_message_bound(event_stream):
    """A JSON answer that never ended was buffered by the SDK until the
    handshake timed out (8 GB in 30 s here): in the runtime, and in the
    operator, which discovers every namespace's tools. Past
    ``MAX_MCP_MESSAGE_BYTES`` the read fails. (An endless event did not grow
    the SDK's buffer here; the bound holds for it too.)"""
    flood = Flood()
    service = endless_mcp_service(flood, event_stream=event_stream).start()
    handler = mcp.Handler(mcp_source("calc", url=service.url + "/mcp"), env={}, connect_timeout=30)
    try:
        with pytest.raises(DiscoveryError):
            await handler.discover()
    finally:
        await handler.aclose()
        service.stop()
    assert flood.sent < 4 * egress.MAX_MCP_MESSAGE_BYTES, f"{flood.sent} bytes were taken"


# --- Where the policy comes from: the ToolRegistry, for the runtime and the operator alike ---


async def test_the_operator_discovery_applies_the_registrys_policy(bystander, visits):
    handler = {"name": "t", "type": "http", "http": {"method": "GET", "url": bystander.url + "/x"}}
    denied = await discover(ToolRegistrySpec.model_validate({"handlers": [handler]}), secrets={}, config_maps={})
    assert [(r.status, r.reason) for r in denied.handlers] == [("False", "EgressDenied")]
    assert names_the_policy(denied.handlers[0].message) and visits.requests == []
    allowed = await discover(
        ToolRegistrySpec.model_validate({"handlers": [handler], "egress": LOOPBACK_ALLOWED}), secrets={}, config_maps={}
    )
    assert [(r.status, r.reason) for r in allowed.handlers] == [("True", "Reachable")]


async def test_the_runtime_toolbox_applies_each_tools_policy(bystander, visits):
    toolbox = Toolbox([http_tool("t", bystander.url + "/x", egress={})], env={})
    try:
        outcome = await toolbox.execute(toolbox.tools()[0], ToolCall(id="c", name="t", arguments={}))
    finally:
        await toolbox.aclose()
    assert outcome.is_error and names_the_policy(outcome.content)
    assert visits.requests == []
