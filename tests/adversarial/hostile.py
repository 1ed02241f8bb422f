"""Hostile clients: raw sockets that speak just enough HTTP and WebSocket to hurt.

A well-behaved client library reads what the server sends and answers pings;
these do neither. The handshake and the server's frames go through the
``websockets`` sans-I/O client protocol; what the client *sends* during an
attack is written as raw bytes, so nothing in the client slows the attack down.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

# Small enough that the client's kernel stops accepting the server's output
# after a few kilobytes, so whatever the server writes next piles up in the
# server's own memory.
TINY_RECEIVE_BUFFER = 4096
_ZERO_MASK = b"\x00\x00\x00\x00"


def raw_socket(
    port: int, *, source: str = "127.0.0.1", receive_buffer: int | None = None
) -> socket.socket:
    """A TCP connection to the facade from ``source`` (any 127.0.0.0/8 address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Before connect, so that the window the kernel advertises is small too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def client_frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (a zero mask: valid, and nothing to compute).

    ``fin=False`` makes it a fragment of a message that goes on.
    """
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + _ZERO_MASK + payload


class RawWebSocket:
    """A WebSocket client that writes raw frames and reads only when told to."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol, *, pending: list | None = None) -> None:
        self.sock = sock
        self.protocol = protocol
        # Frames that came in the same read as the handshake's response (the
        # server sends ``connected`` right after it): read before the socket.
        self.pending = pending or []

    @classmethod
    def connect(
        cls, port: int, *, source: str = "127.0.0.1", receive_buffer: int | None = None
    ) -> RawWebSocket:
        sock = raw_socket(port, source=source, receive_buffer=receive_buffer)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        protocol.send_request(protocol.connect())
        sock.sendall(b"".join(protocol.data_to_send()))
        while True:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            protocol.receive_data(data)
            events = protocol.events_received()
            for index, event in enumerate(events):
                if isinstance(event, Response):
                    if event.status_code != 101:
                        raise ConnectionError(f"upgrade refused: {event.status_code}")
                    return cls(sock, protocol, pending=events[index + 1 :])

    def flood(self, frame: bytes, *, seconds: float, batch: int = 1 << 16) -> int:
        """Send ``frame`` over and over for ``seconds`` without reading; bytes sent.

        Keeps trying while the server does not read (a hostile client does
        not give up); stops early only when the server drops the connection.
        """
        burst = frame * max(1, batch // len(frame))
        self.sock.settimeout(0.2)
        sent = offset = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                count = self.sock.send(burst[offset:])
            except TimeoutError:
                continue
            except ConnectionError:
                break
            sent += count
            offset = (offset + count) % len(burst)
        return sent

    def close_code(self, *, timeout: float = 15.0, slow_for: float = 0.0) -> int | None:
        """Read everything the server sent until its close frame; its code.

        For the first ``slow_for`` seconds it reads as a slow link would, 4 KiB
        every 50 ms. None when the connection ended without a close frame
        (reset or bare EOF).
        """
        for event in self._take_pending():
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                return Close.parse(event.data).code
        self.sock.settimeout(timeout)
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            slow = time.monotonic() < start + slow_for
            if slow:
                time.sleep(0.05)
            try:
                data = self.sock.recv(4096 if slow else 1 << 16)
            except TimeoutError:
                break
            except ConnectionError:
                return None
            if not data:
                return None
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    return Close.parse(event.data).code
        raise AssertionError(f"the server did not close within {timeout}s")

    def frames(self, *, count: int, timeout: float = 10.0) -> list[dict]:
        """The server's next ``count`` text frames, decoded."""
        return self._read_frames(lambda frames: len(frames) >= count, timeout=timeout)

    def frame_types(self, *, until: str, timeout: float = 10.0) -> list[str]:
        """The types of the server's text frames up to one of type ``until``."""
        frames = self._read_frames(lambda frames: frames[-1]["type"] == until, timeout=timeout)
        return [frame["type"] for frame in frames]

    def _read_frames(self, enough, *, timeout: float) -> list[dict]:
        self.sock.settimeout(timeout)
        frames: list[dict] = []
        events = self._take_pending()
        while True:
            for index, event in enumerate(events):
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    frames.append(json.loads(event.data))
                    if enough(frames):
                        self.pending = events[index + 1 :]
                        return frames
            data = self.sock.recv(1 << 16)
            if not data:
                raise AssertionError(f"the server closed the connection after {frames}")
            self.protocol.receive_data(data)
            events = self.protocol.events_received()

    def _take_pending(self) -> list:
        pending, self.pending = self.pending, []
        return pending

    def close(self) -> None:
        self.sock.close()


def outcome(sock: socket.socket, *, timeout: float) -> tuple[str, float]:
    """How the server ends a connection the client keeps quiet on, and after how long.

    ``("408", t)``/``("503", t)`` for an HTTP status line, ``("closed", t)``
    for EOF or a reset, ``("open", timeout)`` if nothing happened in time.
    """
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "open", timeout
    except ConnectionError:
        return "closed", time.monotonic() - started
    elapsed = time.monotonic() - started
    if data.startswith(b"HTTP/1.1 "):
        return data[9:12].decode(), elapsed
    return ("closed" if not data else "data"), elapsed


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def open_descriptors(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


class PeakRss:
    """The highest resident set size of some processes, sampled every 20 ms."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak = {pid: rss_kib(pid) for pid in pids}
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.pids:
                try:
                    self.peak[pid] = max(self.peak[pid], rss_kib(pid))
                except (FileNotFoundError, ProcessLookupError):
                    pass


@contextmanager
def peak_rss(*pids: int) -> Iterator[PeakRss]:
    sampler = PeakRss(*pids)
    thread = threading.Thread(target=sampler._sample, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        thread.join()
