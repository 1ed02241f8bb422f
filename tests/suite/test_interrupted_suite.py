"""A suite stopped by a signal still stops what it started.

SIGTERM (a CI job's timeout, ``kill``) and SIGHUP (a closed terminal) ended
pytest without running a single finalizer, so the servers the suite had
started outlived it. Each signal is sent here to a pytest running one test
that has spawned a process; that process must be gone when pytest exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import processtrees
from tests.e2e.processes import wait_until

REPO = Path(__file__).resolve().parents[2]
CASE = Path(__file__).with_name("interrupted_case.py")


def _alive(pid: int) -> bool:
    entry = processtrees.table().get(pid)
    return entry is not None and entry.state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_suite_tears_down_and_leaves_no_process(signum, spawned, tmp_path):
    pid_file = tmp_path / "pid"
    suite = spawned(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASE)],
        cwd=REPO, env={**os.environ, "OMNIA_TEST_PID_FILE": str(pid_file)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wait_until(pid_file.exists, timeout=60, what="the inner test to spawn its process")
    child = int(pid_file.read_text())
    assert _alive(child)
    suite.send_signal(signum)
    output, _ = suite.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), f"the spawned process outlived the suite:\n{output}"
    assert suite.returncode == pytest.ExitCode.INTERRUPTED, output
