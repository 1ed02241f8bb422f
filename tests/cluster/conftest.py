"""Fixtures for tests against a real Kubernetes control plane.

One control plane serves the whole session: starting one costs tens of seconds
on a small machine, while a namespace per test is enough isolation. Without the
binaries the tests skip on a developer's machine (the build takes a while and
is opt-in) but fail in CI, where a silent skip would hide that nothing ran.
See docs/testing-control-plane.md.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping

import pytest

import controlplane


def _in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def control_plane_binaries() -> controlplane.Binaries:
    """The built binaries; skips (or, in CI, fails) when they are missing."""
    binaries = controlplane.Binaries.locate()
    missing = binaries.missing()
    if missing:
        message = (
            f"the test control plane is not built: missing {', '.join(missing)} in {binaries.directory}; "
            "run scripts/build-control-plane (about 10 minutes on 2 cores the first time)"
        )
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binaries


@pytest.fixture(scope="session")
def control_plane(
    control_plane_binaries: controlplane.Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[controlplane.ControlPlane]:
    """A running etcd + kube-apiserver + controller-manager + scheduler + KWOK.

    Its work folder (PKI, kubeconfigs, one log per component) is kept under
    pytest's basetemp, so the logs are there to read after a failure.
    """
    plane = controlplane.ControlPlane(
        binaries=control_plane_binaries, workdir=tmp_path_factory.mktemp("control-plane")
    )
    with plane:
        yield plane


@pytest.fixture
def namespace(control_plane: controlplane.ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name, check=True)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
