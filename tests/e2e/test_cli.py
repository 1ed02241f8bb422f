"""The command line as a newcomer meets it: `omnia run`, `omnia chat`, and bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

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
        _stop(run)
    chunks = [f["content"] for f in frames if f["type"] == "chunk"]
    done = frames[-1]
    assert done["type"] == "done", done
    assert chunks and any(c.strip() for c in chunks)
    assert len("".join(chunks).split()) >= 2
    assert done["usage"]["input_tokens"] > 10 and done["usage"]["output_tokens"] > 0


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
