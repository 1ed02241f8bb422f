"""The facade's listening socket, as the event loop sees it."""

from __future__ import annotations

import asyncio
import socket

from omnia.facade import server


async def test_accepted_connections_have_nagle_disabled():
    """asyncio turns TCP_NODELAY on only for sockets whose protocol says TCP.
    Without it, the second chunk of every reply waits for the client's delayed
    ACK (about 40 ms on Linux) and streaming stalls."""
    listening = server._bind("127.0.0.1", 0)
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    class Capture(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport.get_extra_info("socket"))

    loop = asyncio.get_running_loop()
    tcp_server = await loop.create_server(Capture, sock=listening)
    try:
        _, writer = await asyncio.open_connection(*listening.getsockname())
        sock = await asyncio.wait_for(accepted, 5)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        writer.close()
    finally:
        tcp_server.close()
