"""The session store contract: what every store must do, whatever its backend."""

from __future__ import annotations

import asyncio

import pytest

from omnia.sessions import Session, SessionExists, SessionFull, SessionNotFound, Turn, TurnConflict


def _turn(index: int, text: str = "hello") -> Turn:
    return Turn(
        index=index,
        messages=({"role": "user", "content": text}, {"role": "assistant", "content": f"re: {text}"}),
        input_tokens=3,
        output_tokens=4,
        cost_usd=0.001,
    )


def _session(session_id: str = "s1") -> Session:
    return Session(id=session_id, agent="agent", prompt_version="1.0.0", metadata={"team": "a"})


async def test_created_session_reads_back_empty_with_its_metadata(store):
    await store.create(_session())
    got = await store.get("s1")
    assert (got.id, got.agent, got.prompt_version, got.metadata, got.turns) == (
        "s1", "agent", "1.0.0", {"team": "a"}, ()
    )


async def test_creating_an_existing_id_is_refused(store):
    await store.create(_session())
    with pytest.raises(SessionExists):
        await store.create(_session())


async def test_unknown_session_is_not_found(store):
    with pytest.raises(SessionNotFound):
        await store.get("nope")


async def test_turns_read_back_in_order_with_usage(store):
    await store.create(_session())
    for i in range(3):
        await store.append_turn("s1", _turn(i, f"m{i}"))
    got = await store.get("s1")
    assert [t.index for t in got.turns] == [0, 1, 2]
    assert [t.messages[0]["content"] for t in got.turns] == ["m0", "m1", "m2"]
    assert got.turns[1].output_tokens == 4 and got.turns[1].cost_usd == pytest.approx(0.001)


@pytest.mark.parametrize(
    "index",
    [pytest.param(1, id="skipping-ahead"), pytest.param(0, id="duplicate-of-committed")],
)
async def test_append_with_a_stale_or_future_index_conflicts_and_changes_nothing(store, index):
    """Ordered appends are what keeps two writers from interleaving a history."""
    await store.create(_session())
    await store.append_turn("s1", _turn(0))
    if index == 1:
        index = 2
    with pytest.raises(TurnConflict):
        await store.append_turn("s1", _turn(index))
    assert len((await store.get("s1")).turns) == 1


async def test_concurrent_appends_of_the_same_index_commit_exactly_one(store):
    await store.create(_session())
    results = await asyncio.gather(
        *(store.append_turn("s1", _turn(0, f"w{i}")) for i in range(5)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, TurnConflict) for r in results if r is not None)
    assert len((await store.get("s1")).turns) == 1


async def test_append_to_unknown_session_is_not_found(store):
    with pytest.raises(SessionNotFound):
        await store.append_turn("nope", _turn(0))


async def test_turn_bound_refuses_further_turns(store):
    """The fixture stores keep at most 5 turns per session."""
    await store.create(_session())
    for i in range(5):
        await store.append_turn("s1", _turn(i))
    with pytest.raises(SessionFull):
        await store.append_turn("s1", _turn(5))
    assert len((await store.get("s1")).turns) == 5


async def test_size_bound_refuses_a_turn_that_would_exceed_it(store):
    """The fixture stores keep at most 10,000 bytes per session."""
    await store.create(_session())
    with pytest.raises(SessionFull):
        await store.append_turn("s1", _turn(0, "x" * 20_000))
    assert (await store.get("s1")).turns == ()


async def test_ping_succeeds_when_the_store_is_up(store):
    await store.ping()


async def test_turn_contents_round_trip_exactly(store):
    """What the loop stores (unicode, tool calls, odd floats, big counts) is what it reads back."""
    turn = Turn(
        index=0,
        messages=(
            {"role": "user", "content": "héllo 👋 \u0000 \"quoted\" \\ <tag>", "id": "m1", "metadata": {"k": [1]}},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "name": "look_up", "arguments": {"x": [1, 2.5, None, True]}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"},
            {"role": "assistant", "content": "done"},
        ),
        input_tokens=2**40,
        output_tokens=7,
        cost_usd=0.1 + 0.2,
        finish_reason="tool_calls",
        created_at=1_700_000_000.123456,
    )
    session = Session(
        id="s1", agent="agent", prompt_version="2.0.0-rc.1", metadata={"ünï": {"nested": [1.5, "x"]}},
        created_at=1_700_000_000.5,
    )
    await store.create(session)
    await store.append_turn("s1", turn)
    got = await store.get("s1")
    assert got.turns == (turn,)
    assert (got.metadata, got.created_at, got.prompt_version) == (
        session.metadata, session.created_at, session.prompt_version
    )


async def test_idle_session_expires_after_its_ttl_and_each_write_extends_it(make_store):
    """A real store with a short TTL and the real clock: expiry is the store's own doing."""
    store = make_store(ttl_seconds=1.5)
    await store.create(_session())
    await asyncio.sleep(0.9)
    await store.append_turn("s1", _turn(0))
    await asyncio.sleep(0.9)
    assert len((await store.get("s1")).turns) == 1, "1.8 s after creation but 0.9 s after the last write"
    await asyncio.sleep(1.8)
    with pytest.raises(SessionNotFound):
        await store.get("s1")
    with pytest.raises(SessionNotFound):
        await store.append_turn("s1", _turn(1))


async def test_an_expired_session_id_can_be_used_again_from_scratch(make_store):
    store = make_store(ttl_seconds=0.5)
    await store.create(_session())
    await store.append_turn("s1", _turn(0))
    await asyncio.sleep(0.8)
    await store.create(_session())
    assert (await store.get("s1")).turns == ()
    await store.append_turn("s1", _turn(0, "again"))
    assert [t.messages[0]["content"] for t in (await store.get("s1")).turns] == ["again"]


SESSIONS, TURNS, CONCURRENCY = 200, 20, 64
UNHURRIED = 30.0  # seconds per store call: these tests are of order, not of latency


def _numbered_turn(session_id: str, index: int) -> Turn:
    return Turn(
        index=index,
        messages=(
            {"role": "user", "content": f"{session_id} says {index}"},
            {"role": "assistant", "content": f"{session_id} hears {index}"},
        ),
        input_tokens=index,
        output_tokens=index + 1,
    )


async def test_many_sessions_written_at_once_keep_every_turn_in_order(make_store):
    """200 sessions of 20 turns each, written concurrently: nothing lost, doubled or mixed up.

    Every session's history is then checked turn by turn against what was
    sent for it, so a turn landing in the wrong session, at the wrong index
    or twice would show.
    """
    store = make_store(max_turns=TURNS, max_bytes=100_000, timeout_seconds=UNHURRIED)
    gate = asyncio.Semaphore(CONCURRENCY)
    ids = [f"c{n:03d}" for n in range(SESSIONS)]

    async def converse(session_id: str) -> None:
        async with gate:
            await store.create(_session(session_id))
            for index in range(TURNS):
                await store.append_turn(session_id, _numbered_turn(session_id, index))

    await asyncio.gather(*(converse(session_id) for session_id in ids))

    async def check(session_id: str) -> None:
        async with gate:
            got = await store.get(session_id)
        assert len(got.turns) == TURNS, session_id
        for index, turn in enumerate(got.turns):
            expected = _numbered_turn(session_id, index)
            assert (turn.index, turn.messages, turn.input_tokens, turn.output_tokens) == (
                index, expected.messages, expected.input_tokens, expected.output_tokens
            ), f"{session_id} turn {index}"

    await asyncio.gather(*(check(session_id) for session_id in ids))


async def test_readers_during_writes_see_whole_turns_in_order(make_store):
    """A reader racing the writers sees some prefix of the history, each turn complete."""
    store = make_store(max_turns=TURNS, max_bytes=100_000, timeout_seconds=UNHURRIED)
    ids = [f"r{n}" for n in range(8)]
    for session_id in ids:
        await store.create(_session(session_id))
    writing = True

    async def write(session_id: str) -> None:
        for index in range(TURNS):
            await store.append_turn(session_id, _numbered_turn(session_id, index))

    async def read(session_id: str) -> int:
        seen = 0
        while writing:
            turns = (await store.get(session_id)).turns
            assert [t.index for t in turns] == list(range(len(turns)))
            assert all(t.messages == _numbered_turn(session_id, t.index).messages for t in turns)
            assert len(turns) >= seen, "a history never shrinks"
            seen = len(turns)
            await asyncio.sleep(0)
        return seen

    readers = [asyncio.create_task(read(session_id)) for session_id in ids]
    await asyncio.gather(*(write(session_id) for session_id in ids))
    writing = False
    await asyncio.gather(*readers)


async def test_refresh_brings_an_earlier_read_up_to_date_with_another_replicas_turns(
    make_store,
):
    """What a runtime's cache relies on: reading only the new turns gives what ``get`` gives."""
    store = make_store()
    # The memory store has no second replica: the other writer is the same store.
    replica = store if make_store.kind == "memory" else make_store.replica(store)
    await store.create(_session())
    await store.append_turn("s1", _turn(0, "zero"))
    earlier = await store.get("s1")
    await replica.append_turn("s1", _turn(1, "one"))
    await replica.append_turn("s1", _turn(2, "two"))
    refreshed = await store.refresh(earlier)
    assert refreshed == await store.get("s1")
    assert [t.messages[0]["content"] for t in refreshed.turns] == ["zero", "one", "two"]
    assert (await store.refresh(refreshed)).turns == refreshed.turns


async def test_refresh_of_a_session_that_is_gone_is_not_found(store):
    with pytest.raises(SessionNotFound):
        await store.refresh(_session("never-created"))


# Ids a client can name (``?session_id=``, ``X-Omnia-Session``, A2A's
# ``omniaSession``): none of them may make a store fail, only not find it.
ODD_IDS = ["a\x00b", "\x00", "x}y{z", "{s1}", "*", "s1' OR '1'='1", "%s", "💬", "s1\n", "\udcff"]


@pytest.mark.parametrize("session_id", ODD_IDS, ids=repr)
async def test_an_id_a_client_made_up_is_not_found_whatever_its_characters(store, session_id):
    await store.create(_session("s1"))
    with pytest.raises(SessionNotFound):
        await store.get(session_id)
    with pytest.raises(SessionNotFound):
        await store.append_turn(session_id, _turn(0))
    assert (await store.get("s1")).turns == ()
