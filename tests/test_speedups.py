"""Optional speedups: chosen from what is installed and ``OMNIA_SPEEDUPS``, a bad value refused at start."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys

import pytest

from omnia import termination
from omnia.config import AgentConfig, ProviderConfig
from omnia.speedups import Speedups

INSTALLED = importlib.util.find_spec("uvloop") is not None and importlib.util.find_spec("httptools") is not None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"OMNIA_SPEEDUPS": "off"}, Speedups(), id="off"),
        pytest.param({"OMNIA_SPEEDUPS": " OFF "}, Speedups(), id="off-any-case"),
    ],
)
def test_off_uses_the_pure_python_fallback(env, expected):
    speedups = Speedups.from_env(env)
    assert speedups == expected
    assert (speedups.loop_name, speedups.http_parser) == ("asyncio", "h11")


@pytest.mark.parametrize("env", [{}, {"OMNIA_SPEEDUPS": "auto"}, {"OMNIA_SPEEDUPS": ""}], ids=["unset", "auto", "empty"])
def test_auto_uses_each_speedup_that_is_installed(env):
    speedups = Speedups.from_env(env)
    assert speedups.uvloop is (importlib.util.find_spec("uvloop") is not None)
    assert speedups.httptools is (importlib.util.find_spec("httptools") is not None)


def test_an_unknown_value_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="OMNIA_SPEEDUPS must be one of auto, off, not 'fast'"):
        Speedups.from_env({"OMNIA_SPEEDUPS": "fast"})


@pytest.mark.skipif(not INSTALLED, reason="the speed extra is not installed")
def test_run_uses_uvloop_when_chosen_and_asyncio_otherwise():
    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert Speedups(uvloop=True).run(loop_type()).startswith("uvloop")
    assert Speedups().run(loop_type()).startswith("asyncio")


@pytest.mark.parametrize("command", ["runtime", "facade"])
def test_a_bad_value_stops_a_pod_process_in_one_line_without_a_traceback(tmp_path, command):
    config_path = tmp_path / "agent.json"
    config_path.write_text(AgentConfig(name="helper", provider=ProviderConfig(type="mock")).to_json())
    termination_log = tmp_path / "termination-log"
    env = {**os.environ, "OMNIA_SPEEDUPS": "fast", termination.ENV: str(termination_log)}
    address = f"unix://{tmp_path}/runtime.sock"
    args = ["--listen", address] if command == "runtime" else ["--runtime", address, "--host", "127.0.0.1", "--port", "0"]

    result = subprocess.run(
        [sys.executable, "-m", "omnia", command, "--config", str(config_path), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "OMNIA_SPEEDUPS must be one of auto, off" in result.stderr
    assert termination_log.read_text().startswith("OMNIA_SPEEDUPS must be one of auto, off")
