"""Where the facade and the runtime spend their CPU under relay load, by ``cProfile``.

    python bench/profile_relay.py [--speedups auto|off] [--top N] [--quick]

Starts a pod as ``bench/relay.py`` does (facade and runtime processes on
loopback, the ``mock`` model streaming 32 chunks instantly), each process
under the standard library's profiler, switched on only for the load: the
profiler starts on SIGUSR1 and writes its figures on SIGUSR2, so start-up
and readiness polling are left out. Two phases, each profiled on its own:

connections  new WebSocket sessions opened (upgrade until ``connected``) and
             held, 64 in flight, as in the connection-rate figure;
turns        20 concurrent sessions sending 50 turns each (fewer sessions than
             the relay figure: a hundred streams opening at once in a profiled
             runtime outlast the facade's five-second open timeout).

For each phase and process it prints the functions taking the most time of
their own (``tottime``) and the most time including what they call
(``cumtime``), in CPU time of the thread that runs the event loop.
Profiling slows Python code down several times over, C code
not at all: read the shares, not the absolute times. ``--speedups`` is
``OMNIA_SPEEDUPS`` for the pod (default ``auto``: uvloop and httptools when
installed).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

import relay

# Runs ``omnia`` in this process with a profiler that SIGUSR1 starts and
# SIGUSR2 stops and writes to OUTDIR/NAME.prof (renamed into place when
# complete, so the reader never sees half a file). It counts the CPU time of
# the event loop's thread, so waiting in epoll costs nothing, and neither
# does gRPC's own polling thread.
PROFILED = """
import cProfile, os, signal, sys, time
out, name = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
sys.argv[0] = "omnia"
profiles = []

def start(signum, frame):
    profile = cProfile.Profile(time.thread_time)
    profiles.append(profile)
    profile.enable()

def stop(signum, frame):
    profile = profiles.pop()
    profile.disable()
    partial = os.path.join(out, name + ".prof.partial")
    profile.dump_stats(partial)
    os.replace(partial, os.path.join(out, name + ".prof"))

signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
from omnia.cli import main
main()
"""

PROCESSES = ("facade", "runtime")


def _collect(pod: relay.Pod, out: Path) -> dict[str, pstats.Stats]:
    """Stop both profilers and read what they wrote."""
    for name in PROCESSES:
        (out / f"{name}.prof").unlink(missing_ok=True)
    for process in (pod.facade, pod.runtime):
        process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not all((out / f"{name}.prof").exists() for name in PROCESSES):
        if time.monotonic() > deadline:
            raise RuntimeError("the profiles were not written")
        time.sleep(0.1)
    return {name: pstats.Stats(str(out / f"{name}.prof")) for name in PROCESSES}


def _start(pod: relay.Pod) -> None:
    for process in (pod.facade, pod.runtime):
        process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)


def _where(function: tuple[str, int, str]) -> str:
    """``package/module.py:line(name)``, shortened to what tells the place."""
    path, line, name = function
    if path == "~":
        return name
    parts = Path(path).parts
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    short = "/".join(parts[-3:])
    return f"{short}:{line}({name})"


def report(phase: str, stats: dict[str, pstats.Stats], *, units: int, unit: str, top: int) -> None:
    for name, stat in stats.items():
        entries = stat.stats  # type: ignore[attr-defined]
        total = sum(tottime for _, _, tottime, _, _ in entries.values())
        print(f"\n== {phase}: {name}, {total:.2f} s profiled over {units} {unit}"
              f" ({1000 * total / units:.3f} ms per {unit.rstrip('s')})")
        for key, label in ((2, "own time (tottime)"), (3, "with callees (cumtime)")):
            print(f"  by {label}:")
            print(f"  {'share':>6} {'ms/' + unit.rstrip('s'):>9} {'calls/' + unit.rstrip('s'):>10}  function")
            ranked = sorted(entries.items(), key=lambda item: item[1][key], reverse=True)
            for function, (_, calls, tottime, cumtime, _) in ranked[:top]:
                seconds = tottime if key == 2 else cumtime
                print(f"  {100 * seconds / total:>5.1f}% {1000 * seconds / units:>9.4f} {calls / units:>10.1f}  {_where(function)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speedups", choices=("auto", "off"), default="auto", help="OMNIA_SPEEDUPS for the pod")
    parser.add_argument("--top", type=int, default=20, help="functions listed per process and ordering")
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    args = parser.parse_args()
    relay._pin(os.getpid(), relay.CLIENT_CORES)
    connections = 300 if args.quick else 3000
    sessions, turns = (10, 10) if args.quick else (20, 50)
    print(f"machine: {relay.machine()}; OMNIA_SPEEDUPS={args.speedups}")
    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir)
        launcher = [sys.executable, "-c", PROFILED, str(out)]
        pod = relay.Pod(out, speedups=args.speedups, launcher=launcher)
        try:
            asyncio.run(relay.first_turn_frames(pod.ws_url))  # warm: the first turn imports and caches
            _start(pod)
            rate, _ = asyncio.run(relay.connection_rate(pod.port, count=connections))
            report("connections", _collect(pod, out), units=connections, unit="connections", top=args.top)
            print(f"(under the profiler: {rate:.0f} connections/s)")
            _start(pod)
            result = asyncio.run(
                relay.relay(functools.partial(relay._session, pod.ws_url), pod.pids, sessions=sessions, turns=turns)
            )
            report("turns", _collect(pod, out), units=result["turns"], unit="turns", top=args.top)
            print(f"(under the profiler: {result['turns_per_s']:.0f} turns/s, {result['cpu_ms_per_turn']:.2f} ms CPU/turn)")
        finally:
            pod.stop()


if __name__ == "__main__":
    main()
