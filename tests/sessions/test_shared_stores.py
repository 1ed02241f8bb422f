"""What the shared stores (Redis, PostgreSQL) add to the contract.

Several replicas share one store; the server can go away and come back. These
tests stop, crash and freeze real servers under a live store object and
check that it fails fast, recovers by itself, and never shows half a turn.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from omnia.sessions import Session, SessionNotFound, StoreUnavailable, Turn, TurnConflict
from tests.sessions.conftest import TIMEOUT_SECONDS

pytestmark = pytest.mark.services

# How long past its own timeout a failing operation may take to report it.
LEEWAY_SECONDS = 1.0


def _turn(index: int, text: str) -> Turn:
    return Turn(index=index, messages=({"role": "user", "content": text}, {"role": "assistant", "content": f"re: {text}"}))


def _session(session_id: str) -> Session:
    return Session(id=session_id, agent="agent", prompt_version="1.0.0")


def _operations(store, session_id: str):
    return {
        "ping": lambda: store.ping(),
        "get": lambda: store.get(session_id),
        "append_turn": lambda: store.append_turn(session_id, _turn(1, "during the outage")),
        "create": lambda: store.create(_session(f"{session_id}-new")),
    }


async def _assert_unavailable_quickly(store, session_id: str) -> None:
    """Every kind of operation, all at once, fails with StoreUnavailable within the timeout.

    At once, because callers must not queue behind each other while the
    server is away: each one's wait is bounded on its own.
    """

    async def timed(operation) -> tuple[BaseException | None, float]:
        started = time.monotonic()
        try:
            await operation()
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            return exc, time.monotonic() - started
        return None, time.monotonic() - started

    operations = _operations(store, session_id)
    outcomes = await asyncio.gather(*(timed(operation) for operation in operations.values()))
    for name, (error, elapsed) in zip(operations, outcomes, strict=True):
        assert isinstance(error, StoreUnavailable), f"{name} gave {error!r}"
        assert elapsed < TIMEOUT_SECONDS + LEEWAY_SECONDS, f"{name} took {elapsed:.2f}s to fail"


async def test_resume_on_other_replica_keeps_history(make_durable_store):
    """Two store objects on one namespace are two replicas: each sees the other's turns, in order."""
    first = make_durable_store()
    second = make_durable_store.replica(first)
    await first.create(_session("s"))
    await first.append_turn("s", _turn(0, "on replica one"))
    await second.append_turn("s", _turn(1, "on replica two"))
    got = await first.get("s")
    assert [t.messages[0]["content"] for t in got.turns] == ["on replica one", "on replica two"]
    with pytest.raises(TurnConflict):
        await first.append_turn("s", _turn(1, "stale view on replica one"))


async def test_namespaces_keep_agents_sharing_a_server_apart(make_durable_store):
    """Two agents on one server can use the same session id without seeing each other."""
    one, other = make_durable_store(), make_durable_store()
    await one.create(_session("s"))
    await one.append_turn("s", _turn(0, "one"))
    with pytest.raises(SessionNotFound):
        await other.get("s")
    await other.create(_session("s"))
    assert (await other.get("s")).turns == ()
    assert len((await one.get("s")).turns) == 1


@pytest.mark.parametrize("crash", [pytest.param(False, id="clean-stop"), pytest.param(True, id="crash")])
async def test_outage_fails_fast_then_the_same_store_recovers(make_durable_store, crash):
    """While the server is down every operation raises StoreUnavailable within its timeout;
    once it is back the very same store object works again, with no restart."""
    store = make_durable_store()
    server = make_durable_store.server
    await store.create(_session("s"))
    await store.append_turn("s", _turn(0, "before"))

    server.stop(crash=crash)
    await _assert_unavailable_quickly(store, "s")

    server.start()
    await store.ping()
    try:
        kept = await store.get("s")
    except SessionNotFound:
        assert make_durable_store.kind == "redis", "PostgreSQL keeps committed sessions"
    else:
        assert [t.messages[0]["content"] for t in kept.turns] == ["before"]
    await store.create(_session("after"))
    await store.append_turn("after", _turn(0, "after"))
    assert len((await store.get("after")).turns) == 1


async def test_frozen_server_times_out_and_the_store_recovers_when_it_thaws(make_durable_store):
    """A server that accepts but never answers (SIGSTOP) must not hang callers.

    An append that timed out may still be applied when the server thaws (its
    request was already sent): the caller cannot know, but a reader then sees
    either no trace of it or the whole turn, never a part.
    """
    store = make_durable_store()
    server = make_durable_store.server
    await store.create(_session("s"))
    await store.append_turn("s", _turn(0, "before"))

    server.pause()
    try:
        await _assert_unavailable_quickly(store, "s")
    finally:
        server.resume()

    await store.ping()
    turns = (await store.get("s")).turns
    assert [t.messages for t in turns] in (
        [_turn(0, "before").messages],
        [_turn(0, "before").messages, _turn(1, "during the outage").messages],
    )
    await store.append_turn("s", _turn(len(turns), "after"))
    assert len((await store.get("s")).turns) == len(turns) + 1


async def test_crash_mid_append_loses_no_acknowledged_turn_and_shows_no_partial_one(make_crashable_store):
    """Writers append as fast as they can; the server is killed under them and restarted.

    Afterwards every session holds at least every turn whose append returned,
    at most the one more that was in flight, each complete and in order.
    """
    store = make_crashable_store(max_turns=100_000, max_bytes=50_000_000)
    server = make_crashable_store.server
    ids = [f"w{n}" for n in range(16)]
    for session_id in ids:
        await store.create(_session(session_id))
    acknowledged = dict.fromkeys(ids, 0)

    async def write(session_id: str) -> None:
        index = 0
        while True:
            try:
                await store.append_turn(session_id, _turn(index, f"{session_id}/{index}"))
            except StoreUnavailable:
                return
            acknowledged[session_id] = index = index + 1

    writers = [asyncio.create_task(write(session_id)) for session_id in ids]
    while sum(acknowledged.values()) < 200:
        await asyncio.sleep(0.01)
    server.stop(crash=True)
    async with asyncio.timeout(TIMEOUT_SECONDS + LEEWAY_SECONDS):
        await asyncio.gather(*writers)
    server.start()

    for session_id in ids:
        turns = (await store.get(session_id)).turns
        assert [t.index for t in turns] == list(range(len(turns)))
        assert all(t.messages == _turn(t.index, f"{session_id}/{t.index}").messages for t in turns)
        assert acknowledged[session_id] <= len(turns) <= acknowledged[session_id] + 1, session_id


async def test_a_store_made_while_the_server_is_down_connects_once_it_is_up(make_durable_store):
    """Stores connect lazily: a pod may start before its database, and must not need a restart."""
    server = make_durable_store.server
    server.stop()
    store = make_durable_store()
    await _assert_unavailable_quickly(store, "s")
    server.start()
    await store.create(_session("s"))
    await store.append_turn("s", _turn(0, "first"))
    assert len((await store.get("s")).turns) == 1
