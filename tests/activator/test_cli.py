"""``omnia activator`` says what to fix when it cannot start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "test",
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
    "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
}


def _activator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omnia", "activator", "--host=127.0.0.1", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_kubeconfig_is_named_and_exits_2(tmp_path: Path) -> None:
    result = _activator(f"--kubeconfig={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "--kubeconfig" in result.stderr and "is not a file" in result.stderr


def test_a_busy_port_is_named_and_exits_2(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _activator(f"--kubeconfig={kubeconfig}", f"--port={port}", "--scaler-port=0")
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
