"""Server CPU per turn of two versions of Omnia and both floors, in interleaved rounds.

    python bench/compare_relay.py --before SRC [--rounds N]

``SRC`` is the ``src`` folder of an export of the other version (for
example ``git archive REV src | tar -x -C /tmp/before``); it goes first on the
pod's ``PYTHONPATH``. Each round runs, one after the other, that version's
pod, this tree's pod, the bare ``websockets`` floor and the floor with the
gRPC hop (``bench/relay.py``), each for 100 sessions × 20 instant turns
after a warm-up, with the speedups; so a machine whose mood changes during
the run affects them all alike. Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
from pathlib import Path

import relay

SESSIONS, TURNS = 100, 20


def _cpu_per_turn(pids: tuple[int, ...], url: str) -> float:
    session = functools.partial(relay._session, url)
    asyncio.run(relay.relay(session, pids, sessions=SESSIONS, turns=5))
    return asyncio.run(relay.relay(session, pids, sessions=SESSIONS, turns=TURNS))["cpu_ms_per_turn"]


def _pod(workdir: Path, pythonpath: str | None) -> relay.Pod:
    saved = os.environ.pop("PYTHONPATH", None)
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        return relay.Pod(workdir, speedups="auto")
    finally:
        os.environ.pop("PYTHONPATH", None)
        if saved is not None:
            os.environ["PYTHONPATH"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the src folder of the version to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    relay._pin(os.getpid(), relay.CLIENT_CORES)
    print(f"machine: {relay.machine()}")
    results: dict[str, list[float]] = {"before": [], "after": [], "floor": [], "floor+gRPC": []}
    print(f"{'round':>5} " + " ".join(f"{name:>11}" for name in results) + "   (server CPU ms per turn)")
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(1, args.rounds + 1):
            frames: list[str] = []
            for name, pythonpath in (("before", args.before), ("after", None)):
                pod = _pod(Path(workdir), pythonpath)
                try:
                    if name == "after":
                        frames = asyncio.run(relay.first_turn_frames(pod.ws_url))
                    results[name].append(_cpu_per_turn(pod.pids, pod.ws_url))
                finally:
                    pod.stop()
            for name, kind in (("floor", relay.Floor), ("floor+gRPC", relay.HopFloor)):
                floor = kind(Path(workdir), frames=frames)
                try:
                    results[name].append(_cpu_per_turn(floor.pids, floor.ws_url))
                finally:
                    floor.stop()
            print(f"{number:>5} " + " ".join(f"{values[-1]:>11.3f}" for values in results.values()), flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print("median " + " ".join(f"{value:>11.3f}" for value in medians.values()))
    print(
        f"after/before {medians['after'] / medians['before']:.2f}; after/floor {medians['after'] / medians['floor']:.1f}x;"
        f" after/floor+gRPC {medians['after'] / medians['floor+gRPC']:.1f}x;"
        f" floor+gRPC/floor {medians['floor+gRPC'] / medians['floor']:.1f}x"
    )


if __name__ == "__main__":
    main()
