"""Why a process could not start, written where the kubelet reads it: one line, never a crash of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omnia import termination
from omnia.config import AgentConfig, AuthConfig, FacadeConfig, ProviderConfig


def test_the_reason_is_written_as_one_line(tmp_path):
    path = tmp_path / "termination-log"
    assert termination.write("1 validation error\nfacade.port\n  Input should be an integer", path=path) == path
    assert path.read_text() == "1 validation error facade.port Input should be an integer\n"


def test_a_long_reason_is_cut_to_what_the_kubelet_reads(tmp_path):
    path = tmp_path / "termination-log"
    termination.write("é" * 5000, path=path)
    assert len(path.read_bytes()) <= termination.MAX_BYTES
    assert path.read_text().rstrip("\n") == "é" * 2047


def test_nowhere_to_write_is_not_an_error(tmp_path, monkeypatch):
    """Outside a pod there is no /dev/termination-log; a path that cannot be written is skipped too."""
    monkeypatch.setattr(termination, "DEFAULT_PATH", tmp_path / "absent")
    assert termination.write("reason") is None
    assert termination.write("reason", path=tmp_path / "no-such-folder" / "log") is None


def test_the_default_path_is_used_when_it_is_writable(tmp_path, monkeypatch):
    default = tmp_path / "termination-log"
    default.touch()
    monkeypatch.setattr(termination, "DEFAULT_PATH", default)
    assert termination.write("reason") == default
    assert default.read_text() == "reason\n"


def test_a_facade_without_its_api_keys_says_why_in_one_line_and_exits_without_a_traceback(tmp_path):
    """facade.auth apiKey with the keys' variable unset: the facade's start-up error reaches the termination
    log named by the environment, as the pod's Secret going missing would make it."""
    config = AgentConfig(name="helper", provider=ProviderConfig(type="mock"),
                         facade=FacadeConfig(auth=AuthConfig(type="apiKey", api_keys_env="OMNIA_API_KEYS")))
    config_path = tmp_path / "agent.json"
    config_path.write_text(config.to_json())
    termination_log = tmp_path / "termination-log"
    env = {key: value for key, value in os.environ.items() if key != "OMNIA_API_KEYS"}
    env[termination.ENV] = str(termination_log)

    result = subprocess.run(
        [sys.executable, "-m", "omnia", "facade", "--config", str(config_path), "--host", "127.0.0.1",
         "--port", "0", "--runtime", f"unix://{tmp_path}/runtime.sock"],
        capture_output=True, text=True, timeout=60, env=env,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    reason = "facade.auth: auth type apiKey needs its keys in the environment variable OMNIA_API_KEYS"
    assert reason in result.stderr
    assert termination_log.read_text().startswith(reason)


@pytest.mark.parametrize("command", ["runtime", "facade"])
def test_both_pod_commands_take_a_termination_log(command):
    result = subprocess.run([sys.executable, "-m", "omnia", command, "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert "--termination-log" in result.stdout and f"env var: {termination.ENV}" in result.stdout
