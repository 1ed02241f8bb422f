"""A2A: the agent card and the JSON-RPC endpoint, for agents that call agents.

``GET /.well-known/agent-card.json`` describes the agent: its name, the
PromptPack's description and skills (of the stable version), the JSON-RPC
interface's URL and how to authenticate (HTTP bearer when the facade asks for
API keys or JWTs). ``POST /a2a`` is the JSON-RPC endpoint, served by the
official SDK (``a2a-sdk``): A2A 1.0's ``SendMessage``,
``SendStreamingMessage``, ``GetTask``, ``CancelTask`` and the like, and the
0.3 names (``message/send``, ``message/stream``, ``tasks/get``,
``tasks/cancel``) on the same endpoint.

How A2A maps onto Omnia: a **task** is one turn, a **context** is one
session. A message without a known context starts a new session; later
messages of the context continue it. The reply streams as the chunks of one
artifact (``reply``) and comes whole in the completed status's message; the
session's id is in that message's metadata (``omniaSession``), and a
message may name a session to continue in its own metadata (same key).
Cancelling a task cancels the turn (the runtime keeps what was generated,
as on ``/ws``).

Tasks and the context-to-session table live in this replica's memory (the
SDK's in-memory task store, bounded: ``BoundedTaskStore``): ``GetTask``
answers on the replica that ran the task, for its last ``MAX_TASKS`` tasks,
and a context continues its session on the replica that started it —
elsewhere, name the session with ``omniaSession``. Tasks belong to the
principal that created them. The caller cannot run client-side tools (the
model is told so) nor approve tool calls (denied, as for every protocol but
the WebSocket).
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

from a2a.auth.user import User
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import ServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.types import a2a_pb2 as a2a
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from omnia.config import AuthConfig
from omnia.facade import auth, bodies, turns
from omnia.facade.profiles import AgentProfile
from omnia.protocol.errors import ErrorCode

CARD_PATH = "/.well-known/agent-card.json"
RPC_PATH = "/a2a"
SESSION_KEY = "omniaSession"
REPLY_ARTIFACT = "reply"
_PRINCIPAL = "omnia_principal"
_STATUS = {ErrorCode.UNAUTHORIZED: 401, ErrorCode.RATE_LIMITED: 429}
# Most contexts remembered per replica; the oldest are forgotten first.
MAX_CONTEXTS = 10_000
# Most tasks kept per replica (each holds its whole reply); the oldest
# finished ones are forgotten first.
MAX_TASKS = 1_000
_FINISHED = frozenset({
    a2a.TaskState.TASK_STATE_COMPLETED,
    a2a.TaskState.TASK_STATE_FAILED,
    a2a.TaskState.TASK_STATE_CANCELED,
    a2a.TaskState.TASK_STATE_REJECTED,
})


class A2aEndpoint:
    """The agent card route and the JSON-RPC route."""

    def __init__(self, *, turns_: turns.Turns, profile: AgentProfile, auth_config: AuthConfig) -> None:
        self.turns = turns_
        self.profile = profile
        self.auth_config = auth_config
        handler = DefaultRequestHandler(
            agent_executor=_Executor(turns_),
            task_store=BoundedTaskStore(),
            agent_card=self.card(RPC_PATH),
        )
        self.dispatcher = JsonRpcDispatcher(
            request_handler=handler, context_builder=_ContextBuilder(), enable_v0_3_compat=True
        )

    def routes(self) -> list[Route]:
        return [
            Route(CARD_PATH, self._card, methods=["GET"]),
            Route(RPC_PATH, self._rpc, methods=["POST"]),
        ]

    def card(self, url: str) -> a2a.AgentCard:
        profile = self.profile
        card = a2a.AgentCard(
            name=profile.name,
            description=profile.description or f"The Omnia agent {profile.name}.",
            version=profile.version or "0.0.0",
            supported_interfaces=[a2a.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
            capabilities=a2a.AgentCapabilities(streaming=True),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[
                a2a.AgentSkill(
                    id=skill.id, name=skill.name, description=skill.description,
                    # A2A requires tags; a skill without any is tagged with its id.
                    tags=skill.tags or [skill.id], examples=skill.examples,
                )
                for skill in profile.skills
            ]
            or [a2a.AgentSkill(id="chat", name="Chat", description=f"Talk to {profile.name}.", tags=["chat"])],
        )
        if self.auth_config.type != "none":
            described = "an API key" if self.auth_config.type == "apiKey" else "a JWT"
            card.security_schemes["bearer"].CopyFrom(
                a2a.SecurityScheme(
                    http_auth_security_scheme=a2a.HTTPAuthSecurityScheme(
                        scheme="bearer",
                        bearer_format="JWT" if self.auth_config.type == "jwt" else "",
                        description=f"{described} in Authorization: Bearer",
                    )
                )
            )
            requirement = card.security_requirements.add()
            requirement.schemes["bearer"].CopyFrom(a2a.StringList())
        return card

    async def _card(self, request: Request) -> Response:
        url = str(request.base_url).rstrip("/") + RPC_PATH
        return JSONResponse(agent_card_to_dict(self.card(url)))

    async def _rpc(self, request: Request) -> Response:
        try:
            principal = await self.turns.authenticate(request.headers)
            self.turns.admit(request.scope.get("client"))
        except turns.Refused as exc:
            status = _STATUS.get(exc.code, 400)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            return _rpc_error(-32001, f"{exc.code}: {exc.message}", status=status, headers=headers)
        try:
            body, _ = await bodies.read_json(request, limit=bodies.body_limit(self.turns.config.max_message_bytes))
        except bodies.BodyRefused as exc:
            # JSON-RPC's parse error for what does not decode (with 200, as the
            # SDK answers malformed JSON); an invalid request for the size.
            self.turns.count_error(exc.code)
            if exc.status == 413:
                return _rpc_error(-32600, f"{exc.code}: {exc.message}", status=413)
            return _rpc_error(-32700, f"{exc.code}: {exc.message}")
        request.state.omnia_principal = principal
        return await self.dispatcher.handle_requests(bodies.replaying(request, body))


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory task store, holding at most ``limit`` tasks.

    The SDK's own keeps every task, with its whole reply, for the life of the
    process. Past ``limit`` the oldest finished tasks are forgotten (``GetTask``
    then answers "not found", as another replica would); running ones are
    kept, and there are never more of those than turns in flight.
    """

    def __init__(self, *, limit: int = MAX_TASKS) -> None:
        super().__init__()
        self.limit = limit
        # (owner, task id) → (its user, finished), least recently saved first.
        self._order: collections.OrderedDict[tuple[str, str], tuple[User, bool]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    async def save(self, task: a2a.Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        key = (context.user.user_name, task.id)
        self._order[key] = (context.user, task.status.state in _FINISHED)
        self._order.move_to_end(key)
        excess = len(self._order) - self.limit
        if excess > 0:
            await self._forget(excess)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await super().delete(task_id, context)
        self._order.pop((context.user.user_name, task_id), None)

    async def _forget(self, count: int) -> None:
        finished = ((key, user) for key, (user, done) in self._order.items() if done)
        for (_, task_id), user in list(itertools.islice(finished, count)):
            await self.delete(task_id, ServerCallContext(user=user))


class _PrincipalUser(User):
    """The facade's principal, as the SDK's task store sees owners."""

    def __init__(self, principal: auth.Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return self.principal.method != "none"

    @property
    def user_name(self) -> str:
        return f"{self.principal.method}:{self.principal.subject}"


class _ContextBuilder(ServerCallContextBuilder):
    def build(self, request: Request) -> ServerCallContext:
        principal = request.state.omnia_principal
        return ServerCallContext(
            user=_PrincipalUser(principal),
            state={_PRINCIPAL: principal, "headers": dict(request.headers)},
        )


class _Executor(AgentExecutor):
    """Runs each A2A task as one Omnia turn."""

    def __init__(self, turns_: turns.Turns) -> None:
        self.turns = turns_
        self.sessions: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the turn; cancelling this task (``CancelTask``) ends the turn's stream,
        and the runtime keeps the partial turn with reason ``cancelled``."""
        state = context.call_context.state
        principal: auth.Principal = state[_PRINCIPAL]
        task_id, context_id = context.task_id or "", context.context_id or ""
        if context.current_task is None:
            await event_queue.enqueue_event(
                new_task(task_id, context_id, a2a.TaskState.TASK_STATE_SUBMITTED, history=[context.message])
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        owner = (f"{principal.method}:{principal.subject}", context_id)
        session = ""
        try:
            session = _named_session(context.message) or self.sessions.get(owner, "")
            conversation = await self.turns.open(principal=principal, headers=state["headers"], session_id=session)
        except turns.Refused as exc:
            await updater.failed(_agent_message(updater, f"{exc.code}: {exc.message}", session))
            return
        async with conversation:
            self._remember(owner, conversation.session_id)
            await self._run(conversation, context.get_user_input(), updater)

    async def _run(self, conversation: turns.Conversation, text: str, updater: TaskUpdater) -> None:
        session = conversation.session_id
        try:
            await conversation.send(text)
        except turns.Refused as exc:
            await updater.failed(_agent_message(updater, f"{exc.code}: {exc.message}", session))
            return
        await updater.start_work()
        reply: list[str] = []
        async for event in conversation.events():
            if isinstance(event, turns.Chunk):
                await updater.add_artifact(
                    [new_text_part(event.text)], artifact_id=REPLY_ARTIFACT, name=REPLY_ARTIFACT,
                    append=bool(reply), last_chunk=False, metadata={SESSION_KEY: session},
                )
                reply.append(event.text)
            elif isinstance(event, turns.ToolCall) and event.awaits_result:
                await conversation.tool_result(
                    event.id, f"the A2A client cannot run the tool {event.name!r}", is_error=True
                )
            elif isinstance(event, turns.Failed):
                await updater.failed(_agent_message(updater, f"{event.code}: {event.message}", session))
                return
            elif isinstance(event, turns.Done):
                message = _agent_message(updater, "".join(reply), session)
                if event.finish_reason == "cancelled":
                    await updater.cancel(message)
                else:
                    await updater.complete(message)
                return

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """The SDK has cancelled ``execute`` (which ended the turn); say so on the task."""
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()

    def _remember(self, owner: tuple[str, str], session_id: str) -> None:
        self.sessions[owner] = session_id
        self.sessions.move_to_end(owner)
        if len(self.sessions) > MAX_CONTEXTS:
            self.sessions.popitem(last=False)


def _named_session(message: a2a.Message | None) -> str:
    """The session a message names in its metadata, ``""`` for none.

    A value that is not a string is refused rather than ignored: ignoring it
    would start a new session and lose the one the client meant.
    """
    if message is None or SESSION_KEY not in message.metadata:
        return ""
    value: Any = message.metadata[SESSION_KEY]
    if not isinstance(value, str):
        raise turns.Refused(ErrorCode.INVALID_MESSAGE, f"metadata {SESSION_KEY} must be a session id (a string)")
    return value


def _rpc_error(code: int, message: str, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _agent_message(updater: TaskUpdater, text: str, session: str) -> a2a.Message:
    message = updater.new_agent_message([new_text_part(text)])
    if session:
        message.metadata[SESSION_KEY] = session
    return message
