"""What every test may rely on: the processes it starts are stopped, and the suite leaves none behind.

``no_process_left_behind`` is the first fixture of the session (autouse, in the root conftest),
so it is torn down last, after every other fixture has stopped its servers. It makes pytest a
child subreaper, so that a process the suite started stays its descendant even when its own
parent has gone: "descended from this session" then names exactly what the suite started, and
another test run on the same machine (with the same redis-server, postgres or kube-apiserver
command lines) is never mistaken for a leftover of this one.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests import processtrees

# How long processes stopped just before the end of the session may take to exit.
EXIT_GRACE_SECONDS = 10.0


def pytest_configure(config: pytest.Config) -> None:
    """A suite stopped by SIGTERM or SIGHUP (a CI timeout, a closed terminal) ends as after Ctrl-C.

    Their default action ends pytest on the spot, so no fixture's teardown
    ran and every server the suite had started (Redis, PostgreSQL, the control
    plane) was left running. As a ``KeyboardInterrupt`` the test in progress
    stops and every finalizer runs. A SIGHUP the suite was started to ignore
    (``nohup``) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """Fails the session when a process it started is still running after every fixture's teardown."""
    before = {(entry.pid, entry.started) for entry in processtrees.table().values()}
    processtrees.become_subreaper()
    yield

    def leftovers() -> list[processtrees.Entry]:
        return [
            entry
            for entry in processtrees.descendants(os.getpid())
            if entry.state != "Z" and (entry.pid, entry.started) not in before
        ]

    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for entry in left:
        if entry.alive:
            os.kill(entry.pid, signal.SIGKILL)
    if left:
        pytest.fail("processes started by the tests were still running (now killed):\n"
                    + "\n".join(f"  {entry}" for entry in left), pytrace=False)


@pytest.fixture
def spawned():
    """``spawned(args, **popen)``: a process in its own group, stopped with its group and tree after the test.

    Stopping happens whether the test passed or failed: ``stop_signal`` (SIGTERM unless given),
    up to ``stop_timeout`` seconds, then SIGKILL for whatever is left. A test may stop the
    process itself first; the finalizer then only sweeps what is left of its group.
    """
    started: list[tuple[object, int, float]] = []

    def spawn(args, *, stop_signal: int = signal.SIGTERM, stop_timeout: float = 30.0, **popen):
        process = processtrees.spawn(args, **popen)
        started.append((process, stop_signal, stop_timeout))
        return process

    yield spawn
    for process, stop_signal, stop_timeout in reversed(started):
        processtrees.stop(process, signum=stop_signal, timeout=stop_timeout)
