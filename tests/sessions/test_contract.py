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
