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
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import autoscaling
import controlplane
import realnode
import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.packaging import charts, tools  # noqa: E402


def _in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    """Skip on a developer's machine; fail in CI, where a silent skip would hide that nothing ran."""
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


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
        _unavailable(message)
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


@pytest.fixture(scope="module")
def keda_system(control_plane: controlplane.ControlPlane) -> Iterator[autoscaling.Keda]:
    """KEDA's operator and metrics API server against the control plane, for one test module.

    Skips (or, in CI, fails) when ``scripts/build-control-plane keda`` has not built them.
    """
    missing = autoscaling.missing_binaries(control_plane.binaries, autoscaling.KEDA_BINARIES)
    if missing:
        _unavailable(f"KEDA is not built: missing {', '.join(missing)}; run scripts/build-control-plane keda")
    with autoscaling.Keda(control_plane) as keda:
        yield keda


@pytest.fixture
def metrics_server_binary(control_plane_binaries: controlplane.Binaries) -> controlplane.Binaries:
    """Skips (or, in CI, fails) unless ``scripts/build-control-plane metrics-server`` built it."""
    if autoscaling.missing_binaries(control_plane_binaries, [autoscaling.METRICS_SERVER_BINARY]):
        _unavailable("metrics-server is not built; run scripts/build-control-plane metrics-server")
    return control_plane_binaries


@pytest.fixture
def namespace(control_plane: controlplane.ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name, check=True)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def built_images() -> realnode.BuiltImages:
    """The image archives scripts/build-image wrote; skips (or, in CI, fails) when missing."""
    images = realnode.BuiltImages.locate()
    problem = images.problem()
    if problem:
        _unavailable(f"{problem}; run scripts/build-image (make image)")
    return images


@pytest.fixture(scope="session")
def real_node(
    control_plane: controlplane.ControlPlane,
    control_plane_binaries: controlplane.Binaries,
    built_images: realnode.BuiltImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[realnode.RealNode]:
    """A real kubelet node (containerd, runc, CNI, kube-proxy, CoreDNS) beside the KWOK nodes.

    Only pods in a namespace made by ``real_namespace`` run on it. When the
    session ends, the machine's sysctls, iptables rules, mounts, cgroups,
    links and paths are checked to be as they were before it started.
    """
    tools = realnode.Tools.locate(control_plane_binaries)
    missing = tools.missing()
    if missing or os.geteuid() != 0:
        message = (
            f"the real test node cannot start: missing {', '.join(missing)}; run scripts/install-test-deps"
            if missing
            else "the real test node needs root (containerd, kubelet and iptables)"
        )
        _unavailable(message)
    node = realnode.RealNode(
        plane=control_plane,
        tools=tools,
        images=built_images.archives,
        image_aliases=built_images.aliases,
        workdir=tmp_path_factory.mktemp("real-node"),
    )
    with node:
        yield node
    assert node.machine is not None
    left = node.machine.differences(workdir=node.workdir)
    assert not left, f"the real node left the machine changed: {left}"


@pytest.fixture
def real_namespace(real_node: realnode.RealNode, namespace: str, control_plane: controlplane.ControlPlane) -> str:
    """A fresh namespace whose pods all run on the real node."""
    control_plane.kubectl(
        "annotate", "namespace", namespace, "--overwrite",
        *(f"{key}={value}" for key, value in real_node.namespace_annotations().items()),
        check=True,
    )
    return namespace


@pytest.fixture(scope="session")
def helm(control_plane_binaries: controlplane.Binaries, tmp_path_factory: pytest.TempPathFactory) -> charts.Helm:
    return charts.Helm(
        binary=tools.helm(control_plane_binaries),
        home=tmp_path_factory.mktemp("helm"),
        kube_version=controlplane.KUBERNETES_VERSION,
    )


@pytest.fixture(scope="session")
def installed(
    control_plane: controlplane.ControlPlane,
    real_node: realnode.RealNode,
    built_images: realnode.BuiltImages,
    helm: charts.Helm,
) -> Iterator[tuple[str, str]]:
    """The chart installed by helm into a namespace of the real node, with a default Redis store.

    Operator and activator run as real pods. One installation serves the
    session (a namespace cannot be made again while the last one is still
    being deleted); tests put their agents in it under names of their own.
    Yields the namespace and the release name.
    """
    plane = control_plane
    namespace = "omnia-real"
    plane.kubectl("create", "namespace", namespace, check=True)
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True)
    plane.kubectl("annotate", "namespace", namespace, "--overwrite",
                  *(f"{key}={value}" for key, value in real_node.namespace_annotations().items()), check=True)
    harness.apply(plane, realpods.redis_objects(image=built_images.services), namespace=namespace)
    harness.apply(plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "session-store"},
                          "stringData": {"url": realpods.redis_url(namespace)}}, namespace=namespace)
    repository, tag = built_images.image.rsplit(":", 1)
    values = helm.values_file({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "userRoles": {"create": False},
        "sessionStore": {"redis": {"secretRef": {"name": "session-store", "key": "url"}}},
    })
    release = "omnia"
    try:
        helm.run("install", release, str(charts.CHART), f"--values={values}", f"--namespace={namespace}",
                 "--wait", "--timeout=4m", kubeconfig=plane.kubeconfig, timeout=300)
        yield namespace, release
    finally:
        for component in ("operator", "activator"):
            logs = plane.kubectl("logs", f"deployment/{release}-{component}", f"--namespace={namespace}",
                                 "--tail=80")
            print(f"--- {component} pod log ---\n{logs.stdout}{logs.stderr}")
        helm.run("uninstall", release, f"--namespace={namespace}", "--wait", kubeconfig=plane.kubeconfig,
                 timeout=240, check=False)
        plane.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def keda_on_real_node(
    control_plane: controlplane.ControlPlane, real_node: realnode.RealNode
) -> Iterator[autoscaling.Keda]:
    """KEDA (operator and metrics API server) as processes that resolve names with the node's CoreDNS.

    So a trigger's ``scalerAddress`` may name a Service of the cluster, as in
    a real installation (the activator's), and kube-proxy on the host routes
    its ClusterIP. Skips (or, in CI, fails) unless KEDA is built.
    """
    missing = autoscaling.missing_binaries(control_plane.binaries, autoscaling.KEDA_BINARIES)
    if missing:
        _unavailable(f"KEDA is not built: missing {', '.join(missing)}; run scripts/build-control-plane keda")
    with autoscaling.Keda(control_plane, cluster_dns=realnode.GATEWAY, cluster_domain=realnode.CLUSTER_DOMAIN) as keda:
        yield keda
