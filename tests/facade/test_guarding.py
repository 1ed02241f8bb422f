"""The table of connections not yet upgraded, without sockets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from omnia.facade import guarding
from omnia.facade.guarding import PendingConnections


@dataclass(eq=False)
class Conn:
    awaiting_request: bool = True


def test_per_address_cap_refuses_the_newcomer_and_leaves_other_addresses_alone():
    table: PendingConnections[Conn] = PendingConnections(limit=0, per_address=2)
    assert table.admit(Conn(), "10.0.0.1") == (True, None)
    assert table.admit(Conn(), "10.0.0.1") == (True, None)
    assert table.admit(Conn(), "10.0.0.1") == (False, None)
    assert table.admit(Conn(), "10.0.0.2") == (True, None)


def test_at_the_overall_cap_the_oldest_connection_waiting_for_headers_makes_room():
    """A request being served is never displaced: only one still waiting for its
    headers (silent or slow) gives up its place."""
    table: PendingConnections[Conn] = PendingConnections(limit=3, per_address=0)
    serving, idle_old, idle_new = Conn(awaiting_request=False), Conn(), Conn()
    for conn in (serving, idle_old, idle_new):
        table.admit(conn, "10.0.0.1")
    newcomer = Conn()
    assert table.admit(newcomer, "10.0.0.2") == (True, idle_old)
    assert len(table) == 3


def test_at_the_overall_cap_with_every_request_being_served_the_newcomer_is_refused():
    table: PendingConnections[Conn] = PendingConnections(limit=1, per_address=0)
    table.admit(Conn(awaiting_request=False), "10.0.0.1")
    assert table.admit(Conn(), "10.0.0.2") == (False, None)


@pytest.mark.parametrize("times", [pytest.param(1, id="once"), pytest.param(2, id="twice")])
def test_release_frees_the_address_share_and_is_idempotent(times):
    """Released on upgrade and again when the socket goes: counted once."""
    table: PendingConnections[Conn] = PendingConnections(limit=0, per_address=1)
    conn = Conn()
    table.admit(conn, "10.0.0.1")
    for _ in range(times):
        table.release(conn)
    assert len(table) == 0
    assert table.admit(Conn(), "10.0.0.1") == (True, None)


def test_a_displaced_connection_frees_its_address_share():
    table: PendingConnections[Conn] = PendingConnections(limit=1, per_address=1)
    first = Conn()
    table.admit(first, "10.0.0.1")
    assert table.admit(Conn(), "10.0.0.2") == (True, first)
    assert table.admit(Conn(), "10.0.0.1")[0]


async def test_the_slim_inbox_hands_items_over_in_order_and_survives_a_cancelled_get() -> None:
    """uvicorn's receive queue, replaced to save memory per connection, keeps its contract."""
    inbox = guarding._Inbox()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.receive", "text": "a"})
    reader = asyncio.create_task(inbox.get())
    assert await reader == {"type": "websocket.connect"}
    assert not inbox.empty()
    assert await inbox.get() == {"type": "websocket.receive", "text": "a"}
    assert inbox.empty()
    late = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"type": "websocket.disconnect"})
    assert await late == {"type": "websocket.disconnect"}


async def test_the_slim_writable_flag_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    flag = guarding._Flag()
    assert await flag.wait()
    flag.clear()
    first, second, gone = (asyncio.create_task(flag.wait()) for _ in range(3))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert not first.done() and not second.done()
    flag.set()
    assert await first and await second and flag.is_set()
