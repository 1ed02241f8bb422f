"""``omnia run``: the pod's two containers as two local processes.

The runtime and the facade run exactly as in a pod (same entrypoints, same
rendered configuration, gRPC between them), only joined by a Unix socket in a
private temporary folder instead of localhost TCP. Ctrl-C (or SIGTERM) drains
the facade first, then stops the runtime.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from omnia.config import AgentConfig


class LocalRunError(Exception):
    """The local agent could not start; the message says why."""


@dataclass
class LocalAgent:
    """The running pair; ``url`` is the facade's base URL."""

    url: str
    runtime: subprocess.Popen
    facade: subprocess.Popen
    workdir: tempfile.TemporaryDirectory

    def wait(self) -> int:
        """Block until either process exits or the user interrupts; then stop both."""
        try:
            while self.runtime.poll() is None and self.facade.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        return self.stop()

    def stop(self, *, timeout: float = 30.0) -> int:
        for process in (self.facade, self.runtime):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.workdir.cleanup()
        codes = [self.facade.returncode, self.runtime.returncode]
        return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


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
    host: str = "127.0.0.1",
    port: int = 8080,
    env: Mapping[str, str] | None = None,
    log_level: str = "warning",
    ready_timeout: float = 120.0,
) -> LocalAgent:
    """Start runtime and facade for ``config``; returns once ``/readyz`` answers 200."""
    if not port_is_free(host, port):
        raise LocalRunError(f"port {port} on {host} is already in use; choose another with --port")
    workdir = tempfile.TemporaryDirectory(prefix="omnia-")
    config_path = Path(workdir.name) / "agent.json"
    config_path.write_text(config.to_json())
    runtime_address = f"unix://{workdir.name}/runtime.sock"
    child_env = {**(os.environ if env is None else env), "OMNIA_LOG_LEVEL": log_level}
    python = sys.executable
    runtime = subprocess.Popen(
        [python, "-m", "omnia", "runtime", "--config", str(config_path), "--listen", runtime_address],
        env=child_env,
    )
    facade = subprocess.Popen(
        [
            python, "-m", "omnia", "facade", "--config", str(config_path),
            "--runtime", runtime_address, "--host", host, "--port", str(port),
        ],
        env=child_env,
    )
    agent = LocalAgent(url=f"http://{host}:{port}", runtime=runtime, facade=facade, workdir=workdir)
    try:
        _wait_ready(agent, timeout=ready_timeout)
    except BaseException:
        agent.stop(timeout=5)
        raise
    return agent


def _wait_ready(agent: LocalAgent, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in (("runtime", agent.runtime), ("facade", agent.facade)):
            if process.poll() is not None:
                raise LocalRunError(f"the {name} exited with code {process.returncode}; see its log above")
        try:
            if httpx.get(f"{agent.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise LocalRunError(f"the agent was not ready after {timeout:g}s")
