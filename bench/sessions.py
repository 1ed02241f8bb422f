"""Session store benchmark: how long committing a turn takes, and how many fit in a second.

Run ``python bench/sessions.py``. It starts its own Redis and PostgreSQL on
loopback (the helpers of ``omnia.testing.servers``), then for each store
measures ``append_turn``:

* one writer: turns committed one after another, the latency a single
  conversation sees;
* many writers: ``--writers`` conversations at once, each committing its
  turns in order (as the agent loop does: one turn in flight per session),
  for throughput and latency under load.

Each phase stops after ``--turns`` turns or ``--seconds`` seconds, whichever
comes first. A turn is about 1 KB of JSON (a user message and a reply),
and every session takes ``--turns-per-session`` turns before a new one starts.

PostgreSQL runs twice: with fsync on (what a deployment would run) and off
(the test suite's setting, no disk flush per commit). Redis runs without
persistence.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from omnia.sessions import MemoryStore, Session, Turn
from omnia.sessions.postgres import PostgresStore
from omnia.sessions.redis import RedisStore
from omnia.testing import servers

USER_TEXT = "Could you tell me where my order is? It was due on Tuesday. " * 4
REPLY_TEXT = "I looked up your order: it left the warehouse this morning and should arrive tomorrow. " * 6


@dataclass
class Figures:
    store: str
    writers: int
    turns: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.turns / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def _turn(index: int) -> Turn:
    return Turn(
        index=index,
        messages=({"role": "user", "content": USER_TEXT}, {"role": "assistant", "content": REPLY_TEXT}),
        input_tokens=120,
        output_tokens=90,
        cost_usd=0.0004,
    )


async def _measure(store, *, name: str, writers: int, turns: int, seconds: float, per_session: int) -> Figures:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    budget = [turns]

    async def converse() -> None:
        while budget[0] > 0 and time.perf_counter() < deadline:
            session_id = uuid.uuid4().hex
            await store.create(Session(id=session_id, agent="bench", prompt_version="1.0.0"))
            for index in range(per_session):
                if budget[0] <= 0 or time.perf_counter() >= deadline:
                    return
                budget[0] -= 1
                started = time.perf_counter()
                await store.append_turn(session_id, _turn(index))
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(converse() for _ in range(writers)))
    return Figures(name, writers, len(latencies), time.perf_counter() - started, latencies)


async def _bench_store(make, *, name: str, args: argparse.Namespace) -> list[Figures]:
    store = make()
    try:
        await store.ping()
        await _measure(store, name=name, writers=4, turns=200, seconds=2, per_session=20)  # warm-up
        results = []
        for writers in (1, args.writers):
            results.append(
                await _measure(
                    store, name=name, writers=writers, turns=args.turns, seconds=args.seconds,
                    per_session=args.turns_per_session,
                )
            )
        return results
    finally:
        await store.aclose()


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, {memory} RAM, Python {platform.python_version()}"


def _versions(redis: servers.RedisServer, postgres: servers.PostgresServer) -> str:
    redis_version = subprocess.run([str(redis.binary), "--version"], capture_output=True, text=True).stdout.split()[2]
    pg_version = subprocess.run(
        [str(postgres.bindir / "postgres"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return f"Redis {redis_version.removeprefix('v=')}, {pg_version}"


def _table(results: list[Figures]) -> str:
    lines = [
        "| store | writers | turns | p50 ms | p99 ms | turns/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.store} | {r.writers} | {r.turns} | {r.percentile(50):.3f} | {r.percentile(99):.3f} | {r.rate:,.0f} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    results: list[Figures] = []
    print(f"machine: {_machine()}", flush=True)
    results += await _bench_store(lambda: MemoryStore(max_turns=10_000), name="memory", args=args)
    with servers.RedisServer() as redis, servers.PostgresServer(fsync=True) as pg_fsync, servers.PostgresServer(fsync=False) as pg_nofsync:
        print(f"servers: {_versions(redis, pg_fsync)}", flush=True)
        results += await _bench_store(
            lambda: RedisStore.from_url(redis.url, namespace="bench", max_connections=args.writers),
            name="redis", args=args,
        )
        for label, server in (("postgres, fsync on", pg_fsync), ("postgres, fsync off", pg_nofsync)):
            results += await _bench_store(
                lambda server=server: PostgresStore(dsn=server.url, namespace="bench", max_connections=min(args.writers, 20)),
                name=label, args=args,
            )
    print(_table(results))


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=5000, help="turns per phase at most (default 5000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase at most (default 10)")
    parser.add_argument("--writers", type=int, default=32, help="concurrent conversations (default 32)")
    parser.add_argument("--turns-per-session", type=int, default=20, help="turns before a new session (default 20)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(_arguments(sys.argv[1:])))
