"""The operator's credentials from kubeconfigs as managed clusters write them: exec credential plugins.

EKS, GKE and AKS kubeconfigs carry no token: their user runs a command
(``aws eks get-token``…) that prints a short-lived one. Here the plugin is a
small script that prints a ServiceAccount token of the test control plane
from a file, so the test can hand out, revoke and replace tokens, and counts
its runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import kopf
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omnia.operator import applying, credentials  # noqa: E402
from tests.operator import harness  # noqa: E402

pytestmark = pytest.mark.cluster

READER = "reader"

PLUGIN = textwrap.dedent(
    """
    import json, pathlib, sys
    token_file, runs_file = map(pathlib.Path, sys.argv[1:3])
    with runs_file.open("a") as runs:
        runs.write("run\\n")
    token = token_file.read_text().strip()
    if not token:
        sys.exit("no token to give")
    credential = {"token": token}
    if len(sys.argv) > 3:
        credential["expirationTimestamp"] = sys.argv[3]
    print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                      "status": credential}))
    """
)


class Plugin:
    """An exec plugin and its kubeconfig; ``token`` is what it prints next, ``runs`` how often it ran."""

    def __init__(self, plane, directory: Path, *, expiration: str | None = None) -> None:
        self.token_file = directory / "token"
        self.runs_file = directory / "runs"
        self.token_file.write_text("")
        self.runs_file.write_text("")
        script = directory / "plugin.py"
        script.write_text(PLUGIN)
        args = [str(script), str(self.token_file), str(self.runs_file)] + ([expiration] if expiration else [])
        exec_user = {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": args,
                     "interactiveMode": "Never"}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": plane.server_url,
                                                      "certificate-authority": str(plane.ca_file)}}],
            "users": [{"name": "exec", "user": {"exec": exec_user}}],
            "contexts": [{"name": "exec", "context": {"cluster": "test", "user": "exec"}}],
            "current-context": "exec",
        }
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(config))

    @property
    def runs(self) -> int:
        return len(self.runs_file.read_text().splitlines())

    def give(self, token: str) -> None:
        self.token_file.write_text(token)


@pytest.fixture
def reader(control_plane, namespace):
    """A ServiceAccount that may read ConfigMaps in ``namespace`` (and nothing else)."""
    control_plane.kubectl("create", "serviceaccount", READER, f"--namespace={namespace}", check=True)
    control_plane.kubectl("create", "rolebinding", READER, "--clusterrole=view",
                          f"--serviceaccount={namespace}:{READER}", f"--namespace={namespace}", check=True)
    return namespace


def bound_token(plane, namespace: str, secret: str) -> str:
    """A reader token that stops working when the Secret ``secret`` is deleted."""
    plane.kubectl("create", "secret", "generic", secret, f"--namespace={namespace}", check=True)
    return plane.kubectl("create", "token", READER, f"--namespace={namespace}", "--bound-object-kind=Secret",
                         f"--bound-object-name={secret}", check=True).stdout.strip()


async def read_configmap(source: credentials.Credentials, namespace: str) -> dict | None:
    client = applying.KubeClient.from_credentials(source)
    try:
        return await client.get("v1", "ConfigMap", namespace=namespace, name="kube-root-ca.crt")
    finally:
        await client.aclose()


def wait_for_root_ca(plane, namespace: str) -> None:
    harness.wait_for(lambda: harness.get(plane, "configmap/kube-root-ca.crt", namespace), timeout=60,
                     what="the namespace's kube-root-ca.crt")


def test_an_exec_plugin_kubeconfig_authenticates_the_operator(control_plane, reader, tmp_path):
    """Why: with only a basic loader, an exec-plugin kubeconfig sent anonymous requests and every call failed."""
    namespace = reader
    wait_for_root_ca(control_plane, namespace)
    plugin = Plugin(control_plane, tmp_path)
    plugin.give(control_plane.create_token(namespace=namespace, service_account=READER))

    source = credentials.Kubeconfig.load(str(plugin.kubeconfig))
    found = asyncio.run(read_configmap(source, namespace))
    info = source.connection()

    assert found is not None and found["metadata"]["name"] == "kube-root-ca.crt"
    assert (info.scheme, bool(info.token), info.server) == ("Bearer", True, control_plane.server_url)
    assert plugin.runs == 1


def test_a_refused_token_is_fetched_again_from_the_plugin(control_plane, reader, tmp_path):
    """Why: exec tokens are short-lived (15 minutes on EKS); an operator that kept its first one would stop."""
    namespace = reader
    wait_for_root_ca(control_plane, namespace)
    plugin = Plugin(control_plane, tmp_path)
    plugin.give(bound_token(control_plane, namespace, "first-binding"))
    source = credentials.Kubeconfig.load(str(plugin.kubeconfig))
    assert asyncio.run(read_configmap(source, namespace)) is not None

    control_plane.kubectl("delete", "secret", "first-binding", f"--namespace={namespace}", check=True)
    with control_plane.token_http_client(plugin.token_file.read_text()) as http:
        harness.wait_for(lambda: http.get("/api/v1/namespaces").status_code == 401, timeout=30,
                         what="the first token refused")
    plugin.give(bound_token(control_plane, namespace, "second-binding"))

    found = asyncio.run(read_configmap(source, namespace))

    assert found is not None
    assert plugin.runs == 2


def test_a_token_about_to_expire_is_replaced_before_it_is_sent(control_plane, reader, tmp_path):
    namespace = reader
    wait_for_root_ca(control_plane, namespace)
    plugin = Plugin(control_plane, tmp_path, expiration="2000-01-01T00:00:00Z")
    plugin.give(control_plane.create_token(namespace=namespace, service_account=READER))
    source = credentials.Kubeconfig.load(str(plugin.kubeconfig))

    asyncio.run(read_configmap(source, namespace))
    asyncio.run(read_configmap(source, namespace))

    assert plugin.runs == 3, "the plugin runs again before each request while its token is expired"


def test_an_exec_plugin_that_fails_is_a_login_error_not_anonymous_requests(control_plane, tmp_path):
    plugin = Plugin(control_plane, tmp_path)  # no token to give: the plugin exits 1

    with pytest.raises(kopf.LoginError, match="gave no credentials"):
        credentials.Kubeconfig.load(str(plugin.kubeconfig))


def test_the_operator_runs_on_an_exec_plugin_kubeconfig(control_plane, namespace, tmp_path):
    """The whole operator (kopf's watches and the operator's own client) on exec-plugin credentials."""
    harness.install_crds(control_plane)
    token_config = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    token = json.loads(token_config.read_text())["users"][0]["user"]["token"]
    plugin = Plugin(control_plane, tmp_path)
    plugin.give(token)
    process = harness.OperatorProcess(kubeconfig=plugin.kubeconfig, namespaces=[namespace],
                                      log_file=tmp_path / "operator.log")
    process.start()
    try:
        harness.apply(control_plane, [
            {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": "prompts"},
             "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
        ], namespace=namespace)
        ready = harness.wait_for(
            lambda: harness.condition(harness.get(control_plane, "promptpack/prompts", namespace) or {},
                                      "Ready").get("status") == "True",
            timeout=90, what="the PromptPack reconciled by the operator",
            explain=lambda: process.log_tail(40))
    finally:
        process.stop()
    assert ready and plugin.runs >= 1
