"""Fixtures for the packaging tests: the helm binary, and CI's rule for missing tools.

Tools the packaging tests run (helm, hadolint) are skipped when missing on a
developer's machine and fail the run in CI, where a silent skip would hide
that nothing was checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from tests.cluster import controlplane
from tests.packaging import charts


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_tool(message: str) -> None:
    """Skip the test, or fail it in CI."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> charts.Helm:
    binary = controlplane.Binaries.locate().path("helm")
    if not os.access(binary, os.X_OK):
        missing_tool(f"helm is not built ({binary}); run scripts/build-control-plane helm")
    return charts.Helm(
        binary=binary, home=tmp_path_factory.mktemp("helm"), kube_version=controlplane.KUBERNETES_VERSION
    )
