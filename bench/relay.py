"""Relay, connection-rate and idle-connection benchmarks of one agent pod, against a floor.

    python bench/relay.py [--quick] [--relay-only]

The floor is a bare ``websockets`` server (no Omnia, no gRPC, no store) that
answers the same client with the same frames: on connect a ``connected``
frame, and on each ``message`` the very frames the pod sent for its first
turn, replayed. Both run in the same run, so the ratios hold on a busy
machine when the absolute figures do not. Where the machine has two cores or
more, the servers are pinned to core 0 and the load client to core 1.

(a) relay: N concurrent sessions, each sending turns through
    facade → gRPC → runtime, where the ``mock`` model streams K = 32 chunks,
    either instantly (every millisecond measured is the platform's own
    overhead; chunks produced faster than they are relayed are merged) or
    1 ms apart (a fast model: each chunk travels as its own frame). Each
    case runs over WebSockets (``/ws``, one connection per session) and
    over the OpenAI-compatible endpoint (``POST /v1/chat/completions`` with
    ``stream: true`` and ``X-Omnia-Session``: one kept session per client,
    one keep-alive HTTP connection per session, one request per turn).
    Prints turns/s, per-turn latency (send → done, or → ``[DONE]``)
    p50/p99, chunk frames (or events) per turn and the servers' CPU time per
    turn (facade + runtime, from /proc); for ``/ws`` with the instant model
    the floor's CPU per turn and the ratio, then the same for the floor with
    a gRPC hop (``+gRPC``: the bare server forwards each message over the
    runtime's proto to a bare servicer in a second process, as the design
    puts facade and runtime in two containers), and for the OpenAI endpoint its
    turns/s and p50 as multiples of those of ``/ws`` in the same run.
(b) connection rate: connections opened per second to one facade (upgrade
    until the ``connected`` frame), 64 in flight, and the servers' CPU per
    connection (steadier than the rate on a busy machine); and the floor's.
(c) idle: facade + runtime resident memory per open, idle connection at
    1,000 and 10,000 connections; and the floor's.

Every phase runs the pod twice when uvloop and httptools are installed:
with ``OMNIA_SPEEDUPS=off`` (asyncio and h11, pure Python) and with
``auto`` (uvloop and httptools), in the same run.

The pod's pending-connection caps are off: every client comes from one
address, and a plain HTTP connection (the OpenAI endpoint's) counts as
pending for as long as it is open, since it never upgrades. A case of (a)
that cannot run (a timeout on an overloaded machine) prints as failed and
the run goes on. ``--relay-only`` runs (a) alone. Everything runs on
loopback. Counts and time are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from omnia.config import AgentConfig, FacadeConfig, MockScript, ProviderConfig, ScriptedReply
from omnia.facade.openai_compat import SESSION_HEADER

CHUNKS = 32
CHUNK_TEXT = "word "
REPLY = CHUNK_TEXT * CHUNKS
RATE_IN_FLIGHT = 64
SERVER_CORES = {0}
CLIENT_CORES = {1}

FLOOR_SERVER = """
import asyncio, json, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

port, frames_path = int(sys.argv[1]), sys.argv[2]
REPLY = json.load(open(frames_path))
CONNECTED = json.dumps({"type": "connected", "session_id": "0" * 32, "agent": "floor",
                        "protocol_version": "1", "prompt_version": "1", "resumed": False, "turns": 0})

async def handler(ws):
    try:
        await ws.send(CONNECTED)
        async for message in ws:
            if json.loads(message).get("type") == "message":
                for frame in REPLY:
                    await ws.send(frame)
    except ConnectionClosed:
        pass

async def main():
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                     max_size=4 * 65536, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

# The floor with the design's process boundary: the same bare ``websockets``
# server, but each message goes over gRPC (the runtime's own proto, one
# bidirectional ``Converse`` stream per connection, opened at the first
# message as the facade does) to a bare servicer that answers the very
# events the runtime sent for the first turn; the WebSocket side sends the
# recorded frames for them. What it costs over the floor is the gRPC hop
# alone: no agent, no store, no auth, no metrics.
HOP_RUNTIME = """
import asyncio, sys
import grpc
from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb, runtime_pb2_grpc as pb_grpc

address, reply = sys.argv[1], sys.argv[2]
CHUNK = pb.ServerEvent(chunk=pb.Chunk(content=reply, message_id="m"))
DONE = pb.ServerEvent(done=pb.Done(finish_reason="stop", usage=pb.Usage(input_tokens=1, output_tokens=32),
                                   turn_index=0, message_id="m", provider="mock", model="mock"))
OPENED = pb.ServerEvent(opened=pb.Opened(session_id="0" * 32, agent="floor", prompt_version="1"))

class Servicer(pb_grpc.AgentRuntimeServicer):
    async def Converse(self, requests, context):
        async for event in requests:
            kind = event.WhichOneof("event")
            if kind == "open":
                yield OPENED
            elif kind == "message":
                yield CHUNK
                yield DONE

async def main():
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AgentRuntimeServicer_to_server(Servicer(), server)
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""

HOP_FACADE = """
import asyncio, json, sys
import grpc
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb, runtime_pb2_grpc as pb_grpc

port, frames_path, address = int(sys.argv[1]), sys.argv[2], sys.argv[3]
FRAMES = json.load(open(frames_path))
CHUNK_FRAMES, DONE_FRAME = FRAMES[:-1], FRAMES[-1]
CONNECTED = json.dumps({"type": "connected", "session_id": "0" * 32, "agent": "floor",
                        "protocol_version": "1", "prompt_version": "1", "resumed": False, "turns": 0})
OPEN = pb.ClientEvent(open=pb.Open(session_id="0" * 32, create=True))

async def handler(ws, stub):
    call = None
    try:
        await ws.send(CONNECTED)
        async for message in ws:
            content = json.loads(message)
            if content.get("type") != "message":
                continue
            if call is None:
                call = stub.Converse()
                await call.write(OPEN)
                await call.read()
            await call.write(pb.ClientEvent(message=pb.UserMessage(content=content["content"])))
            while True:
                event = await call.read()
                if event.WhichOneof("event") == "done":
                    await ws.send(DONE_FRAME)
                    break
                for frame in CHUNK_FRAMES:
                    await ws.send(frame)
    except ConnectionClosed:
        pass
    finally:
        if call is not None:
            call.cancel()

async def main():
    channel = grpc.aio.insecure_channel(address)
    stub = pb_grpc.AgentRuntimeStub(channel)
    async with serve(lambda ws: handler(ws, stub), "127.0.0.1", port, compression=None, ping_interval=None,
                     max_size=4 * 65536, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pin(pid: int, cores: set[int]) -> None:
    """Pin a process to ``cores`` when the machine has them (else leave it be)."""
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, cores)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pod:
    """Runtime and facade processes on loopback, as ``omnia run`` starts them."""

    def __init__(
        self,
        workdir: Path,
        *,
        chunk_delay_ms: int = 0,
        speedups: str = "auto",
        launcher: list[str] | None = None,
        facade: FacadeConfig | None = None,
    ) -> None:
        """``speedups`` is ``OMNIA_SPEEDUPS``; ``launcher`` runs ``omnia`` (default ``python -m omnia``).

        ``launcher`` is given the process's name (``facade`` or ``runtime``)
        as its next argument, before the command's. ``facade`` replaces the
        relay benchmark's limits (caps off, rates unlimited).
        """
        script = MockScript(
            replies=[ScriptedReply(text=REPLY, chunk_size=len(CHUNK_TEXT), chunk_delay_ms=chunk_delay_ms)]
        )
        config = AgentConfig(
            name="bench",
            provider=ProviderConfig(type="mock", mock=script),
            facade=facade or FacadeConfig(
                max_connections=20_000, messages_per_second=1e6, message_burst=1_000_000,
                # Every client of the benchmark comes from one address, and
                # a thousand connect at once to a loaded machine; the OpenAI
                # endpoint's HTTP connections count as pending for as long as
                # they are open, since they never upgrade (docs/protocols.md).
                max_pending_connections_per_address=0,
                max_pending_connections=0,
                request_header_timeout_seconds=120,
            ),
        )
        path = workdir / "agent.json"
        # Only what differs from the defaults, so an older version's pod
        # (bench/compare_relay.py) reads it too.
        path.write_text(config.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True))
        self.port = _free_port()
        address = f"unix://{workdir}/runtime.sock"
        env = {**os.environ, "OMNIA_LOG_LEVEL": "error", "OMNIA_SPEEDUPS": speedups}

        def command(name: str) -> list[str]:
            return [*launcher, name, name] if launcher else [sys.executable, "-m", "omnia", name]

        self.runtime = subprocess.Popen([*command("runtime"), "--config", str(path), "--listen", address], env=env)
        self.facade = subprocess.Popen(
            [*command("facade"), "--config", str(path), "--runtime", address, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
        )
        self.pids = (self.facade.pid, self.runtime.pid)
        for pid in self.pids:
            _pin(pid, SERVER_CORES)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the pod did not become ready")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        for process in (self.facade, self.runtime):
            process.send_signal(signal.SIGKILL)
            process.wait()


class HopFloor:
    """The floor with a gRPC hop: ``HOP_FACADE`` in front of ``HOP_RUNTIME``."""

    def __init__(self, workdir: Path, *, frames: list[str]) -> None:
        path = workdir / "hop-frames.json"
        path.write_text(json.dumps(frames))
        self.port = _free_port()
        address = f"unix://{workdir}/hop.sock"
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-c", HOP_RUNTIME, address, REPLY], stdout=subprocess.PIPE, text=True
            )
        ]
        try:
            self._ready(self.processes[0])
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOP_FACADE, str(self.port), str(path), address],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            self._ready(self.processes[1])
        except BaseException:
            self.stop()
            raise
        self.pids = tuple(process.pid for process in self.processes)

    @staticmethod
    def _ready(process: subprocess.Popen) -> None:
        _pin(process.pid, SERVER_CORES)
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the gRPC-hop floor did not start")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGKILL)
            process.wait()


class Floor:
    """A bare ``websockets`` server replaying ``frames`` for every message."""

    def __init__(self, workdir: Path, *, frames: list[str]) -> None:
        path = workdir / "floor-frames.json"
        path.write_text(json.dumps(frames))
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, str(self.port), str(path)], stdout=subprocess.PIPE, text=True
        )
        self.pids = (self.process.pid,)
        _pin(self.process.pid, SERVER_CORES)
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the floor server did not start")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


async def first_turn_frames(url: str) -> list[str]:
    """The frames, as sent, of one turn: what the floor replays."""
    async with connect(url, max_size=None, compression=None, proxy=None) as ws:
        await ws.recv()
        await ws.send('{"type":"message","content":"go"}')
        frames = []
        while True:
            text = await ws.recv()
            frames.append(text)
            if json.loads(text)["type"] == "done":
                return frames


async def _session(url: str, turns: int, latencies: list[float], frames: list[int]) -> None:
    async with connect(url, max_size=None, compression=None, proxy=None, open_timeout=60) as ws:
        json.loads(await ws.recv())
        for _ in range(turns):
            started = time.perf_counter()
            await ws.send('{"type":"message","content":"go"}')
            text = []
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "chunk":
                    text.append(frame["content"])
                elif frame["type"] == "done":
                    break
                else:
                    raise RuntimeError(f"unexpected frame {frame}")
            if "".join(text) != REPLY:
                raise RuntimeError(f"the reply arrived damaged: {''.join(text)!r}")
            latencies.append(time.perf_counter() - started)
            frames.append(len(text))


class _HttpConnection:
    """A minimal HTTP/1.1 keep-alive client for the OpenAI endpoint's event streams.

    Lean like the WebSocket client, so that the figures measure the facade and
    not a client library (httpx costs several milliseconds of CPU per request
    on a small machine, which the facade would then be charged for).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def stream(self, body: bytes, headers: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """POST a streaming completion; (response headers, the data of each event)."""
        lines = [
            "POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = (await self.reader.readline()).decode()
        response_headers = {}
        while (line := (await self.reader.readline()).decode().strip()):
            name, _, value = line.partition(":")
            response_headers[name.lower()] = value.strip()
        if " 200 " not in status or response_headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"unexpected response {status.strip()} {response_headers}")
        text = bytearray()
        while size := int((await self.reader.readline()).strip(), 16):
            text += await self.reader.readexactly(size + 2)
            del text[-2:]
        await self.reader.readline()
        events = [event.removeprefix("data: ") for event in text.decode().split("\n\n") if event.startswith("data: ")]
        return response_headers, events

    def close(self) -> None:
        self.writer.close()


async def _openai_session(port: int, turns: int, latencies: list[float], frames: list[int]) -> None:
    """Turns of one kept session over the OpenAI endpoint, streamed as server-sent events."""
    connection = await _HttpConnection.open(port)
    session = ""
    body = json.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
    try:
        for _ in range(turns):
            started = time.perf_counter()
            headers, events = await connection.stream(body, {SESSION_HEADER: session} if session else {})
            session = headers[SESSION_HEADER.lower()]
            if events[-1] != "[DONE]":
                raise RuntimeError(f"the stream did not end with [DONE]: {events[-1]!r}")
            text = []
            for data in events[:-1]:
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"error event {event}")
                content = event["choices"][0]["delta"].get("content")
                if content:
                    text.append(content)
            if "".join(text) != REPLY:
                raise RuntimeError(f"the reply arrived damaged: {''.join(text)!r}")
            latencies.append(time.perf_counter() - started)
            frames.append(len(text))
    finally:
        connection.close()


Session = Callable[[int, list[float], list[int]], Awaitable[None]]


async def relay(session: Session, pids: tuple[int, ...], *, sessions: int, turns: int) -> dict:
    """``sessions`` concurrent ``session(turns, latencies, frames)``; CPU of ``pids`` over the phase."""
    latencies: list[float] = []
    frames: list[int] = []
    cpu = sum(_cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(session(turns, latencies, frames) for _ in range(sessions))), 600)
    elapsed = time.perf_counter() - started
    cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu
    ordered = sorted(latencies)
    return {
        "sessions": sessions,
        "turns": len(latencies),
        "turns_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "chunk_frames": statistics.mean(frames),
        "cpu_ms_per_turn": 1000 * cpu / len(latencies),
    }


class _Upgrade(asyncio.Protocol):
    """A bare WebSocket client: one fixed upgrade request, then wait for ``connected``.

    The Python ``websockets`` client costs more CPU per handshake than the
    servers measured here, so the rate and idle phases speak the opening
    handshake directly and hold the socket.
    """

    def __init__(self, request: bytes, opened: asyncio.Future) -> None:
        self.request = request
        self.opened = opened
        self.received = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b'"connected"' in self.received and not self.opened.done():
            self.received = b""
            self.opened.set_result(None)
        elif b" 101 " not in self.received[:16] and b"\r\n" in self.received and not self.opened.done():
            self.opened.set_exception(RuntimeError(self.received.split(b"\r\n", 1)[0].decode()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before connected"))


async def _open(port: int) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    opened = loop.create_future()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    transport, _ = await loop.create_connection(lambda: _Upgrade(request, opened), "127.0.0.1", port)
    try:
        await asyncio.wait_for(opened, 120)
    except BaseException:
        transport.abort()
        raise
    return transport


async def connection_rate(port: int, *, count: int, pids: tuple[int, ...] = ()) -> tuple[float, float]:
    """(connections opened per second, server CPU ms per connection), ``RATE_IN_FLIGHT`` at a time.

    A connection counts once its ``connected`` frame arrived. The CPU is that
    of ``pids`` (user + system, from /proc) over the phase: on a busy machine
    it moves far less between runs than the rate does.
    """
    opened: list[asyncio.Transport] = []
    slots = asyncio.Semaphore(RATE_IN_FLIGHT)

    async def one() -> None:
        async with slots:
            opened.append(await _open(port))

    cpu = sum(_cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
        return count / elapsed, 1000 * (sum(_cpu_seconds(pid) for pid in pids) - cpu) / count
    finally:
        for transport in opened:
            transport.abort()
        await asyncio.sleep(1)


async def idle(port: int, pids: tuple[int, ...], *, counts: list[int]) -> list[dict]:
    """Resident memory of ``pids`` (summed) per open idle connection, at each count."""
    results = []
    open_connections: list[asyncio.Transport] = []
    baseline = [_rss_mib(pid) for pid in pids]
    try:
        for target in counts:
            while len(open_connections) < target:
                batch = min(250, target - len(open_connections))
                open_connections.extend(await asyncio.gather(*(_open(port) for _ in range(batch))))
            await asyncio.sleep(2)
            rss = [_rss_mib(pid) for pid in pids]
            results.append(
                {
                    "connections": target,
                    "rss_mib": rss,
                    "per_connection_kib": [(now - base) * 1024 / target for now, base in zip(rss, baseline)],
                }
            )
    finally:
        for transport in open_connections:
            transport.abort()
    return [{"baseline_mib": baseline}, *results]


def _relay_row(
    label: str, speedups: str, protocol: str, session: Session, pids: tuple[int, ...], sessions: int, turns: int
) -> dict | None:
    """One case of (a) with its printed line; a case that could not run is printed as failed, not hidden."""
    try:
        result = asyncio.run(relay(session, pids, sessions=sessions, turns=turns))
    except Exception as exc:
        print(f"{label:>12} {speedups:>8} {protocol:>8} {sessions:>9} failed: {exc!r}"[:300], flush=True)
        return None
    result["line"] = (
        f"{label:>12} {speedups:>8} {protocol:>8} {result['sessions']:>9} {result['turns']:>7} {result['turns_per_s']:>9.0f}"
        f" {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} {result['chunk_frames']:>12.1f}"
        f" {result['cpu_ms_per_turn']:>12.3f}"
    )
    return result


def _ratio(value: float, floor: float) -> str:
    """``value`` as a multiple of ``floor``; CPU time is counted in clock ticks, so a short run may read 0."""
    return f"{value / floor:>5.1f}x" if floor > 0 else "   n/a"


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores, {model}, {memory_kib / 1024 / 1024:.0f} GiB, Python {platform.python_version()};"
        f" load average {load:.1f} at the start"
    )


def _variants() -> list[str]:
    """``OMNIA_SPEEDUPS`` values to compare: ``off`` always, ``auto`` too when uvloop and httptools are installed."""
    installed = all(importlib.util.find_spec(module) is not None for module in ("uvloop", "httptools"))
    return ["off", "auto"] if installed else ["off"]


def _variant_label(speedups: str) -> str:
    return "uvloop+httptools" if speedups == "auto" else "pure Python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--relay-only", action="store_true", help="run (a) alone, not the connection rate and idle phases")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _pin(os.getpid(), CLIENT_CORES)

    plan = [(1, 200), (100, 20)] if not args.quick else [(1, 100), (10, 20)]
    idle_counts = [1000, 10000] if not args.quick else [100]
    rate_count = 5000 if not args.quick else 300
    variants = _variants()
    pinned = "servers on core 0, client on core 1" if (os.cpu_count() or 1) >= 2 else "not pinned (one core)"
    print(f"machine: {machine()}; {pinned}")
    print(f"pod variants (OMNIA_SPEEDUPS): {', '.join(f'{v} = {_variant_label(v)}' for v in variants)}")
    with tempfile.TemporaryDirectory() as workdir:
        print("(a) relay")
        print(
            f"{'model':>12} {'speedups':>8} {'protocol':>8} {'sessions':>9} {'turns':>7} {'turns/s':>9} {'p50 ms':>8}"
            f" {'p99 ms':>8} {'frames/turn':>12} {'CPU ms/turn':>12} {'floor CPU':>10} {'ratio':>6}"
            f" {'+gRPC CPU':>10} {'ratio':>6} {'turns/s vs ws':>14} {'p50 vs ws':>10}"
        )
        for label, delay in (("instant", 0), ("1 ms/chunk", 1)):
            for variant in variants:
                pod = Pod(Path(workdir), chunk_delay_ms=delay, speedups=variant)
                floors: list[Floor | HopFloor] = []
                try:
                    if delay == 0:
                        frames = asyncio.run(first_turn_frames(pod.ws_url))
                        floors.append(Floor(Path(workdir), frames=frames))
                        floors.append(HopFloor(Path(workdir), frames=frames))
                    for sessions, turns in plan:
                        ws = _relay_row(label, variant, "/ws", functools.partial(_session, pod.ws_url), pod.pids, sessions, turns)
                        for floor in floors if ws is not None else ():
                            base = asyncio.run(
                                relay(functools.partial(_session, floor.ws_url), floor.pids, sessions=sessions, turns=turns)
                            )
                            ws["line"] += f" {base['cpu_ms_per_turn']:>10.3f} {_ratio(ws['cpu_ms_per_turn'], base['cpu_ms_per_turn'])}"
                        if ws is not None:
                            print(ws["line"], flush=True)
                        openai = _relay_row(
                            label, variant, "openai", functools.partial(_openai_session, pod.port), pod.pids, sessions, turns
                        )
                        if openai is not None:
                            if ws is not None:
                                openai["line"] += (
                                    f" {'-':>10} {'-':>6} {'-':>10} {'-':>6} {openai['turns_per_s'] / ws['turns_per_s']:>14.2f}"
                                    f" {openai['p50_ms'] / ws['p50_ms']:>10.2f}"
                                )
                            print(openai["line"], flush=True)
                finally:
                    pod.stop()
                    for floor in floors:
                        floor.stop()
        if args.relay_only:
            return

        rates = {}
        for variant in variants:
            pod = Pod(Path(workdir), speedups=variant)
            try:
                rates[variant] = asyncio.run(connection_rate(pod.port, count=rate_count, pids=pod.pids))
            finally:
                pod.stop()
        floor = Floor(Path(workdir), frames=[])
        try:
            floor_rate, floor_cpu = asyncio.run(connection_rate(floor.port, count=rate_count, pids=floor.pids))
        finally:
            floor.stop()
        print(f"(b) connections opened per second ({rate_count}, {RATE_IN_FLIGHT} in flight, new sessions)")
        for variant, (rate, cpu) in rates.items():
            print(
                f"  omnia {_variant_label(variant)}: {rate:.0f}/s, omnia/floor {rate / floor_rate:.2f};"
                f" server CPU {cpu:.3f} ms/connection, {_ratio(cpu, floor_cpu).strip()} the floor's"
            )
        print(f"  floor: {floor_rate:.0f}/s, {floor_cpu:.3f} ms/connection")

        idle_rows = {}
        for variant in variants:
            pod = Pod(Path(workdir), speedups=variant)
            try:
                idle_rows[variant] = asyncio.run(idle(pod.port, pod.pids, counts=idle_counts))
            finally:
                pod.stop()
        floor = Floor(Path(workdir), frames=[])
        try:
            floor_rows = asyncio.run(idle(floor.port, floor.pids, counts=idle_counts))
        finally:
            floor.stop()
    print("(c) idle connections (new sessions that have not sent a message)")
    print(
        f"{'speedups':>17} {'connections':>12} {'facade MiB':>11} {'runtime MiB':>12} {'KiB/conn':>9}"
        f" {'(facade':>8} {'runtime)':>9} {'floor KiB/conn':>15} {'ratio':>6}"
    )
    for variant, rows in idle_rows.items():
        facade_base, runtime_base = rows[0]["baseline_mib"]
        for row, floor_row in zip(rows[1:], floor_rows[1:]):
            facade_kib, runtime_kib = row["per_connection_kib"]
            floor_kib = floor_row["per_connection_kib"][0]
            print(
                f"{_variant_label(variant):>17} {row['connections']:>12} {row['rss_mib'][0]:>11.1f} {row['rss_mib'][1]:>12.1f}"
                f" {facade_kib + runtime_kib:>9.1f} {facade_kib:>8.1f} {runtime_kib:>9.1f}"
                f" {floor_kib:>15.1f} {_ratio(facade_kib + runtime_kib, floor_kib)}"
            )
        print(f"{'':>17} baseline RSS: facade {facade_base:.1f} MiB, runtime {runtime_base:.1f} MiB")
    print(f"{'':>17} floor baseline RSS: {floor_rows[0]['baseline_mib'][0]:.1f} MiB")


if __name__ == "__main__":
    main()
