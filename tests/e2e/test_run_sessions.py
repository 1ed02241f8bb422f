"""`omnia run` honours AgentRuntime.spec.session: the store, its URL from a Secret, the TTL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import redis
from websockets.sync.client import connect

from omnia.testing import servers

from .processes import free_port, readyz, wait_until

pytestmark = pytest.mark.services

MANIFESTS = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: PromptPack
metadata: {name: p}
spec: {version: 1.0.0, systemPrompt: hi}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: Provider
metadata: {name: m}
spec: {type: mock}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: durable}
spec:
  promptPackRef: {name: p}
  providerRef: {name: m}
  session:
    type: redis
    ttl: 90m
    secretRef: {name: session-store, key: url}
"""


@pytest.fixture
def redis_server():
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.close()


def _run(spawned, folder, port, env):
    return spawned(
        [sys.executable, "-m", "omnia", "run", str(folder), "--port", str(port)],
        stop_signal=signal.SIGINT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _turn(ws, text):
    ws.send(json.dumps({"type": "message", "content": text}))
    while (frame := json.loads(ws.recv(timeout=30)))["type"] not in ("done", "error"):
        pass
    return frame


@pytest.mark.parametrize("source", [pytest.param("environment", id="url-from-env"), pytest.param("manifest", id="url-from-secret-manifest")])
def test_run_keeps_sessions_in_the_configured_redis_with_its_ttl(tmp_path, redis_server, source, spawned):
    """The session outlives the local agent: a second `omnia run` resumes it from Redis."""
    (tmp_path / "agent.yaml").write_text(MANIFESTS)
    env = dict(os.environ)
    if source == "environment":
        env["SESSION_STORE_URL"] = redis_server.url
    else:
        (tmp_path / "secret.yaml").write_text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: session-store}\n"
            f"stringData: {{url: '{redis_server.url}'}}\n"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _run(spawned, tmp_path, port, env)
    try:
        wait_until(lambda: readyz(url) == 200, timeout=60, what="omnia run")
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            session_id = json.loads(ws.recv(timeout=10))["session_id"]
            assert _turn(ws, "remember me")["type"] == "done"
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)

    keys = redis.Redis.from_url(redis_server.url).keys(f"*{session_id}*")
    assert keys, "the session is not in the configured Redis"
    ttl = redis.Redis.from_url(redis_server.url).ttl(keys[0])
    assert 85 * 60 < ttl <= 90 * 60

    second = _run(spawned, tmp_path, port, env)
    try:
        wait_until(lambda: readyz(url) == 200, timeout=60, what="omnia run again")
        with connect(f"ws://127.0.0.1:{port}/ws?session_id={session_id}") as ws:
            connected = json.loads(ws.recv(timeout=10))
            assert (connected["type"], connected["resumed"], connected["turns"]) == ("connected", True, 1)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(60)
