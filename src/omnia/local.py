"""``omnia run``: the pod's two containers as two local processes.

The runtime and the facade run exactly as in a pod (same entrypoints, same
rendered configuration, gRPC between them), only joined by a Unix socket in a
private temporary folder instead of localhost TCP.

The lifecycle, whatever signal dispositions ``omnia run`` inherited (a script
or a background job starts it with SIGINT ignored, ``nohup`` with SIGHUP too):

- SIGINT, SIGTERM and SIGHUP each ask for a stop (``StopRequests``; the
  handlers only note the signal). The stop drains the facade (SIGTERM, as the
  kubelet would send it), waits for it, then stops the runtime the same way;
  each wait is bounded, and whatever is left of a process's group and tree
  after it is killed. The temporary folder is removed in any case.
- A second signal during the stop cuts the drain short: the facade gets a
  second SIGTERM (which skips its wait) and every wait shrinks to
  ``HURRY_SECONDS``.
- The children are in process groups of their own, so a terminal's Ctrl-C
  reaches ``omnia run`` alone and the order above holds. On Linux they get
  SIGTERM when ``omnia run`` dies without stopping them (SIGKILL, a crash):
  the parent-death signal. Each then stops as on any SIGTERM, and the runtime
  stops the stdio MCP servers it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from omnia import processes
from omnia.config import AgentConfig

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Beyond the facade's drain: its grace for plain HTTP requests, and time to exit.
STOP_MARGIN_SECONDS = 10.0
# How long each process gets once a second signal has asked for haste.
HURRY_SECONDS = 5.0
_POLL_SECONDS = 0.1
# How often ``start`` reports that it is still waiting (a large model loads for a while).
PROGRESS_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class LocalRunError(Exception):
    """The local agent could not start; the message says why."""


@dataclass
class StopRequests:
    """The stop signals received so far.

    ``install`` makes SIGINT, SIGTERM and SIGHUP land here, replacing whatever
    disposition was inherited (ignored included). The handler only appends, so
    a signal never interrupts starting or stopping half-way; the loops that
    wait look at ``signals`` between two polls.
    """

    signals: list[int] = field(default_factory=list)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.signals.append(signum)


@dataclass
class LocalAgent:
    """The running pair; ``url`` is the facade's base URL."""

    url: str
    runtime: subprocess.Popen
    facade: subprocess.Popen
    workdir: tempfile.TemporaryDirectory
    requests: StopRequests
    drain_seconds: float
    returncode: int | None = None

    @property
    def stop_requested(self) -> bool:
        return bool(self.requests.signals)

    def wait(self) -> None:
        """Block until a stop signal arrives or either process exits."""
        while not self.stop_requested and self.runtime.poll() is None and self.facade.poll() is None:
            time.sleep(_POLL_SECONDS)

    def stop(self, *, hurry: bool = False) -> int:
        """Stop the facade, then the runtime, and remove the folder; idempotent.

        Each process gets its drain and a margin, or ``HURRY_SECONDS`` with
        ``hurry`` or once a stop signal beyond the first arrives. Returns 0
        when both stopped by themselves on request (exit code 0, or killed by
        the SIGTERM sent to them), 1 when either had exited on its own with
        another code or had to be killed.
        """
        if self.returncode is not None:
            return self.returncode
        try:
            # The first signal asked for this stop; any further one, even before it began, hurries it.
            answered = min(len(self.requests.signals), 1)
            hurried = hurry
            for process in (self.facade, self.runtime):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                bound = HURRY_SECONDS if hurried else self.drain_seconds + STOP_MARGIN_SECONDS
                deadline = time.monotonic() + bound
                while process.poll() is None and time.monotonic() < deadline:
                    if len(self.requests.signals) > answered:
                        answered = len(self.requests.signals)
                        hurried = True
                        process.send_signal(signal.SIGTERM)
                        deadline = min(deadline, time.monotonic() + HURRY_SECONDS)
                    time.sleep(_POLL_SECONDS)
                kill_tree(process)
        finally:
            self.workdir.cleanup()
        codes = (self.facade.returncode, self.runtime.returncode)
        self.returncode = 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
        return self.returncode


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` if it still runs, everything it started, and what is left of its group.

    The group's id is the child's pid, which is not reused while any member
    lives, so killing the group after the child has gone is safe.
    """
    if process.poll() is None:
        for pid in reversed(processes.descendants(process.pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be listened on here (unknown, or not this machine's), or None.

    Binding port 0 tells a foreign address (EADDRNOTAVAIL) apart from a busy
    port, which :func:`port_is_free` reports separately.
    """
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return f"--host {host!r} is not a known host name or address"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.bind(address)
            except OSError:
                continue
        return None
    return f"--host {host!r} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one of its own addresses"


async def store_problem(config: AgentConfig, *, env: Mapping[str, str], timeout: float = 3.0) -> str | None:
    """Why the agent's shared session store cannot be reached, or None; memory stores always can.

    One ping, bounded by ``timeout``, so a wrong host or a stopped store is
    said before any process starts rather than as a failure of the first turn.
    """
    from omnia import sessions

    if config.session.type == "memory":
        return None
    store = sessions.create_store(config.session, env=env)
    try:
        async with asyncio.timeout(timeout):
            await store.ping()
    except TimeoutError:
        return f"cannot reach the {config.session.type} session store: no answer within {timeout:g}s"
    except sessions.StoreUnavailable as exc:
        return f"cannot reach the {config.session.type} session store: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await store.aclose()
    return None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start(
    config: AgentConfig,
    *,
    requests: StopRequests,
    host: str = "127.0.0.1",
    port: int = 8080,
    env: Mapping[str, str] | None = None,
    log_level: str = "warning",
    ready_timeout: float = 120.0,
    waiting: Callable[[float], None] | None = None,
) -> LocalAgent:
    """Start runtime and facade for ``config``.

    Returns once ``/readyz`` answers 200, or earlier when a stop signal has
    arrived (``LocalAgent.stop_requested``). The runtime loads the model
    before it serves, so ready means loaded; ``waiting`` is called with the
    seconds waited so far every ``PROGRESS_SECONDS`` until then. Raises ``LocalRunError``, with
    everything stopped, when the agent cannot start. ``requests`` should be
    installed before: the children's handlers are reset to the default
    dispositions only for signals this process handles.
    """
    if not port_is_free(host, port):
        raise LocalRunError(f"port {port} on {host} is already in use; choose another with --port")
    workdir = tempfile.TemporaryDirectory(prefix="omnia-")
    config_path = Path(workdir.name) / "agent.json"
    config_path.write_text(config.to_json())
    runtime_address = f"unix://{workdir.name}/runtime.sock"
    child_env = {**(os.environ if env is None else env), "OMNIA_LOG_LEVEL": log_level}
    python = sys.executable
    die_with_parent = _parent_death_signal(signal.SIGTERM)
    runtime = subprocess.Popen(
        [python, "-m", "omnia", "runtime", "--config", str(config_path), "--listen", runtime_address],
        env=child_env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=die_with_parent,
    )
    try:
        facade = subprocess.Popen(
            [
                python, "-m", "omnia", "facade", "--config", str(config_path),
                "--runtime", runtime_address, "--host", host, "--port", str(port),
            ],
            env=child_env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=die_with_parent,
        )
    except BaseException:
        kill_tree(runtime)
        workdir.cleanup()
        raise
    agent = LocalAgent(
        url=f"http://{host}:{port}", runtime=runtime, facade=facade, workdir=workdir, requests=requests,
        drain_seconds=config.facade.drain_timeout_seconds,
    )
    try:
        _wait_ready(agent, timeout=ready_timeout, waiting=waiting)
    except BaseException:
        agent.stop(hurry=True)
        raise
    return agent


def _parent_death_signal(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``signum`` to the child when this process dies.

    If this process died between the fork and the request, the child would
    never get the signal; it then exits at once instead.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return request


def _wait_ready(agent: LocalAgent, *, timeout: float, waiting: Callable[[float], None] | None) -> None:
    started = time.monotonic()
    deadline = started + timeout
    reported = 0
    while time.monotonic() < deadline and not agent.stop_requested:
        waited = time.monotonic() - started
        if waiting is not None and waited >= (reported + 1) * PROGRESS_SECONDS:
            reported = int(waited // PROGRESS_SECONDS)
            waiting(waited)
        for name, process in (("runtime", agent.runtime), ("facade", agent.facade)):
            if process.poll() is not None:
                raise LocalRunError(f"the {name} exited with code {process.returncode}; see its log above")
        try:
            if httpx.get(f"{agent.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    if not agent.stop_requested:
        raise LocalRunError(f"the agent was not ready after {timeout:g}s")
