"""The agent as an MCP server: ``/mcp`` over streamable HTTP, with one tool, ``ask``.

Assistants and IDEs that call MCP tools can ask the agent a question:
``ask(message, session?)`` runs one turn through ``turns`` and answers with the
reply as text, plus ``{"reply", "session"}`` as structured content so that the
next call can continue the session. While the turn runs, each chunk of the
reply is sent as a progress notification (message = the chunk) to a caller
that asked for progress, which is how an MCP client sees the text stream.

Built on the official SDK's server (``MCPServer``) in stateless mode: every
HTTP request stands alone, so any replica serves any call, like ``/ws``. The
SDK's own auth is not used: each request is checked by the facade's
authenticator before it reaches the SDK (401 with ``WWW-Authenticate:
Bearer``), and counted against the per-connection message rate (429).

A turn's failures (budget spent, provider down, unknown session) are tool
errors (``is_error``) whose text holds Omnia's error code and message
(``SESSION_NOT_FOUND: ...``). The caller
cannot run client-side tools: the agent's model is told so through an error
result.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from omnia.facade import bodies, turns
from omnia.facade.profiles import AgentProfile
from omnia.protocol.errors import ErrorCode

PATH = "/mcp"
_STATE_KEY = "omnia_principal"
_STATUS = {ErrorCode.UNAUTHORIZED: 401, ErrorCode.RATE_LIMITED: 429}
# JSON-RPC's "server error" range; the HTTP status says which.
_JSONRPC_REFUSED = -32001


class McpEndpoint:
    """The ``/mcp`` route and the SDK session manager behind it.

    ``running`` must be entered (the facade's lifespan does) before requests
    are served: the SDK runs each request's server in its task group.
    """

    def __init__(self, *, turns_: turns.Turns, profile: AgentProfile) -> None:
        self.turns = turns_
        self.profile = profile
        self.server = MCPServer(
            name=profile.name,
            description=profile.description or None,
            version=profile.version,
            instructions=f"Call the tool ask to talk to the agent {profile.name}.",
        )
        self.server.add_tool(
            self._ask,
            name="ask",
            description=_ask_description(profile),
        )
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            max_request_body_size=bodies.body_limit(turns_.config.max_message_bytes),
            # Requests carry the facade's credentials, checked before the SDK
            # sees them; the Host of a pod is its Service's name, not loopback.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    def routes(self) -> list[Route]:
        # An instance, not a bound method: Starlette hands it the raw ASGI call.
        return [Route(PATH, self, methods=["GET", "POST", "DELETE"])]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            principal = await self.turns.authenticate(headers)
            self.turns.admit(scope.get("client"))
        except turns.Refused as exc:
            status = _STATUS.get(exc.code, 400)
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            error = {"code": _JSONRPC_REFUSED, "message": f"{exc.code}: {exc.message}"}
            body = {"jsonrpc": "2.0", "id": None, "error": error}
            await JSONResponse(body, status_code=status, headers=extra)(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE_KEY] = principal
        await self.server.session_manager.handle_request(scope, receive, send)

    async def _ask(
        self,
        message: Annotated[str, Field(description="What to say to the agent.")],
        ctx: Context,
        session: Annotated[
            str | None,
            Field(description="The session to continue (from an earlier answer); omitted starts a new one."),
        ] = None,
    ) -> CallToolResult:
        request = ctx.request_context.request
        principal = request.scope["state"][_STATE_KEY]
        try:
            conversation = await self.turns.open(principal=principal, headers=request.headers, session_id=session or "")
        except turns.Refused as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None
        async with conversation:
            try:
                await conversation.send(message)
            except turns.Refused as exc:
                raise ToolError(f"{exc.code}: {exc.message}") from None
            text: list[str] = []
            async for event in conversation.events():
                if isinstance(event, turns.Chunk):
                    text.append(event.text)
                    await ctx.report_progress(len(text), None, event.text)
                elif isinstance(event, turns.ToolCall) and event.awaits_result:
                    await conversation.tool_result(
                        event.id, f"the MCP client cannot run the tool {event.name!r}", is_error=True
                    )
                elif isinstance(event, turns.Failed):
                    raise ToolError(f"{event.code}: {event.message}")
            reply = "".join(text)
        return CallToolResult(
            content=[TextContent(type="text", text=reply)],
            structured_content={"reply": reply, "session": conversation.session_id},
        )


def _ask_description(profile: AgentProfile) -> str:
    about = f" {profile.description}" if profile.description else ""
    return (
        f"Ask the agent {profile.name} and get its reply.{about} "
        "Pass the session from an earlier answer to continue that conversation."
    )
