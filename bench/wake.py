"""Wake from zero: the time from a WebSocket at an agent at zero replicas to its ``connected`` frame.

The figure only exists on a cluster that runs pods, so this runs the
real-node test tests/cluster/test_real_scaling.py (the chart's operator and
activator as pods on the real test node, KEDA beside it; needs root and
what scripts/install-test-deps, scripts/build-control-plane and
scripts/build-image provide) and prints the lines it reports, with the
machine and its load before and after: a loaded machine wakes slower.

One run wakes the agent once, so run it a few times for a spread. It is not
part of ``make bench``: it needs the real node, of which a machine can have
one at a time.

Usage: python bench/wake.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/cluster/test_real_scaling.py"
REPORTED = re.compile(r"^\[scale to zero\] (.*)$")


def machine() -> str:
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def run_once() -> list[str]:
    """Run the test with its output; the lines it reported, or exit with the test's status."""
    command = [sys.executable, "-m", "pytest", TEST, "-s", "-q", "-p", "no:cacheprovider"]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    reported = [found.group(1) for line in process.stdout.splitlines() if (found := REPORTED.match(line))]
    if process.returncode != 0 or not reported:
        sys.stdout.write(process.stdout[-6000:])
        sys.stderr.write(process.stderr[-2000:])
        raise SystemExit(f"{TEST} failed (exit {process.returncode})")
    return reported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="how many times to run the test (default 1)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for run in range(1, args.runs + 1):
        print(f"run {run}: load average before {load()}")
        for line in run_once():
            print(f"  {line}")
        print(f"run {run}: load average after {load()}")


if __name__ == "__main__":
    main()
