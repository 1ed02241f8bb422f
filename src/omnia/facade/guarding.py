"""Guarding the facade's sockets from clients that do not play along.

uvicorn serves a connection with two protocol objects in turn: an HTTP one
until the request headers are complete, then (for ``/ws``) a WebSocket one.
Neither bounds what a hostile client can make it hold:

- *before the upgrade*, a socket that never sends a request, or sends its
  headers a byte at a time, is kept forever, and such sockets do not count
  against ``maxConnections`` (the relay only sees upgraded ones);
- *after the upgrade*, the WebSocket layer answers every ping with a pong
  written straight to the socket's buffer, so a client that pings and never
  reads makes the server buffer pongs without bound; and a frame the app
  sends to a client that never reads waits for ever.

The two protocol classes here add what is missing and nothing else:

``GuardedHTTPProtocol``
    a deadline for the request, headers and body (``requestHeaderTimeoutSeconds``,
    from the connection or the end of the previous response: bytes trickling
    in do not extend it; 408), a bound on the size of the request line and
    headers (``maxRequestHeaderBytes``; 431: httptools keeps every header
    byte it is sent, so headers streamed without end grew the process by
    hundreds of megabytes a second until the deadline), a place in
    ``PendingConnections``, the
    table of connections not yet upgraded (``maxPendingConnections`` in all,
    ``maxPendingConnectionsPerAddress`` per client address: 503), and for
    responses (the open protocols' streams) the same output bound and send
    deadline as below, ending in a dropped connection: HTTP has no close
    frame to send first.
``GuardedWebSocketProtocol``
    back-pressure on the client's input: while more than
    ``maxOutputBufferBytes`` wait to be sent to a client, the server stops
    reading from it, so its frames (pings, bad frames) produce no more output;
    and a deadline: a buffer that does not drain within
    ``sendTimeoutSeconds`` closes the connection (1008). A connection the
    server closes is dropped, not merely closed, if the client takes nothing
    more for that time either (a client still reading its backlog has up to
    five send timeouts to reach the close frame).

``GuardedWebSocketProtocol`` is also where an idle connection's memory goes,
so it holds less than uvicorn's: its receive queue and its writable flag are
``_Inbox`` and ``_Flag`` (a list and a future made only while someone waits,
instead of ``asyncio.Queue``'s three deques and ``asyncio.Event``'s one), and
it forgets the parsed handshake (request and response headers) once the
upgrade is answered.

``PendingConnections`` is plain bookkeeping with no sockets, tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import socket
import sys
import termios
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from starlette.types import Message
from websockets.exceptions import InvalidState
from websockets.frames import Frame

from omnia.config import FacadeConfig
from omnia.protocol.errors import CloseCode
from omnia.speedups import HttpParser

logger = logging.getLogger(__name__)

def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_TIMEOUT_RESPONSE = _response(b"408 Request Timeout", b"the request took too long to arrive\n")
_HEADERS_TOO_LARGE_RESPONSE = _response(
    b"431 Request Header Fields Too Large", b"the request line and headers are too large\n"
)
# h11 refuses incomplete headers past its own bound (with a 400); it is set
# this far above ours so that the guard answers first, whatever the size of
# the reads that bring the headers in.
_H11_MARGIN_BYTES = 1 << 20
_TOO_MANY_PIPELINED_RESPONSE = _response(
    b"400 Bad Request", b"too many pipelined requests: read the answers before sending more\n"
)
_BUSY_RESPONSE = _response(
    b"503 Service Unavailable", b"too many connections waiting for a request; retry shortly\n"
)
_NOT_READING = "client is not reading"
# Requests a client may send ahead of the answers it has not read (HTTP/1.1
# pipelining), on top of the one being served.
_MAX_PIPELINED_REQUESTS = 16
# What each fragment of a message counts against its size bound, at least:
# about what keeping it costs (a list entry and a bytes object).
_FRAGMENT_BYTES = 64
# After a close frame, how many send timeouts a client that keeps reading its
# backlog has before it is dropped (one for a client that reads nothing).
_CLOSE_ROUNDS = 5


class _Pending(Protocol):
    @property
    def awaiting_request(self) -> bool: ...


P = TypeVar("P", bound=_Pending)


class PendingConnections(Generic[P]):
    """Connections that have not upgraded yet, oldest first, counted per client address.

    A limit of zero disables that limit.
    """

    def __init__(self, *, limit: int, per_address: int) -> None:
        self.limit = limit
        self.per_address = per_address
        self._connections: dict[P, str] = {}
        self._by_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._connections)

    def admit(self, connection: P, address: str) -> tuple[bool, P | None]:
        """Take ``connection`` in if there is room; (admitted, connection to close for it).

        At the overall limit, the oldest connection still waiting for its
        request headers is released to make room: a slow or silent client
        loses its place to one that sends its request at once (a probe, a real
        user). Connections serving a request are never displaced. At the
        per-address limit the newcomer is refused, so one address cannot take
        the room of others.
        """
        if self.per_address > 0 and self._by_address[address] >= self.per_address:
            return False, None
        displaced = None
        if self.limit > 0 and len(self._connections) >= self.limit:
            displaced = next((c for c in self._connections if c.awaiting_request), None)
            if displaced is None:
                return False, None
            self.release(displaced)
        self._connections[connection] = address
        self._by_address[address] += 1
        return True, displaced

    def release(self, connection: P) -> None:
        """Forget ``connection`` (upgraded or gone); a no-op if it was never admitted."""
        address = self._connections.pop(connection, None)
        if address is not None:
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]


def _bound_output(transport: asyncio.Transport, max_output_bytes: int) -> None:
    """Hold what waits for one client to ``max_output_bytes`` in the process and as much in the kernel.

    The kernel's send buffer grows by itself to megabytes for a peer that
    does not read, and socket memory counts against the pod's memory limit
    like any other: hold it to the same bound.
    """
    transport.set_write_buffer_limits(high=max_output_bytes, low=max_output_bytes // 4)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max_output_bytes)


class GuardedHTTPProtocol:
    """A header deadline and a place in ``PendingConnections``, over either of uvicorn's HTTP parsers.

    Mixed in before uvicorn's h11 or httptools protocol (``GuardedH11Protocol``,
    ``GuardedHttpToolsProtocol``): both keep the request's cycle in ``cycle``
    and the peer in ``client``, and call ``on_response_complete`` and
    ``handle_websocket_upgrade`` at the same points.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        pending: PendingConnections[GuardedHTTPProtocol],
        header_timeout: float,
        max_header_bytes: int,
        max_output_bytes: int,
        send_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)  # type: ignore[call-arg]
        self.pending = pending
        self.header_timeout = header_timeout
        self.header_timer: asyncio.TimerHandle | None = None
        self.max_header_bytes = max_header_bytes
        # Bytes received since the last request was complete, while its
        # successor's headers are not: all of them are header bytes.
        self.header_bytes = 0
        self.max_output_bytes = max_output_bytes
        self.send_timeout = send_timeout
        self.stall_timer: asyncio.TimerHandle | None = None
        self.upgraded = False

    @property
    def awaiting_request(self) -> bool:
        """Waiting for a request's headers (not serving one, not upgraded)."""
        return not self.upgraded and (self.cycle is None or self.cycle.response_complete)

    @property
    def receiving_body(self) -> bool:
        """Serving a request whose body has not all arrived."""
        return not self.upgraded and self.cycle is not None and self.cycle.more_body

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        _bound_output(transport, self.max_output_bytes)
        address = self.client[0] if self.client else ""
        admitted, displaced = self.pending.admit(self, address)
        if displaced is not None:
            displaced.refuse(_TIMEOUT_RESPONSE)
        if not admitted:
            self.refuse(_BUSY_RESPONSE)
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self._disarm_stall_timer()
        self.pending.release(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        # Counted after parsing: a read that completes the headers may carry a
        # body too, and only bytes that leave the headers incomplete count.
        if not self.awaiting_request:
            self.header_bytes = 0
            return
        self.header_bytes += len(data)
        if self.header_bytes > self.max_header_bytes and not self.transport.is_closing():
            logger.info("refusing a request whose headers passed %d bytes", self.max_header_bytes)
            self.refuse(_HEADERS_TOO_LARGE_RESPONSE)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stall_timer is None:
            self.stall_timer = self.loop.call_later(self.send_timeout, self._on_stall)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_stall_timer()

    def on_response_complete(self) -> None:
        # Armed before uvicorn looks at pipelined data, which may start the
        # next request (the timer then finds it served) or upgrade.
        if not self.transport.is_closing():
            self._arm_header_timer()
        super().on_response_complete()  # type: ignore[misc]

    def handle_websocket_upgrade(self, *event: Any) -> None:
        # From here the WebSocket protocol owns the transport and its limits.
        # (h11 passes the request event, httptools nothing.)
        self.upgraded = True
        self._disarm_header_timer()
        self.pending.release(self)
        super().handle_websocket_upgrade(*event)  # type: ignore[misc]

    def refuse(self, response: bytes) -> None:
        """Answer with ``response`` (a complete HTTP response) and close."""
        self._disarm_header_timer()
        self.pending.release(self)
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _on_header_timeout(self) -> None:
        """The deadline passed: refuse a request still arriving (its app sees a disconnect)."""
        self.header_timer = None
        if self.awaiting_request or (self.receiving_body and not self.cycle.response_started):
            self.refuse(_TIMEOUT_RESPONSE)
        elif self.receiving_body:
            self.transport.abort()  # answered before its body came: no room for a 408

    def _disarm_stall_timer(self) -> None:
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None

    def _on_stall(self) -> None:
        """The client took nothing of a response for ``send_timeout``: drop it.

        Aborting discards the buffer (closing would wait for it to drain); the
        app's pending and next sends return at once and its next receive is a
        disconnect, so a streamed reply stops and its turn is cancelled.
        """
        self.stall_timer = None
        logger.info(
            "dropping an HTTP response: nothing sent for %ss, %d bytes waiting",
            self.send_timeout,
            self.transport.get_write_buffer_size(),
        )
        self.transport.abort()

    # Set by uvicorn's protocol class this is mixed into.
    cycle: Any
    client: tuple[str, int] | None
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop


class GuardedH11Protocol(GuardedHTTPProtocol, H11Protocol):
    """``GuardedHTTPProtocol`` over h11 (pure Python)."""


@functools.cache
def _httptools_protocol() -> type[GuardedHTTPProtocol]:
    """``GuardedHTTPProtocol`` over httptools; ImportError when it is not installed."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(GuardedHTTPProtocol, HttpToolsProtocol):
        """``GuardedHTTPProtocol`` over httptools (C), with pipelining bounded.

        httptools parses every request a read holds, and uvicorn queues those
        that arrive while one is served; after each response it read on,
        though requests were still queued. A client that sent requests back
        to back and never read grew the process by a hundred megabytes a
        second. Now reading stays off while requests are queued (as with
        h11, which takes one request at a time), and a read that holds more
        than ``_MAX_PIPELINED_REQUESTS`` refuses the connection.
        """

        pipeline_full = False

        def on_headers_complete(self) -> None:
            if len(self.pipeline) >= _MAX_PIPELINED_REQUESTS:
                # Stops the parser; uvicorn answers it with send_400_response.
                self.pipeline_full = True
                raise _PipelineFull
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.pipeline and not self.transport.is_closing():
                self.flow.pause_reading()

        def send_400_response(self, msg: str) -> None:
            if not self.pipeline_full:
                super().send_400_response(msg)
                return
            logger.info("refusing a connection with over %d pipelined requests", _MAX_PIPELINED_REQUESTS)
            self.pipeline.clear()
            self.refuse(_TOO_MANY_PIPELINED_RESPONSE)

    return GuardedHttpToolsProtocol


class _PipelineFull(Exception):
    """A read held more pipelined requests than a connection may queue."""


class _Inbox:
    """The part of ``asyncio.Queue`` uvicorn's WebSocket protocol uses, for one reader.

    Holds a handful of events at most (uvicorn stops reading the socket while
    the app has not taken the previous frame), so a list does. ``get`` is
    awaited by the connection's ASGI task only; cancelling it loses nothing.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Message) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Message:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Flag:
    """The part of ``asyncio.Event`` uvicorn uses for "the socket is writable".

    Any number of tasks may ``wait`` (a connection's reader and its ASGI task
    both send); each cancelled waiter is simply forgotten.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with bounded output.

    Two independent reasons stop reading from the client: uvicorn's own (the
    app has not taken the previous frame) and ours (output is backed up).
    Reading resumes only when neither holds.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_output_bytes: int,
        send_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.max_output_bytes = max_output_bytes
        self.send_timeout = send_timeout
        self.output_blocked = False
        self.stall_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _bound_output(self.transport, self.max_output_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.output_blocked = True
        if not self.transport.is_closing():
            self.transport.pause_reading()
        if self.stall_timer is None:
            self.stall_timer = self.loop.call_later(self.send_timeout, self._on_stall)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.output_blocked = False
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        if not self.read_paused and not self.close_sent and not self.transport.is_closing():
            self.transport.resume_reading()

    async def receive(self) -> Message:  # type: ignore[override]
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.output_blocked:
                self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:  # type: ignore[override]
        await super().send(message)
        if message["type"] == "websocket.accept":
            # Only the handshake reads them; a connection lives for hours.
            # The request's headers are emptied in place: the frame of the
            # WebSocket parser's generator still holds the request itself.
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.close":
            self._drop_later()

    def handle_cont(self, event: Frame) -> None:
        """A fragment counts at least ``_FRAGMENT_BYTES`` against the message bound.

        The library bounds the bytes of a message, not the number of its
        fragments: a message of endless empty fragments (six bytes each on
        the wire) grew a list by an entry each, without end.
        """
        if self.close_sent:
            return
        bound = self.conn.max_message_size
        if bound is not None and len(self.frames) * _FRAGMENT_BYTES > bound:
            self.frames = []
            self._refuse(CloseCode.MESSAGE_TOO_BIG, "message in too many fragments")
            return
        super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, except that text which is not UTF-8 is the client's error.

        uvicorn closed such a connection 1007 too, but logged it as a server
        error with a traceback.
        """
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                message: Message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self._refuse(CloseCode.INVALID_DATA, "text is not UTF-8")
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.queue.put_nowait(message)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _refuse(self, code: CloseCode, reason: str) -> None:
        """Close for a frame the client should not have sent, as for a frame too large."""
        self.conn.fail(code, reason)
        self.handle_parser_exception()

    def handle_ping(self) -> None:
        if self.close_sent:
            self.conn.data_to_send()  # the pong: nobody is listening any more
            return
        super().handle_ping()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._drop_later()

    def _on_stall(self) -> None:
        """The client took nothing for ``send_timeout``: close 1008, then drop.

        The close frame goes after what is already buffered, followed by a
        half-close, and the client's input is read and discarded from then
        on: closing a socket with unread input would reset it, and the client
        would lose the close frame it may yet read.
        """
        self.stall_timer = None
        if self.close_sent or self.transport.is_closing():
            self._drop_later()
            return
        logger.info(
            "closing a WebSocket: nothing sent for %ss, %d bytes waiting",
            self.send_timeout,
            self.transport.get_write_buffer_size(),
        )
        self.stop_keepalive()
        try:
            self.conn.send_close(CloseCode.POLICY_VIOLATION, _NOT_READING)
        except InvalidState:
            pass
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.write_eof()
        self.close_sent = True
        # The app's next receive ends the connection; its pending and next
        # sends fail at once instead of waiting on the full buffer.
        self.queue.put_nowait(
            {
                "type": "websocket.disconnect",
                "code": CloseCode.POLICY_VIOLATION,
                "reason": _NOT_READING,
            }
        )
        self.disconnected = True
        self.writable.set()
        self.read_paused = False
        self.transport.resume_reading()
        self._drop_later()

    def _drop_later(self) -> None:
        """Abort the socket once the client takes nothing for ``send_timeout``.

        This takes the place of uvicorn's close timer, which closes the
        transport — and closing waits until the buffer is written, which for a
        client that does not read is never; aborting discards it. A client
        still reading what was sent before the close frame is given up to
        ``_CLOSE_ROUNDS`` send timeouts to reach it. uvicorn still cancels the
        timer when the client answers the close frame.
        """
        if self.close_timer is not None:
            self.close_timer.cancel()
        self._check_drain_later(_unacknowledged(self.transport), _CLOSE_ROUNDS)

    def _check_drain_later(self, waiting: int, rounds: int) -> None:
        self.close_timer = self.loop.call_later(
            self.send_timeout, self._drop_unless_draining, waiting, rounds
        )

    def _drop_unless_draining(self, waiting_before: int, rounds: int) -> None:
        waiting = _unacknowledged(self.transport)
        if 0 < waiting < waiting_before and rounds > 1:
            self._check_drain_later(waiting, rounds - 1)
            return
        logger.info(
            "dropping a closed WebSocket: %d bytes not taken, %d in the last %ss",
            waiting,
            waiting_before - waiting,
            self.send_timeout,
        )
        self.transport.abort()


def _unacknowledged(transport: asyncio.Transport) -> int:
    """Bytes written to a client that it has not taken yet.

    The transport's own buffer, plus on Linux the kernel's send queue: a slow
    reader drains the kernel's queue long before the transport's buffer
    moves, and that is progress too.
    """
    waiting = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None and hasattr(termios, "TIOCOUTQ"):
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
        except OSError:
            return waiting
        waiting += int.from_bytes(queued, sys.byteorder, signed=True)
    return waiting


def uvicorn_limits(config: FacadeConfig) -> dict[str, Any]:
    """uvicorn's own settings that the guards rely on, as ``uvicorn.Config`` keywords."""
    return {"h11_max_incomplete_event_size": config.max_request_header_bytes + _H11_MARGIN_BYTES}


def protocols(
    config: FacadeConfig, *, http_parser: HttpParser = "h11"
) -> tuple[Callable[..., GuardedHTTPProtocol], Callable[..., WebSocketsSansIOProtocol]]:
    """The (HTTP, WebSocket) protocol factories for one server, sharing one pending table.

    ``http_parser`` is uvicorn's HTTP protocol to guard: ``h11`` (pure
    Python) or ``httptools`` (C, see ``omnia.speedups``).
    """
    http_class = GuardedH11Protocol if http_parser == "h11" else _httptools_protocol()
    pending: PendingConnections[GuardedHTTPProtocol] = PendingConnections(
        limit=config.max_pending_connections,
        per_address=config.max_pending_connections_per_address,
    )
    http = functools.partial(
        http_class,
        pending=pending,
        header_timeout=config.request_header_timeout_seconds,
        max_header_bytes=config.max_request_header_bytes,
        max_output_bytes=config.max_output_buffer_bytes,
        send_timeout=config.send_timeout_seconds,
    )
    websocket = functools.partial(
        GuardedWebSocketProtocol,
        max_output_bytes=config.max_output_buffer_bytes,
        send_timeout=config.send_timeout_seconds,
    )
    return http, websocket
