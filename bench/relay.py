"""Relay and idle-connection benchmarks of one agent pod (facade + runtime).

    python bench/relay.py [--quick] [--relay-only]

(a) relay: N concurrent sessions, each sending turns through
    facade → gRPC → runtime, where the ``mock`` model streams K = 32 chunks,
    either instantly (every millisecond measured is the platform's own
    overhead; chunks produced faster than they are relayed are merged) or
    1 ms apart (a fast model: each chunk travels as its own frame). Each
    case runs twice: over WebSockets (``/ws``, one connection per session)
    and over the OpenAI-compatible endpoint (``POST /v1/chat/completions``
    with ``stream: true`` and ``X-Omnia-Session``, one request per turn, as
    many keep-alive connections as sessions). Prints turns/s, per-turn
    latency (send → done, or → ``[DONE]``) p50/p99, chunks per turn, and
    the OpenAI endpoint's turns/s and p50 relative to ``/ws``.
(b) idle: the facade's resident memory with 1,000 and 10,000 open, idle
    WebSocket connections (each also holds a runtime conversation).

Everything runs on loopback; the client runs in this process on the same
machine, so the figures include its share of the CPU. Counts and time are
bounded.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from omnia.config import AgentConfig, FacadeConfig, MockScript, ProviderConfig, ScriptedReply
from omnia.facade.openai_compat import SESSION_HEADER

CHUNKS = 32
CHUNK_TEXT = "word "
REPLY = CHUNK_TEXT * CHUNKS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pod:
    """Runtime and facade processes on loopback, as ``omnia run`` starts them."""

    def __init__(self, workdir: Path, *, chunk_delay_ms: int = 0) -> None:
        script = MockScript(
            replies=[ScriptedReply(text=REPLY, chunk_size=len(CHUNK_TEXT), chunk_delay_ms=chunk_delay_ms)]
        )
        config = AgentConfig(
            name="bench",
            provider=ProviderConfig(type="mock", mock=script),
            facade=FacadeConfig(
                max_connections=20_000,
                messages_per_second=1e6,
                message_burst=1_000_000,
                # HTTP connections count as pending until they upgrade, which
                # those of the OpenAI endpoint never do (see docs/protocols.md).
                max_pending_connections=0,
                max_pending_connections_per_address=0,
            ),
        )
        path = workdir / "agent.json"
        path.write_text(config.to_json())
        self.port = _free_port()
        address = f"unix://{workdir}/runtime.sock"
        env = {**os.environ, "OMNIA_LOG_LEVEL": "error"}
        cmd = [sys.executable, "-m", "omnia"]
        self.runtime = subprocess.Popen([*cmd, "runtime", "--config", str(path), "--listen", address], env=env)
        self.facade = subprocess.Popen(
            [*cmd, "facade", "--config", str(path), "--runtime", address, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
        )
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

    def rss_mib(self, process: subprocess.Popen) -> float:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        for process in (self.facade, self.runtime):
            process.send_signal(signal.SIGKILL)
            process.wait()


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
    not a client library (httpx costs several milliseconds of this machine's
    CPU per request, which the facade would then be charged for).
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


async def relay(pod: Pod, *, protocol: str, sessions: int, turns: int) -> dict:
    latencies: list[float] = []
    frames: list[int] = []
    started = time.perf_counter()
    if protocol == "ws":
        await asyncio.wait_for(
            asyncio.gather(*(_session(pod.ws_url, turns, latencies, frames) for _ in range(sessions))), 600
        )
    else:
        await asyncio.wait_for(
            asyncio.gather(*(_openai_session(pod.port, turns, latencies, frames) for _ in range(sessions))), 600
        )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "sessions": sessions,
        "turns": len(latencies),
        "turns_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "chunk_frames": statistics.mean(frames),
    }


async def idle(pod: Pod, *, counts: list[int]) -> list[dict]:
    results = []
    open_connections = []
    baseline = pod.rss_mib(pod.facade)
    try:
        for target in counts:
            while len(open_connections) < target:
                batch = min(250, target - len(open_connections))
                made = await asyncio.gather(
                    *(connect(pod.ws_url, compression=None, proxy=None, open_timeout=120, ping_interval=None) for _ in range(batch))
                )
                await asyncio.gather(*(ws.recv() for ws in made))
                open_connections.extend(made)
            await asyncio.sleep(1)
            rss = pod.rss_mib(pod.facade)
            results.append(
                {
                    "connections": target,
                    "facade_rss_mib": rss,
                    "per_connection_kib": (rss - baseline) * 1024 / target,
                    "runtime_rss_mib": pod.rss_mib(pod.runtime),
                }
            )
    finally:
        await asyncio.gather(*(ws.close() for ws in open_connections), return_exceptions=True)
    return [{"baseline_mib": baseline}, *results]


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores, {model}, {memory_kib / 1024 / 1024:.0f} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--relay-only", action="store_true", help="skip (b), the idle connections")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    plan = [(1, 200), (100, 20), (1000, 5)] if not args.quick else [(1, 20), (10, 5)]
    idle_counts = [1000, 10000] if not args.quick else [100]
    print(f"machine: {machine()}")
    print(
        f"{'model':>14} {'protocol':>9} {'sessions':>9} {'turns':>7} {'turns/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'chunks/turn':>12} {'turns/s vs ws':>14} {'p50 vs ws':>10}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for label, delay in (("instant", 0), ("1 ms/chunk", 1)):
            pod = Pod(Path(workdir), chunk_delay_ms=delay)
            try:
                for sessions, turns in plan:
                    baseline: dict | None = None
                    for protocol in ("ws", "openai"):
                        try:
                            result = asyncio.run(relay(pod, protocol=protocol, sessions=sessions, turns=turns))
                        except Exception as exc:  # a row that could not run is reported, not hidden
                            print(f"{label:>14} {protocol:>9} {sessions:>9} failed: {exc!r}"[:300], flush=True)
                            continue
                        if protocol == "ws":
                            baseline = result
                        ratios = (
                            f" {result['turns_per_s'] / baseline['turns_per_s']:>14.2f}"
                            f" {result['p50_ms'] / baseline['p50_ms']:>10.2f}"
                            if baseline is not None
                            else f" {'-':>14} {'-':>10}"
                        )
                        print(
                            f"{label:>14} {protocol:>9} {result['sessions']:>9} {result['turns']:>7}"
                            f" {result['turns_per_s']:>9.0f} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f}"
                            f" {result['chunk_frames']:>12.1f}{ratios}",
                            flush=True,
                        )
            finally:
                pod.stop()
        if args.relay_only:
            return
        pod = Pod(Path(workdir))
        try:
            rows = asyncio.run(idle(pod, counts=idle_counts))
        finally:
            pod.stop()
    print("idle connections (facade RSS; each connection also holds a runtime conversation)")
    print(f"  baseline facade RSS: {rows[0]['baseline_mib']:.1f} MiB")
    print(f"{'connections':>12} {'facade MiB':>11} {'KiB/conn':>9} {'runtime MiB':>12}")
    for row in rows[1:]:
        print(
            f"{row['connections']:>12} {row['facade_rss_mib']:>11.1f} {row['per_connection_kib']:>9.1f}"
            f" {row['runtime_rss_mib']:>12.1f}"
        )


if __name__ == "__main__":
    main()
