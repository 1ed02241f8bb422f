"""The command line as a newcomer meets it: `omnia run`, `omnia chat`, and bad input."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from websockets.sync.client import connect

from omnia import __version__
from omnia.chat import PROMPT as PROMPT_MARKER

from .processes import free_port, readyz, wait_until

REPO = Path(__file__).resolve().parents[2]


def omnia(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnia", *args], capture_output=True, text=True, timeout=60, **kwargs
    )


PROMPTS = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: PromptPack
metadata: {name: p}
spec: {version: 1.0.0, systemPrompt: hi}
"""


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        pytest.param(
            PROMPTS + "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\n"
            "metadata: {name: a}\nspec: {promptPackRef: {name: p}, replicas: many}\n",
            "spec.replicas",
            id="wrong-type",
        ),
        pytest.param(
            PROMPTS + "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\n"
            "metadata: {name: a}\nspec: {promptPackRef: {name: p}, sesion: {type: redis}}\n",
            "did you mean 'session'",
            id="typo",
        ),
        pytest.param(
            "apiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\n"
            "metadata: {name: a}\nspec: {promptPackRef: {name: missing}}\n",
            "spec.promptPackRef: PromptPack 'missing' is not among the manifests",
            id="missing-reference",
        ),
        pytest.param("kind: [unclosed\n", "not valid YAML", id="not-yaml"),
        pytest.param(
            PROMPTS + "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: Provider\nmetadata: {name: c}\n"
            "spec: {type: claude, credentials: {secretRef: {name: claude-key, key: api-key}}}\n"
            "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\n"
            "metadata: {name: a}\nspec: {promptPackRef: {name: p}, providerRef: {name: c}}\n",
            "set the environment variable CLAUDE_KEY_API_KEY",
            id="secret-not-found",
        ),
        pytest.param(
            PROMPTS + "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\n"
            "metadata: {name: a}\nspec: {promptPackRef: {name: p}, session: {type: redis}}\n",
            "spec.session: type redis without secretRef uses the store named when Omnia was installed; "
            "locally, set OMNIA_SESSION_URL",
            id="default-session-store",
        ),
    ],
)
def test_run_with_bad_manifests_names_file_and_field_and_exits_2(tmp_path, manifest, expected):
    path = tmp_path / "agent.yaml"
    path.write_text(manifest)
    result = omnia("run", str(path), "--port", str(free_port()), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert expected in result.stderr


def test_run_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = omnia("run", str(REPO / "examples/quickstart"), "--port", str(port))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr


def _start_run(spawned, path: Path, port: int) -> subprocess.Popen:
    return spawned(
        [sys.executable, "-m", "omnia", "run", str(path), "--port", str(port)],
        stop_signal=signal.SIGINT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


MOCK_AGENT = PROMPTS + """\
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: Provider
metadata: {name: m}
spec:
  type: mock
  mock:
    replies:
      - text: "Scripted answer."
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: scripted}
spec: {promptPackRef: {name: p}, providerRef: {name: m}}
"""


def test_chat_streams_replies_for_piped_lines_and_ctrl_c_stops_run(tmp_path, spawned):
    (tmp_path / "agent.yaml").write_text(MOCK_AGENT)
    port = free_port()
    run = _start_run(spawned, tmp_path, port)
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
        chat = omnia("chat", f"http://127.0.0.1:{port}", input="hello\nagain\n")
    finally:
        output = _stop(run)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("Scripted answer.") == 2
    assert "connected to scripted" in chat.stdout
    assert f"http://127.0.0.1:{port}/" in output and run.returncode == 0


def test_chat_to_nothing_listening_fails_clearly():
    result = omnia("chat", f"http://127.0.0.1:{free_port()}", input="")
    assert result.returncode == 1 and "cannot reach" in result.stderr


@pytest.mark.model
def test_quickstart_answers_with_real_generated_text(spawned):
    """The README's main job: the quickstart on the embedded model streams a real reply."""
    port = free_port()
    run = _start_run(spawned, REPO / "examples/quickstart", port)
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=120, what="omnia run")
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
            ws.send(json.dumps({"type": "message", "content": "What is the capital of France?"}))
            frames = []
            while frames[-1:] == [] or frames[-1]["type"] not in ("done", "error"):
                frames.append(json.loads(ws.recv(timeout=120)))
    finally:
        output = _stop(run)
    # The model is loaded before the agent is said to be ready, and the output says so.
    assert output.index("Loading the model") < output.index("is ready (model") < output.index("Chat page:")
    chunks = [f["content"] for f in frames if f["type"] == "chunk"]
    done = frames[-1]
    assert done["type"] == "done", done
    assert chunks and any(c.strip() for c in chunks)
    assert len("".join(chunks).split()) >= 2
    assert done["usage"]["input_tokens"] > 10 and done["usage"]["output_tokens"] > 0


def test_version_flag_prints_the_same_version_as_the_command():
    flag, command = omnia("--version"), omnia("version")
    assert flag.returncode == command.returncode == 0
    assert flag.stdout.strip() == command.stdout.strip() == __version__


@pytest.mark.parametrize("command", ["", "run", "chat", "render", "operator"])
def test_help_of_the_main_commands_shows_examples(command):
    """Each example is a whole command line of that command, readable at 80 columns."""
    result = omnia(*([command] if command else []), "--help", env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    examples = result.stdout.split("Examples", 1)[1].splitlines()
    commands = [line.strip() for line in examples if line.strip()]
    assert len(commands) >= 2
    assert all(line.startswith(("omnia ", "OMNIA_", "echo ")) for line in commands), commands
    if command:
        assert all(f"omnia {command}" in line for line in commands)


def _chat_once(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": "hello"}))
        while json.loads(ws.recv(timeout=30))["type"] not in ("done", "error"):
            pass


def test_verbose_run_logs_one_json_line_per_turn_when_not_in_a_terminal(tmp_path, spawned):
    (tmp_path / "agent.yaml").write_text(MOCK_AGENT)
    port = free_port()
    run = spawned(
        [sys.executable, "-m", "omnia", "run", str(tmp_path), "--port", str(port), "--verbose"],
        stop_signal=signal.SIGINT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
        _chat_once(port)
    finally:
        run.send_signal(signal.SIGINT)
        _, errors = run.communicate(timeout=60)
    entries = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    assert "\\u001b" not in errors and "\x1b" not in errors
    (turn,) = [entry for entry in entries if entry["event"] == "turn done"]
    assert turn["component"] == "runtime" and turn["session_id"]
    assert turn["input_tokens"] > 0 and turn["output_tokens"] > 0 and turn["latency_ms"] >= 0


def test_verbose_run_in_a_terminal_logs_one_readable_line_per_turn(tmp_path, spawned):
    """Standard error a real terminal (a pseudo-terminal): the children see it and write lines for people."""
    (tmp_path / "agent.yaml").write_text(MOCK_AGENT)
    port = free_port()
    controller, terminal = pty.openpty()
    written = bytearray()
    reading = threading.Thread(target=_drain, args=(controller, written), daemon=True)
    reading.start()
    try:
        run = spawned(
            [sys.executable, "-m", "omnia", "run", str(tmp_path), "--port", str(port), "--verbose"],
            stop_signal=signal.SIGINT, stdout=subprocess.DEVNULL, stderr=terminal,
            env={**os.environ, "NO_COLOR": "1"},
        )
        os.close(terminal)
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
        _chat_once(port)
        wait_until(lambda: b"turn done" in written, timeout=10, what="the turn's log line")
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)
    finally:
        reading.join(timeout=10)
        os.close(controller)
    lines = written.decode(errors="replace").splitlines()
    (turn,) = [line for line in lines if "turn done" in line]
    assert not any(line.lstrip().startswith("{") for line in lines)
    for field in ("session_id=", "input_tokens=", "output_tokens=", "latency_ms=", "component=runtime"):
        assert field in turn


def _drain(controller: int, into: bytearray) -> None:
    """Read a pseudo-terminal until every writer has closed it (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


EDITING_AGENT = PROMPTS + """\
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: Provider
metadata: {name: m}
spec:
  type: mock
  mock:
    replies:
      - {match: "hello world", text: "REPLY-TO-HELLO-WORLD"}
      - {match: "other", text: "REPLY-TO-OTHER"}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: editing}
spec: {promptPackRef: {name: p}, providerRef: {name: m}}
"""

UP, CTRL_A, CTRL_D, ENTER = "\x1b[A", "\x01", "\x04", "\r"


class _Terminal:
    """``omnia chat`` on a pseudo-terminal: what it writes is collected, keys are typed into it."""

    def __init__(self, spawned, url: str, state: Path) -> None:
        self.controller, terminal = pty.openpty()
        self.written = bytearray()
        env = {**os.environ, "TERM": "xterm", "XDG_STATE_HOME": str(state), "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.process = spawned(
            [sys.executable, "-m", "omnia", "chat", url],
            stdin=terminal, stdout=terminal, stderr=terminal, env=env,
        )
        os.close(terminal)
        self.reading = threading.Thread(target=_drain, args=(self.controller, self.written), daemon=True)
        self.reading.start()

    def text(self) -> str:
        return self.written.decode(errors="replace")

    def wait_for(self, needle: str, *, count: int = 1) -> None:
        wait_until(lambda: self.text().count(needle) >= count, timeout=30, what=f"{needle!r} x{count}")

    def wait_for_prompt(self) -> None:
        """The marker after the greeting; prompt_toolkit draws its trailing space as a cursor move."""
        marker = PROMPT_MARKER.strip()
        wait_until(lambda: marker in self.text().partition("Ctrl-D ends")[2], timeout=30, what="the prompt")

    def type(self, keys: str) -> None:
        os.write(self.controller, keys.encode())

    def finish(self) -> int:
        self.type(CTRL_D)
        code = self.process.wait(timeout=30)
        self.reading.join(timeout=10)
        os.close(self.controller)
        return code


def test_chat_in_a_terminal_has_a_prompt_line_editing_and_history_kept_across_runs(tmp_path, spawned):
    """Typed as a person types: edit the line with Emacs keys, recall it with Up, again in the next run."""
    (tmp_path / "agent.yaml").write_text(EDITING_AGENT)
    port = free_port()
    run = _start_run(spawned, tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: readyz(url) == 200, timeout=60, what="omnia run")
        first = _Terminal(spawned, url, tmp_path / "state")
        first.wait_for_prompt()
        first.type("world" + CTRL_A + "hello " + ENTER)  # typed "world", went to the start, put "hello " before it
        first.wait_for("REPLY-TO-HELLO-WORLD")
        first.type("other" + ENTER)
        first.wait_for("REPLY-TO-OTHER")
        first.type(UP + UP + ENTER)  # two messages back: "hello world"
        first.wait_for("REPLY-TO-HELLO-WORLD", count=2)
        assert first.finish() == 0

        second = _Terminal(spawned, url, tmp_path / "state")
        second.wait_for_prompt()
        second.type(UP + ENTER)  # the last message of the earlier run: "hello world" (the repeat)
        second.wait_for("REPLY-TO-HELLO-WORLD")
        assert second.finish() == 0
    finally:
        _stop(run)
    assert "REPLY-TO-OTHER" not in second.text()
    history = tmp_path / "state" / "omnia" / "chat_history"
    assert "+hello world" in history.read_text()
    assert history.stat().st_mode & 0o777 == 0o600


def test_ctrl_c_in_a_terminal_stops_the_reply_and_the_chat_goes_on(tmp_path, spawned):
    """As the page's Stop button: the turn ends cancelled, the prompt comes back."""
    long_reply = " ".join(f"word{n}" for n in range(200))
    agent = EDITING_AGENT.replace(
        '      - {match: "other", text: "REPLY-TO-OTHER"}\n',
        '      - {match: "other", text: "REPLY-TO-OTHER"}\n'
        f'      - {{match: "long", text: "{long_reply}", chunk_size: 6, chunk_delay_ms: 100}}\n',
    )
    (tmp_path / "agent.yaml").write_text(agent)
    port = free_port()
    run = _start_run(spawned, tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: readyz(url) == 200, timeout=60, what="omnia run")
        chat = _Terminal(spawned, url, tmp_path / "state")
        chat.wait_for_prompt()
        chat.type("long" + ENTER)
        chat.wait_for("word1 ")
        chat.process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground process
        chat.wait_for("cancelled)")
        chat.type("other" + ENTER)
        chat.wait_for("REPLY-TO-OTHER")
        assert chat.finish() == 0
    finally:
        _stop(run)
    assert "word199" not in chat.text()


@pytest.mark.model
def test_quickstart_answers_the_openai_mcp_and_a2a_clients_with_real_generated_text(spawned):
    """The open protocols' acceptance: each official client streams a real reply from the local model."""
    import asyncio
    import uuid

    import httpx
    import httpx2
    import openai
    from a2a.client import ClientConfig, create_client
    from a2a.types import a2a_pb2 as a2a
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = _start_run(spawned, REPO / "examples/quickstart", port)
    try:
        wait_until(lambda: readyz(url) == 200, timeout=120, what="omnia run")
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
            stream = client.chat.completions.create(
                model="quickstart",
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
        openai_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        async def ask_mcp() -> tuple[str, list[str]]:
            progress: list[str] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            async with httpx2.AsyncClient(timeout=120) as http:
                async with Client(streamable_http_client(f"{url}/mcp", http_client=http), cache=None) as client:
                    result = await client.call_tool(
                        "ask", {"message": "Name a primary colour."}, progress_callback=on_progress
                    )
            assert not result.is_error, result
            return result.content[0].text, progress

        async def ask_a2a() -> list[str]:
            async with httpx.AsyncClient(timeout=120) as http:
                client = await create_client(url, client_config=ClientConfig(httpx_client=http, streaming=True))
                async with client:
                    message = a2a.Message(
                        role=a2a.Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[a2a.Part(text="Say hello.")]
                    )
                    responses = [r async for r in client.send_message(a2a.SendMessageRequest(message=message))]
            states = [r.status_update.status.state for r in responses if r.HasField("status_update")]
            assert states[-1] == a2a.TaskState.TASK_STATE_COMPLETED, responses[-1]
            return [p.text for r in responses if r.HasField("artifact_update") for p in r.artifact_update.artifact.parts]

        mcp_text, mcp_progress = asyncio.run(ask_mcp())
        a2a_chunks = asyncio.run(ask_a2a())
    finally:
        _stop(run)
    assert len(openai_text.split()) >= 2 and chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert mcp_text.strip() and mcp_progress and "".join(mcp_progress) == mcp_text
    assert len(a2a_chunks) > 1 and "".join(a2a_chunks).strip()
