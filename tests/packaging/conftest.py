"""Fixtures for the packaging tests."""

from __future__ import annotations

import pytest

from tests.cluster import controlplane
from tests.packaging import charts, tools


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> charts.Helm:
    """helm, isolated in a temporary home, rendering for the test control plane's Kubernetes version."""
    return charts.Helm(
        binary=tools.helm(), home=tmp_path_factory.mktemp("helm"), kube_version=controlplane.KUBERNETES_VERSION
    )
