"""The examples as their READMEs run them: `omnia run examples/NAME`, against real servers on loopback.

Where a turn needs a server a test cannot assume (Ollama on port 11434, Anthropic's API), the
test runs a copy whose Provider URL points at a loopback server speaking the same wire format,
so the example itself stays as documented.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from omnia.testing import servers
from tests.providers import anthropic_wire, openai_wire
from tests.providers.serving import ScriptedServer, serving

from .processes import free_port, readyz, wait_until

REPO = Path(__file__).resolve().parents[2]
OLLAMA_URL = "http://127.0.0.1:11434/v1"
FAKE_ANTHROPIC_KEY = "sk-ant-test-not-a-real-key"


def _run(spawned, path: Path, port: int, *, env: dict[str, str] | None = None) -> subprocess.Popen:
    return spawned(
        [sys.executable, "-m", "omnia", "run", str(path), "--port", str(port)],
        stop_signal=signal.SIGINT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


def _converse(port: int, content: str) -> list[dict]:
    """The frames of one turn over the WebSocket, up to and including ``done`` or ``error``."""
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        ws.send(json.dumps({"type": "message", "content": content}))
        frames: list[dict] = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=60)))
    return frames


def test_every_example_is_run_by_a_test():
    """An example nobody runs rots: each folder under examples/ is named by some test that runs it."""
    tests = "\n".join(path.read_text() for path in (REPO / "tests").rglob("*.py"))
    untested = [
        folder.name
        for folder in sorted((REPO / "examples").iterdir())
        if folder.is_dir() and not re.search(rf"[\"']examples/{re.escape(folder.name)}[\"']", tests)
    ]
    assert not untested


@pytest.fixture(scope="module")
def openai_compatible() -> Iterator[ScriptedServer]:
    with serving(ScriptedServer(openai_wire.PATH)) as server:
        yield server


def test_ollama_example_streams_a_reply_from_an_openai_compatible_server(tmp_path, spawned, openai_compatible):
    """examples/ollama with its baseURL pointed elsewhere, as its README tells: no key, a streamed reply."""
    example = shutil.copytree(REPO / "examples/ollama", tmp_path / "ollama")
    manifest = example / "agent.yaml"
    assert OLLAMA_URL in manifest.read_text()
    manifest.write_text(manifest.read_text().replace(OLLAMA_URL, f"{openai_compatible.base_url}/v1"))
    openai_compatible.script(openai_wire.text("Hello", " from", " a local model."))
    port = free_port()
    run = _run(spawned, example, port)
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
        frames = _converse(port, "Say hello.")
    finally:
        output = _stop(run)
    assert frames[-1]["type"] == "done", (frames, output)
    assert "".join(f["content"] for f in frames if f["type"] == "chunk") == "Hello from a local model."
    [request] = openai_compatible.seen
    assert request.body["model"] == "llama3.2" and request.body["stream"] is True
    assert request.body["messages"][-1] == {"role": "user", "content": "Say hello."}
    assert run.returncode == 0, output


def _bare_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any key or session URL, plus ``extra``."""
    removed = ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_API_KEY", "OMNIA_SESSION_URL")
    return {**{k: v for k, v in os.environ.items() if k not in removed}, **extra}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            _bare_env(OMNIA_SESSION_URL="redis://127.0.0.1:1"),
            "set the environment variable ANTHROPIC_API_KEY_API_KEY, or ANTHROPIC_API_KEY,",
            id="no-key",
        ),
        pytest.param(
            _bare_env(ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY),
            "locally, set OMNIA_SESSION_URL to the store's URL",
            id="no-redis-url",
        ),
    ],
)
def test_support_agent_without_a_key_or_redis_says_what_to_set_and_exits_2(env, expected):
    result = subprocess.run(
        [sys.executable, "-m", "omnia", "run", str(REPO / "examples/support-agent"), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    assert FAKE_ANTHROPIC_KEY not in result.stderr


@pytest.fixture(scope="module")
def redis_server() -> Iterator[servers.RedisServer]:
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.close()


@pytest.mark.services
def test_support_agent_starts_with_anthropic_api_key_and_a_redis_url(spawned, redis_server):
    """As its README runs it locally; the note names the key's variable, never the key."""
    port = free_port()
    env = _bare_env(ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY, OMNIA_SESSION_URL=redis_server.url)
    run = _run(spawned, REPO / "examples/support-agent", port, env=env)
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
    finally:
        output = _stop(run)
    assert "note: Provider 'claude-provider': API key from the environment variable ANTHROPIC_API_KEY" in output
    assert FAKE_ANTHROPIC_KEY not in output
    assert run.returncode == 0, output


@pytest.fixture(scope="module")
def anthropic_compatible() -> Iterator[ScriptedServer]:
    with serving(ScriptedServer(anthropic_wire.PATH)) as server:
        yield server


@pytest.mark.services
def test_support_agent_streams_a_claude_reply_with_the_vendor_key(tmp_path, spawned, redis_server, anthropic_compatible):
    """A copy of the example whose Provider also names a loopback baseURL (omnia run has no flag to
    override it): ANTHROPIC_API_KEY reaches Anthropic's wire, and the turn streams back through Redis."""
    example = shutil.copytree(REPO / "examples/support-agent", tmp_path / "support-agent")
    provider = example / "provider.yaml"
    provider.write_text(provider.read_text().replace(
        "  type: claude\n", f"  type: claude\n  baseURL: {anthropic_compatible.base_url}\n", 1
    ))
    anthropic_compatible.script(anthropic_wire.text("Your order", " has shipped."))
    port = free_port()
    env = _bare_env(ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY, OMNIA_SESSION_URL=redis_server.url)
    run = _run(spawned, example, port, env=env)
    try:
        wait_until(lambda: readyz(f"http://127.0.0.1:{port}") == 200, timeout=60, what="omnia run")
        frames = _converse(port, "Where is my order?")
    finally:
        output = _stop(run)
    assert frames[-1]["type"] == "done", (frames, output)
    assert "".join(f["content"] for f in frames if f["type"] == "chunk") == "Your order has shipped."
    [request] = anthropic_compatible.seen
    assert request.headers["authorization"] == f"Bearer {FAKE_ANTHROPIC_KEY}"
    assert request.body["model"] == "claude-sonnet-4-5"
