"""The processes tests start, in process groups and trees, and what is left of them (Linux ``/proc``).

Every process a test starts gets a process group of its own (``spawn``), so that stopping it
(``stop``) reaches what it started in turn, and a terminal's or a background shell's signals
meant for pytest do not reach it. A process is known by its pid *and* its start time, so that a
pid reused after the process died is never mistaken for it (``Entry.alive``). A zombie counts as
dead: under the session's subreaper (``tests/conftest.py``) an orphan that has exited waits as a
zombie of pytest, and nothing runs in it any more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Entry:
    """One process as ``/proc`` showed it."""

    pid: int
    ppid: int
    state: str
    started: int
    command: str

    @property
    def alive(self) -> bool:
        """Whether this very process (not a later one with the same pid) still runs."""
        current = read(self.pid)
        return current is not None and current.started == self.started and current.state != "Z"

    def __str__(self) -> str:
        return f"{self.pid} ({self.command[:200]})"


def read(pid: int) -> Entry | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The command name, in parentheses, may itself contain spaces and parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return Entry(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0],
        started=int(fields[19]),
        command=command.replace(b"\0", b" ").decode(errors="replace").strip(),
    )


def table() -> dict[int, Entry]:
    """Every process now."""
    entries = (read(int(path.name)) for path in Path("/proc").iterdir() if path.name.isdigit())
    return {entry.pid: entry for entry in entries if entry is not None}


def descendants(pid: int, *, processes: dict[int, Entry] | None = None) -> list[Entry]:
    """The children of ``pid``, their children, and so on (``pid`` itself not included)."""
    processes = table() if processes is None else processes
    children: dict[int, list[Entry]] = {}
    for entry in processes.values():
        children.setdefault(entry.ppid, []).append(entry)
    found, queue = [], list(children.get(pid, ()))
    while queue:
        entry = queue.pop(0)
        found.append(entry)
        queue.extend(children.get(entry.pid, ()))
    return found


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children rather than init's; False if unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def spawn(args: Sequence[str], **popen) -> subprocess.Popen:
    """``subprocess.Popen`` in a new process group, reading nothing from the terminal by default."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(args, process_group=0, **popen)


def stop(process: subprocess.Popen, *, signum: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Ask ``process`` to stop with ``signum``; then kill whatever of its group and tree is left.

    Its tree is noted before the signal, so that what it started is found even once it has
    exited and they were reparented.
    """
    tree = descendants(process.pid) if process.poll() is None else []
    if process.poll() is None:
        process.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    kill(process, also=tree)


def kill(process: subprocess.Popen, *, also: Sequence[Entry] = ()) -> None:
    """SIGKILL ``process``, its process group, its descendants and the ``also`` still alive; reap it."""
    tree = [*also, *(descendants(process.pid) if process.poll() is None else ())]
    if process.poll() is None:
        process.kill()
    # The group outlives its leader while any member lives, and its id is not reused meanwhile.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for entry in tree:
        if entry.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(entry.pid, signal.SIGKILL)
    process.wait()
