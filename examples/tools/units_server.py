"""A small MCP server: unit conversions, served over stdio.

The agent's runtime starts it (``command: python``, ``args: [units_server.py]``
in agent.yaml) and lists its tools at start-up. Run it alone to check it
starts: ``python units_server.py`` waits for MCP messages on stdin.
"""

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("units", log_level="WARNING")
pure = ToolAnnotations(read_only_hint=True)


@server.tool(annotations=pure)
def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return f"{celsius:g} °C is {celsius * 9 / 5 + 32:g} °F"


@server.tool(annotations=pure)
def kilometres_to_miles(kilometres: float) -> str:
    """Convert a distance from kilometres to miles."""
    return f"{kilometres:g} km is {kilometres / 1.609344:.4g} mi"


if __name__ == "__main__":
    server.run("stdio")
