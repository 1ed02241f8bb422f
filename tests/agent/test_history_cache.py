"""Two runtimes, one real Redis: each keeps decoded histories, neither misses the other's turns.

A conversation may move between replicas (a reconnect lands elsewhere, a
replica drains) and come back. The replica it comes back to has the session
cached from before; the turns written meanwhile must reach the model anyway.
"""

from __future__ import annotations

from omnia.agent import Agent, UserInput
from omnia.config import AgentConfig, ProviderConfig
from omnia.sessions.redis import RedisStore
from tests.agent.test_loop import RecordingProvider, ScriptedClient
from tests.sessions.conftest import redis_server  # noqa: F401  (fixture)


def _replica(url: str, namespace: str) -> tuple[Agent, RecordingProvider]:
    provider = RecordingProvider()
    store = RedisStore.from_url(url, namespace=namespace, timeout_seconds=5)
    config = AgentConfig(name="shared", provider=ProviderConfig(type="mock"))
    return Agent(config=config, provider=provider, store=store), provider


async def _say(agent: Agent, session_id: str, text: str) -> None:
    events = []

    async def emit(event) -> None:
        events.append(event)

    await agent.run_turn(session_id, UserInput(text), channel=ScriptedClient(), emit=emit)
    assert type(events[-1]).__name__ == "TurnDone", events[-1]


def _users(provider: RecordingProvider) -> list[str]:
    return [m.content for m in provider.requests[-1].messages if m.role == "user"]


async def test_a_session_that_came_back_sees_the_turns_the_other_replica_wrote(redis_server):  # noqa: F811
    one, one_model = _replica(redis_server.url, "cache-test/shared")
    two, two_model = _replica(redis_server.url, "cache-test/shared")
    try:
        session, _ = await one.open_session(session_id=None)
        await _say(one, session.id, "first, on one")
        await _say(one, session.id, "second, on one")
        assert len(one.sessions) == 1
        await _say(two, session.id, "third, on two")
        await _say(one, session.id, "fourth, back on one")
        assert _users(one_model) == [
            "first, on one", "second, on one", "third, on two", "fourth, back on one",
        ]
        assert _users(two_model) == ["first, on one", "second, on one", "third, on two"]
        stored = await one.store.get(session.id)
        assert [t.index for t in stored.turns] == [0, 1, 2, 3]
        assert (await one.sessions.get(session.id)) == stored
    finally:
        await one.store.aclose()
        await two.store.aclose()
