"""The table of connections not yet upgraded, without sockets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

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
