"""Agent processes for end-to-end tests: the real entrypoints, as subprocesses.

The runtime and the facade are started exactly as a pod (or ``omnia run``)
starts them, so these tests cross the real gRPC and WebSocket boundaries.
Each is in a process group of its own, and ``stop`` leaves nothing of the
group or of what it started (the runtime's stdio MCP servers) running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from omnia.config import AgentConfig
from tests import processtrees


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate, *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def readyz(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


class AgentProcesses:
    """One runtime and one facade for ``config``; restartable runtime.

    ``env`` is added to both processes' environment; ``container_env`` to one
    of them by name (``facade`` or ``runtime``), as a pod's containers differ.
    """

    def __init__(
        self,
        config: AgentConfig,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        container_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.config_path = workdir / "agent.json"
        self.config_path.write_text(config.to_json())
        self.runtime_address = f"unix://{workdir}/runtime.sock"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.env = {**os.environ, "OMNIA_LOG_LEVEL": "warning", **(env or {})}
        self.container_env = container_env or {}
        self.logs = workdir
        self.runtime: subprocess.Popen | None = None
        self.facade: subprocess.Popen | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        env = {**self.env, **self.container_env.get(name, {})}
        with open(self.logs / f"{name}.log", "ab") as log:
            return processtrees.spawn([sys.executable, "-m", "omnia", *args], env=env, stdout=log, stderr=log)

    def start_runtime(self) -> None:
        self.runtime = self._spawn(
            "runtime", ["runtime", "--config", str(self.config_path), "--listen", self.runtime_address]
        )

    def start_facade(self) -> None:
        self.facade = self._spawn(
            "facade",
            [
                "facade", "--config", str(self.config_path), "--runtime", self.runtime_address,
                "--host", "127.0.0.1", "--port", str(self.port),
            ],
        )

    def start(self, *, timeout: float = 60.0) -> AgentProcesses:
        """Start both and wait until ready; on failure, nothing is left running."""
        try:
            self.start_runtime()
            self.start_facade()
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        wait_until(lambda: readyz(self.url) == 200, timeout=timeout, what=f"{self.url}/readyz to be 200")

    def kill_runtime(self) -> None:
        assert self.runtime is not None
        self.runtime.send_signal(signal.SIGKILL)
        self.runtime.wait()

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM the facade, then the runtime (15 s each), then kill what is left of their groups."""
        for process in (self.facade, self.runtime):
            if process is not None:
                processtrees.stop(process, timeout=15)
