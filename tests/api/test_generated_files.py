"""The committed CRDs and API reference are what the models generate."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.api.cases import REPO


def test_committed_crds_and_reference_are_current() -> None:
    """Run scripts/gen-crds after changing a model; this fails until you do."""
    result = subprocess.run(
        [str(REPO / "scripts" / "gen-crds"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_committed_grpc_stubs_are_current() -> None:
    """Run scripts/gen-protos after changing proto/ or KEDA's version; this fails until you do.

    KEDA's external scaler definition comes from KEDA's Go module, so this needs Go
    (and the module, cached after the first download).
    """
    result = subprocess.run(
        [str(REPO / "scripts" / "gen-protos"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
