"""The Helm chart on a real kube-apiserver: installed, admitted, bound, and driving a real operator.

The chart is rendered by helm and applied with kubectl (CRDs first), or
installed, upgraded and uninstalled by helm itself. KWOK plays the kubelet,
so the operator's Deployment becomes Available without an image; the
operator that then reconciles an agent runs as a local process, under the
chart's own ServiceAccount and RBAC and with the chart's command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.packaging import charts, tools  # noqa: E402

if TYPE_CHECKING:
    from controlplane import Binaries, ControlPlane

pytestmark = pytest.mark.cluster

EXAMPLE = charts.REPO / "examples" / "support-agent"
GROUP = "omnia.altairalabs.ai"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def helm(control_plane_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> charts.Helm:
    import controlplane

    return charts.Helm(
        binary=tools.helm(control_plane_binaries),
        home=tmp_path_factory.mktemp("helm"),
        kube_version=controlplane.KUBERNETES_VERSION,
    )


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    """The chart's crds/ folder, applied first and Established, as helm install would."""
    folder = str(charts.CHART / "crds")
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", folder, check=True)
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", folder, check=True)


@pytest.fixture(scope="module")
def user_roles(control_plane: ControlPlane, helm: charts.Helm, crds: None) -> Iterator[None]:
    """omnia-viewer and omnia-editor, which are cluster-wide and so applied once for the module."""
    text = helm.template_text(extra=["--show-only=templates/user-roles.yaml"]).stdout
    control_plane.kubectl("apply", "-f", "-", input=text, check=True)
    yield
    control_plane.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=text)


class Release:
    """The chart rendered for ``namespace`` and applied with kubectl; its cluster-wide objects removed after."""

    def __init__(self, plane: ControlPlane, helm: charts.Helm, *, namespace: str, values: dict[str, Any]) -> None:
        self.plane = plane
        self.namespace = namespace
        self.name = "omnia-" + namespace.rsplit("-", 1)[-1]
        self.objects = helm.template({"userRoles": {"create": False}, **values},
                                     release=self.name, namespace=namespace)

    def apply(self) -> Release:
        self.plane.kubectl("apply", "-f", "-", input=_list(self.objects), check=True)
        return self

    def remove_cluster_objects(self) -> None:
        cluster_wide = [obj for obj in self.objects if obj["kind"] in CLUSTER_SCOPED]
        if cluster_wide:
            self.plane.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=_list(cluster_wide))

    def of(self, kind: str, component: str = "operator") -> dict[str, Any]:
        """The release's one object of ``kind`` for the operator (or the activator)."""
        (found,) = [obj for obj in charts.find(self.objects, kind)
                    if obj["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        return found

    @property
    def deployment(self) -> dict[str, Any]:
        return self.of("Deployment")

    @property
    def service_account(self) -> str:
        return self.of("ServiceAccount")["metadata"]["name"]

    def wait_available(self, timeout: int = 120, component: str = "operator") -> None:
        self.plane.kubectl(
            "wait", "--for=condition=Available", f"--timeout={timeout}s", f"--namespace={self.namespace}",
            f"deployment/{self.of('Deployment', component)['metadata']['name']}", check=True, timeout=timeout + 30,
        )

    def can(self, verb: str, resource: str, *, namespace: str | None = None, component: str = "operator") -> bool:
        account = self.of("ServiceAccount", component)["metadata"]["name"]
        return can_i(self.plane, f"system:serviceaccount:{self.namespace}:{account}",
                     verb, resource, namespace=namespace)


def _qualified(resource: str) -> str:
    """``agentruntimes/status`` → ``agentruntimes.omnia.altairalabs.ai/status``."""
    plural, slash, subresource = resource.partition("/")
    return f"{plural}.{GROUP}{slash}{subresource}"


def _list(objects: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


def can_i(plane: ControlPlane, user: str, verb: str, resource: str, *, namespace: str | None) -> bool:
    """``kubectl auth can-i`` as ``user``; ``resource`` is ``plural[.group][/subresource]``."""
    resource, _, subresource = resource.partition("/")
    where = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    if subresource:
        where.append(f"--subresource={subresource}")
    result = plane.kubectl("auth", "can-i", verb, resource, f"--as={user}", *where)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


@pytest.fixture
def release_factory(control_plane: ControlPlane, helm: charts.Helm, crds: None) -> Iterator[Any]:
    made: list[Release] = []

    def make(namespace: str, **values: Any) -> Release:
        release = Release(control_plane, helm, namespace=namespace, values=values)
        made.append(release)
        return release.apply()

    yield make
    for release in made:
        release.remove_cluster_objects()


@pytest.fixture
def other_namespace(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    name = f"other-{namespace}"[:63].rstrip("-")
    control_plane.kubectl("create", "namespace", name, check=True)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_operator_becomes_available_under_the_restricted_pod_security_standard(
    control_plane: ControlPlane, release_factory: Any, namespace: str
) -> None:
    """PodSecurity admission refuses non-compliant pods, so Available proves the pod spec is restricted-clean."""
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                          "pod-security.kubernetes.io/enforce-version=latest", check=True)
    release = release_factory(namespace)
    release.wait_available()
    release.wait_available(component="activator")

    for component in ("operator", "activator"):
        pods = harness.kubectl_json(control_plane, "get", "pods", f"--namespace={namespace}",
                                    f"--selector=app.kubernetes.io/component={component}")["items"]
        assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running", component
        service = release.of("Service", component)["metadata"]["name"]
        endpoints = harness.kubectl_json(control_plane, "get", "endpointslices", f"--namespace={namespace}",
                                         f"--selector=kubernetes.io/service-name={service}")
        assert [e["addresses"] for s in endpoints["items"] for e in s.get("endpoints") or []], \
            f"the {component}'s Service has no pod"


def test_cluster_wide_install_grants_the_operator_its_rules_everywhere_and_nothing_more(
    release_factory: Any, namespace: str, other_namespace: str
) -> None:
    release = release_factory(namespace)
    for where in (namespace, other_namespace, None):
        assert release.can("watch", f"agentruntimes.{GROUP}", namespace=where)
        assert release.can("patch", f"agentruntimes.{GROUP}/status", namespace=where)
        assert release.can("create", "deployments.apps", namespace=where)
        assert release.can("list", "secrets", namespace=where)
    # Secret values are never read, and nothing the operator does not own is changed.
    assert not release.can("get", "secrets", namespace=other_namespace)
    assert not release.can("update", f"agentruntimes.{GROUP}", namespace=other_namespace)
    assert not release.can("delete", "deployments.apps", namespace=other_namespace)
    assert not release.can("create", "pods", namespace=other_namespace)
    assert not release.can("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert release.can("delete", "endpointslices.discovery.k8s.io", namespace=other_namespace)
    # The activator reads, everywhere, and never writes.
    assert release.can("watch", "endpointslices.discovery.k8s.io", component="activator")
    assert release.can("list", f"agentruntimes.{GROUP}", component="activator")
    for resource in ("endpointslices.discovery.k8s.io", f"agentruntimes.{GROUP}"):
        assert not release.can("patch", resource, namespace=other_namespace, component="activator")
    assert not release.can("get", "services", namespace=other_namespace, component="activator")
    assert not release.can("list", "secrets", namespace=other_namespace, component="activator")
    assert not release.can("list", "pods", namespace=other_namespace, component="activator")


def test_two_replicas_get_the_lease_rights_in_their_namespace_and_spread_over_nodes(
    control_plane: ControlPlane, release_factory: Any, namespace: str, other_namespace: str
) -> None:
    """replicaCount 2: leader election's Lease rights in the release namespace only, one pod per node."""
    release = release_factory(namespace, replicaCount=2)
    release.wait_available()
    for verb in ("get", "create", "update"):
        assert release.can(verb, "leases.coordination.k8s.io", namespace=namespace)
    assert not release.can("update", "leases.coordination.k8s.io", namespace=other_namespace)
    assert not release.can("delete", "leases.coordination.k8s.io", namespace=namespace)
    pods = harness.kubectl_json(control_plane, "get", "pods", f"--namespace={namespace}",
                                "--selector=app.kubernetes.io/component=operator")["items"]
    assert len(pods) == 2
    assert len({pod["spec"]["nodeName"] for pod in pods}) == 2
    (container,) = pods[0]["spec"]["containers"]
    assert "--leader-elect" in container["args"]


def test_user_roles_aggregate_into_view_edit_and_admin(
    control_plane: ControlPlane, user_roles: None, namespace: str
) -> None:
    """A user bound to a built-in role gets the matching rights on the four kinds, and no more."""
    for user, role in (("alice", "view"), ("bob", "edit"), ("carol", "admin")):
        control_plane.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
                              f"--namespace={namespace}", check=True)
    # The aggregation controller fills the built-in roles a moment after the ClusterRoles appear.
    harness.wait_for(lambda: can_i(control_plane, "alice", "get", f"agentruntimes.{GROUP}", namespace=namespace)
                     and can_i(control_plane, "bob", "create", f"promptpacks.{GROUP}", namespace=namespace),
                     timeout=60, what="aggregation into view and edit")

    expectations = [
        ("alice", "list", "providers", True),
        ("alice", "watch", "toolregistries", True),
        ("alice", "get", "agentruntimes/status", True),
        ("alice", "create", "agentruntimes", False),
        ("alice", "delete", "promptpacks", False),
        ("bob", "update", "agentruntimes", True),
        ("bob", "delete", "toolregistries", True),
        ("bob", "patch", "agentruntimes/scale", True),
        ("bob", "patch", "agentruntimes/status", False),
        ("carol", "create", "providers", True),
        ("carol", "deletecollection", "agentruntimes", True),
        ("dave", "get", "agentruntimes", False),
    ]
    wrong = [
        (user, verb, resource)
        for user, verb, resource, allowed in expectations
        if can_i(control_plane, user, verb, _qualified(resource), namespace=namespace) != allowed
    ]
    assert not wrong

    # And through real requests, authenticated as the users themselves.
    alice = control_plane.add_user("alice").kubeconfig
    bob = control_plane.add_user("bob").kubeconfig
    pack = (EXAMPLE / "promptpack.yaml").read_text()
    refused = control_plane.kubectl("create", f"--namespace={namespace}", "-f", "-", input=pack, kubeconfig=alice)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    control_plane.kubectl("create", f"--namespace={namespace}", "-f", "-", input=pack, kubeconfig=bob, check=True)
    listed = harness.kubectl_json(control_plane, "get", "promptpacks", f"--namespace={namespace}", kubeconfig=alice)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["support-prompts"]


def test_namespaced_operator_runs_the_support_agent_with_the_charts_rights_and_command_line(
    control_plane: ControlPlane, release_factory: Any, namespace: str, other_namespace: str, tmp_path: Path
) -> None:
    """The chart's Role, ServiceAccount, arguments and environment are enough to reconcile the example agent,
    whose Redis sessions use the default store the release names (sessionStore.redis.secretRef)."""
    release = release_factory(namespace, watchNamespaces=[namespace],
                              sessionStore={"redis": {"secretRef": {"name": "omnia-session-redis", "key": "url"}}})
    assert {obj["metadata"]["labels"]["app.kubernetes.io/component"] for obj in release.objects
            if obj["kind"] in CLUSTER_SCOPED} == {"activator"}, "the operator holds no cluster-wide right"
    assert release.can("watch", f"agentruntimes.{GROUP}", namespace=namespace)
    assert not release.can("watch", f"agentruntimes.{GROUP}", namespace=other_namespace)
    assert not release.can("watch", f"agentruntimes.{GROUP}")
    # The activator's EndpointSlices, in the release namespace (it is the watched one here too).
    assert release.can("watch", "endpointslices.discovery.k8s.io", namespace=namespace)
    assert not release.can("watch", "endpointslices.discovery.k8s.io", namespace=other_namespace)

    token = control_plane.create_token(namespace=namespace, service_account=release.service_account)
    kubeconfig = control_plane.kubeconfig_for_token(token, name=f"chart-operator-{namespace}")
    with ChartOperator(release, kubeconfig=kubeconfig, log_file=tmp_path / "operator.log") as operator:
        harness.apply(control_plane, [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic-api-key"},
                                       "stringData": {"api-key": "sk-test-not-a-real-key"}},
                                      {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "omnia-session-redis"},
                                       "stringData": {"url": "redis://redis.invalid:6379/0"}}], namespace=namespace)
        control_plane.kubectl("apply", f"--namespace={namespace}", "-f", str(EXAMPLE / "promptpack.yaml"),
                              "-f", str(EXAMPLE / "provider.yaml"), "-f", str(EXAMPLE / "agentruntime.yaml"),
                              check=True)
        deployment = harness.wait_for(lambda: harness.get(control_plane, "deployment/support-agent", namespace),
                                      timeout=120, what=f"deployment/support-agent (log: {operator.log_file})")
        images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        assert images == {operator.env["OMNIA_IMAGE"]}
        agent = harness.wait_for(
            lambda: harness.condition(harness.get(control_plane, "agentruntime/support-agent", namespace),
                                      "Ready").get("status") == "True"
            and harness.get(control_plane, "agentruntime/support-agent", namespace),
            timeout=120, what="support-agent Ready",
        )
        assert agent["status"]["phase"] == "Running"
        assert harness.get(control_plane, "secret/support-agent-session-store", namespace) is not None


def test_helm_installs_upgrades_and_uninstalls_the_chart(
    control_plane: ControlPlane, helm: charts.Helm, crds: None, namespace: str
) -> None:
    """The user's path: helm install --wait, helm upgrade, helm uninstall (which keeps the CRDs)."""
    release = "omnia-" + namespace.rsplit("-", 1)[-1]
    values = helm.values_file({"watchNamespaces": [namespace], "userRoles": {"create": False}})
    common = [f"--namespace={namespace}", "--wait", "--timeout=3m"]
    kubeconfig = control_plane.kubeconfig

    installed = helm.run("install", release, str(charts.CHART), f"--values={values}", *common,
                         kubeconfig=kubeconfig, timeout=240)
    assert f"these namespaces only: {namespace}" in installed.stdout
    assert f"rollout status deployment/{release}-operator" in installed.stdout
    deployment = harness.get(control_plane, f"deployment/{release}-operator", namespace)
    assert deployment["status"]["availableReplicas"] == 1

    helm.run("upgrade", release, str(charts.CHART), f"--values={values}", "--set=operator.workers=2", *common,
             kubeconfig=kubeconfig, timeout=240)
    deployment = harness.get(control_plane, f"deployment/{release}-operator", namespace)
    assert "--workers=2" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["status"]["availableReplicas"] == 1

    helm.run("uninstall", release, f"--namespace={namespace}", "--wait", kubeconfig=kubeconfig, timeout=240)
    assert harness.get(control_plane, f"deployment/{release}-operator", namespace) is None
    assert harness.get(control_plane, f"role/{release}-operator", namespace) is None
    assert control_plane.kubectl("get", f"crd/agentruntimes.{GROUP}").returncode == 0


class ChartOperator:
    """The chart's operator container as a local process: its args and env, with the liveness port moved.

    A context manager: started and healthy on entry, stopped on exit (with
    its log printed when the block failed).
    """

    def __init__(self, release: Release, *, kubeconfig: Path, log_file: Path) -> None:
        (container,) = release.deployment["spec"]["template"]["spec"]["containers"]
        self.port = harness.free_port()
        self.args = [f"--liveness=127.0.0.1:{self.port}" if arg.startswith("--liveness=") else arg
                     for arg in container["args"]]
        self.env = {item["name"]: item["value"] for item in container["env"]}
        self.kubeconfig = kubeconfig
        self.log_file = log_file
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChartOperator:
        env = {key: value for key, value in os.environ.items() if key not in ("KUBECONFIG", "OMNIA_IMAGE")}
        env |= {**self.env, "KUBECONFIG": str(self.kubeconfig)}
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen([sys.executable, "-m", "omnia", *self.args], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=charts.REPO,
                                           start_new_session=True)
        harness.wait_for(self._healthy, timeout=60, what=f"the operator's /healthz (log: {self.log_file})")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if exc_info[0] is not None:
            print(f"--- operator log ({self.log_file}) ---\n{self._log_tail()}")

    def _healthy(self) -> bool:
        assert self._popen is not None
        if self._popen.poll() is not None:
            raise AssertionError(f"the operator exited with {self._popen.returncode}:\n{self._log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _log_tail(self) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-60:])
