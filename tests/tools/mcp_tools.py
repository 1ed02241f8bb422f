"""A small MCP server, built with the official SDK, for the tool tests.

Served over streamable HTTP by ``serving.McpService`` (in a thread of the
test process), or over stdio when run as a script (a subprocess of the
runtime, as in a pod).
"""

from __future__ import annotations

import asyncio
import os

from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp.types import INVALID_PARAMS, ToolAnnotations


def build() -> MCPServer:
    server = MCPServer("test-tools", log_level="WARNING")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """Repeat the text in capitals."""
        return text.upper()

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Wait, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"

    @server.tool()
    def explode() -> str:
        """Always fails."""
        raise ValueError("kaboom")

    @server.tool()
    def refuse() -> str:
        """Refuses every call with a JSON-RPC error, as some servers do for bad parameters."""
        raise MCPError(INVALID_PARAMS, "no such record")

    @server.tool()
    def big(size: int) -> str:
        """A long text of ``size`` characters."""
        return "y" * size

    @server.tool()
    def secret_env() -> str:
        """The value of TOOL_TOKEN in the server's environment."""
        return os.environ.get("TOOL_TOKEN", "(unset)")

    return server


if __name__ == "__main__":
    build().run("stdio")
