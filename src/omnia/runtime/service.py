"""The gRPC adapter of the runtime: ``omnia.runtime.v1.AgentRuntime`` over an ``Agent``."""

from __future__ import annotations

import asyncio
import json
import logging

import grpc

from omnia import telemetry
from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc
from omnia.agent import Agent
from omnia.runtime.conversation import Conversation
from omnia.sessions import SessionNotFound, StoreUnavailable

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


class AgentRuntimeService(pb_grpc.AgentRuntimeServicer):
    """Serves conversations; tracks them so shutdown can let turns finish."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._conversations: set[Conversation] = set()
        self.serving = True

    async def Converse(self, request_iterator, context: grpc.aio.ServicerContext):
        metadata = dict(context.invocation_metadata() or ())
        conversation = Conversation(
            self.agent, trace_context=telemetry.context_from_traceparent(metadata.get("traceparent"))
        )
        self._conversations.add(conversation)
        reader = asyncio.create_task(self._pump(request_iterator, conversation))
        try:
            while (event := await conversation.next_event()) is not None:
                yield event
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._conversations.discard(conversation)

    async def _pump(self, requests, conversation: Conversation) -> None:
        """Feed client events in; when the facade hangs up, close the conversation."""
        try:
            async for event in requests:
                await conversation.handle(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream is a hang-up, not a crash
            log.debug("conversation stream ended: %s", exc)
        await conversation.aclose()

    async def Health(self, request, context) -> pb.HealthResponse:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self.agent.store.ping()
        except (StoreUnavailable, TimeoutError) as exc:
            return pb.HealthResponse(
                serving=False, store_ok=False, detail=f"session store: {exc or 'timeout'}",
                agent=self.agent.config.name,
            )
        return pb.HealthResponse(
            serving=self.serving, store_ok=True, detail="" if self.serving else "shutting down",
            agent=self.agent.config.name,
        )

    async def GetSession(self, request, context) -> pb.GetSessionResponse:
        try:
            session = await self.agent.store.get(request.session_id)
        except SessionNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {request.session_id} not found")
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}")
        return pb.GetSessionResponse(
            session_id=session.id,
            agent=session.agent,
            prompt_version=session.prompt_version,
            turns_json=json.dumps([t.to_dict() for t in session.turns]),
            metadata_json=json.dumps(session.metadata),
        )

    async def Describe(self, request, context) -> pb.Description:
        rollout = self.agent.config.prompts
        canary = rollout.canary
        return pb.Description(
            agent=self.agent.config.name,
            stable_version=rollout.stable.version,
            canary_version=canary.version if canary is not None else "",
            canary_weight=rollout.canary_weight if canary is not None else 0,
        )

    async def drain(self, *, grace: float) -> None:
        """Report not serving, wait up to ``grace`` seconds for the facade to end
        its conversations (it lets in-flight turns finish), then close the rest.
        """
        self.serving = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._conversations and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(
            *(c.aclose(grace=1.0) for c in list(self._conversations)), return_exceptions=True
        )
