"""`omnia run` stops cleanly on every stop signal, and nothing it started outlives it.

Started from a script or a background job, `omnia run` inherits SIGINT ignored (a shell starts
background commands so) and, under `nohup`, SIGHUP too; Python then installs no handler of its
own. These tests start it that way and check that SIGINT, SIGTERM and SIGHUP each drain the
facade (a turn in flight finishes), stop the runtime and the stdio MCP server it started, remove
the private temporary folder and exit 0; that a second signal cuts the drain short; that a
SIGKILL of `omnia run` takes its processes with it; and that its output's reader going away
does not stop or wedge it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests import processtrees

from .processes import free_port, readyz, wait_until

REPO = Path(__file__).resolve().parents[2]

MANIFESTS = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: PromptPack
metadata: {name: p}
spec: {version: 1.0.0, systemPrompt: hi}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: Provider
metadata: {name: m}
spec:
  type: mock
  mock:
    replies:
      - {match: slow, text: "%s", chunkSize: 5, chunkDelayMs: 50}
      - {match: endless, text: "%s", chunkSize: 5, chunkDelayMs: 100}
      - text: Scripted answer.
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: ToolRegistry
metadata: {name: t}
spec:
  handlers:
    - name: units
      type: mcp
      mcp: {transport: stdio, command: python, args: [units_server.py]}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: lifecycle}
spec: {promptPackRef: {name: p}, providerRef: {name: m}, toolRegistryRef: {name: t}}
""" % ("tick " * 60, "tock " * 600)  # about 3 s, and about a minute


def _as_a_background_job() -> None:
    """The dispositions `nohup omnia run … &` starts with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass
class Run:
    process: subprocess.Popen
    url: str
    tmp: Path
    """The run's TMPDIR: its private folder is made here, and nothing else."""
    tree: list[processtrees.Entry]
    """Everything it started, as it was once ready."""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def wait_all_gone(self, *, timeout: float) -> None:
        wait_until(lambda: not [entry for entry in self.tree if entry.alive], timeout=timeout,
                   what=f"{[str(entry) for entry in self.tree if entry.alive]} to exit")


@pytest.fixture
def start_run(tmp_path, spawned):
    def start(*, stdout=subprocess.DEVNULL, read_output=None) -> Run:
        folder = tmp_path / "agent"
        folder.mkdir()
        (folder / "agent.yaml").write_text(MANIFESTS)
        shutil.copy(REPO / "examples/tools/units_server.py", folder)
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        port = free_port()
        process = spawned(
            [sys.executable, "-m", "omnia", "run", str(folder), "--port", str(port)],
            env={**os.environ, "TMPDIR": str(tmp)},
            cwd=tmp_path,
            stdout=stdout,
            stderr=(tmp_path / "run.log").open("ab"),
            preexec_fn=_as_a_background_job,
        )
        if read_output is not None:
            read_output(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: readyz(url) == 200 or process.poll() is not None, timeout=90, what="omnia run")
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        tree = processtrees.descendants(process.pid)
        commands = " | ".join(entry.command for entry in tree)
        assert " facade " in commands and " runtime " in commands and "units_server.py" in commands, commands
        return Run(process=process, url=url, tmp=tmp, tree=tree)

    return start


def _receive_until(ws, *types: str) -> list[dict]:
    frames = [json.loads(ws.recv(timeout=60))]
    while frames[-1]["type"] not in types:
        frames.append(json.loads(ws.recv(timeout=60)))
    return frames


def _start_turn(ws, text: str) -> None:
    assert json.loads(ws.recv(timeout=10))["type"] == "connected"
    ws.send(json.dumps({"type": "message", "content": text}))
    _receive_until(ws, "chunk")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_drains_stops_everything_removes_the_folder_and_exits_0(start_run, signum):
    """Even inherited ignored: the turn in flight finishes, then the client is told to reconnect elsewhere."""
    run = start_run()
    with connect(run.ws_url) as ws:
        _start_turn(ws, "slow")
        run.process.send_signal(signum)
        frames = _receive_until(ws, "done", "error")
        draining = json.loads(ws.recv(timeout=60))
    assert frames[-1]["type"] == "done", frames[-1]
    assert draining["code"] == "DRAINING"
    assert run.process.wait(60) == 0
    run.wait_all_gone(timeout=10)
    assert list(run.tmp.iterdir()) == []


def test_a_second_signal_cuts_the_drain_short(start_run):
    """A minute-long turn does not hold the stop up once the user asks twice."""
    run = start_run()
    with connect(run.ws_url) as ws:
        _start_turn(ws, "endless")
        run.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert run.process.poll() is None, "stopped without draining"
        asked_again = time.monotonic()
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(30) == 0
    assert time.monotonic() - asked_again < 15
    run.wait_all_gone(timeout=10)
    assert list(run.tmp.iterdir()) == []


def test_nothing_outlives_a_killed_omnia_run(start_run):
    """SIGKILL leaves `omnia run` no chance to stop anything: its processes see their parent die and stop."""
    run = start_run()
    run.process.kill()
    run.process.wait()
    run.wait_all_gone(timeout=20)


def test_a_reader_going_away_neither_stops_nor_wedges_it(start_run):
    """The reader of its output closes the pipe before the URLs are printed: the agent still serves,
    and still stops cleanly on request."""
    run = start_run(stdout=subprocess.PIPE, read_output=lambda process: process.stdout.close())
    with connect(run.ws_url) as ws:
        _start_turn(ws, "hello")
        assert _receive_until(ws, "done", "error")[-1]["type"] == "done"
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(60) == 0
    run.wait_all_gone(timeout=10)
    assert list(run.tmp.iterdir()) == []
    assert "Traceback" not in (run.tmp.parent / "run.log").read_text()
