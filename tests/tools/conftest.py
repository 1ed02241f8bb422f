from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from omnia.config import ToolConfig

from .serving import HttpState, http_service, mcp_service

MCP_SCRIPT = Path(__file__).with_name("mcp_tools.py")


@pytest.fixture
def http_state() -> HttpState:
    return HttpState()


@pytest.fixture
def http_server(http_state):
    service = http_service(http_state).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def mcp_server():
    service = mcp_service().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def client():
    async with httpx.AsyncClient(follow_redirects=True) as client:
        yield client


# The test servers listen on loopback, which a ToolRegistry must allow explicitly.
LOOPBACK_ALLOWED = {"allowLoopback": True}


def http_tool(
    name: str, url: str, *, method: str = "GET", schema: dict | None = None, egress: dict = LOOPBACK_ALLOWED, **settings
) -> ToolConfig:
    return ToolConfig(
        name=name,
        type="http",
        parameters=schema or {"type": "object", "properties": {}},
        handler={"method": method, "url": url, "headers": settings.pop("headers", []), "egress": egress},
        **settings,
    )


def mcp_source(name: str = "calc", *, url: str | None = None, **block) -> ToolConfig:
    """A rendered mcp entry: streamable HTTP at ``url``, or the test server over stdio."""
    if url is not None:
        handler = {"transport": "streamable-http", "url": url, "egress": LOOPBACK_ALLOWED, **block}
    else:
        handler = {"transport": "stdio", "command": sys.executable, "args": [str(MCP_SCRIPT)], **block}
    settings = {k: handler.pop(k) for k in ("timeout_seconds", "retries") if k in handler}
    return ToolConfig(name=name, type="mcp", handler=handler, **settings)
