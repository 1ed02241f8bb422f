"""The operator on a real control plane: from kubectl apply to Available pods, and back.

Each test runs its own operator process (``python -m omnia operator``) under
the ServiceAccount and ClusterRole of deploy/rbac/, serving a namespace of
its own; KWOK makes the pods Running and Ready, and kube-controller-manager
collects the garbage, so what is checked is what a cluster would do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omnia.agent import Agent  # noqa: E402
from omnia.config import AgentConfig  # noqa: E402
from omnia.providers import create_provider  # noqa: E402
from omnia.sessions import MemoryStore  # noqa: E402
from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

EXAMPLE = harness.REPO / "examples" / "support-agent"
API_KEY = "sk-test-not-a-real-key-0123456789"
OWNED = ("serviceaccount", "configmap", "service", "deployment", "horizontalpodautoscaler", "poddisruptionbudget",
         "networkpolicy", "secret")
SESSION_SECRET = "omnia-session-redis"
REDIS_URL = "redis://:not-a-real-password@redis.invalid:6379/0"
PROMETHEUS = "http://prometheus.monitoring.svc:9090"


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture
def operator(control_plane, crds, namespace, tmp_path):
    """An operator serving ``namespace``, started; stopped afterwards (its log is printed on failure).

    Its default Redis session store is a Secret in ``namespace`` (the SPEC's agent names none of its own);
    it is given a Prometheus (opt-in) and no activator.
    """
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    harness.apply(control_plane, secret(SESSION_SECRET, url=REDIS_URL), namespace=namespace)
    process = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace], log_file=tmp_path / "operator.log",
                                      extra_args=[f"--default-session-secret=redis={namespace}/{SESSION_SECRET}:url",
                                                  f"--prometheus-url={PROMETHEUS}"])
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


def example(name: str, namespace: str | None = None) -> dict:
    manifest = yaml.safe_load((EXAMPLE / name).read_text())
    if namespace:
        manifest["metadata"]["namespace"] = namespace
    return manifest


def secret(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def deploy_support_agent(plane, namespace: str) -> None:
    harness.apply(plane, [secret("anthropic-api-key", **{"api-key": API_KEY})], namespace=namespace)
    plane.kubectl("apply", f"--namespace={namespace}", "-f", str(EXAMPLE / "promptpack.yaml"),
                  "-f", str(EXAMPLE / "provider.yaml"), "-f", str(EXAMPLE / "agentruntime.yaml"), check=True)


def mock_agent(name: str, *, pack: str = "prompts", provider: str = "mock", **spec) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime", "metadata": {"name": name},
            "spec": {"promptPackRef": {"name": pack}, "providerRef": {"name": provider}, **spec}}


def mock_provider(name: str = "mock", **spec) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider", "metadata": {"name": name},
            "spec": {"type": "mock", **spec}}


def prompt_pack(name: str = "prompts", *, version: str = "1.0.0", prompt: str = "You are helpful.", **spec) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": name},
            "spec": {"version": version, "systemPrompt": prompt, **spec}}


def ready(plane, namespace: str, name: str, kind: str = "agentruntime") -> dict | None:
    """The object once its Ready condition is True for its current generation."""
    obj = get(plane, f"{kind}/{name}", namespace)
    if condition(obj, "Ready").get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
        return obj
    return None


def wait_ready(plane, namespace: str, name: str, kind: str = "agentruntime", timeout: float = 120) -> dict:
    return wait_for(lambda: ready(plane, namespace, name, kind), timeout=timeout, what=f"{kind}/{name} Ready",
                    explain=lambda: (get(plane, f"{kind}/{name}", namespace) or {}).get("status"))


def events(plane, namespace: str, name: str) -> list[dict]:
    items = harness.kubectl_json(plane, "get", "events", f"--namespace={namespace}")["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def agent_config(plane, namespace: str, name: str) -> AgentConfig:
    config_map = get(plane, f"configmap/{name}-config", namespace)
    return AgentConfig.from_json(config_map["data"]["agent.json"])


def patch(plane, resource: str, namespace: str, body: dict) -> None:
    plane.kubectl("patch", resource, f"--namespace={namespace}", "--type=merge", "-p", json.dumps(body), check=True)


def assert_subset(expected, actual, path: str = "") -> None:
    """Everything in ``expected`` is in ``actual`` (the API server adds defaults, never removes)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not a mapping"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (left, right) in enumerate(zip(expected, actual)):
            assert_subset(left, right, f"{path}[{index}]")
    else:
        assert expected == actual, f"{path}: {actual!r} != {expected!r}"


# --- from apply to pods ---------------------------------------------------------


def test_support_agent_example_goes_from_apply_to_available_pods(control_plane, namespace, operator, tmp_path):
    """The SPEC's AgentRuntime, unchanged, with its PromptPack, Provider and key Secret: two Available pods,
    every owned object as ``omnia render`` prints it, owned by the agent, and no secret in any ConfigMap."""
    deploy_support_agent(control_plane, namespace)

    agent = wait_ready(control_plane, namespace, "support-agent")
    status = agent["status"]
    assert status["phase"] == "Running"
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (2, 2, 2)
    assert status["activePromptVersions"] == ["1.0.0"]
    assert status["endpoint"] == f"ws://support-agent.{namespace}.svc:8080/ws"
    assert status["selector"] == "app.kubernetes.io/instance=support-agent,app.kubernetes.io/name=omnia-agent"
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "ProviderReady": ("True", "ProviderReady"),
        "PromptPackReady": ("True", "PromptPackReady"),
        "ToolsReady": ("True", "NoToolRegistry"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"),
        "Ready": ("True", "AgentReady"),
    }
    assert all(c["lastTransitionTime"] for c in status["conditions"])
    pods = harness.kubectl_json(control_plane, "get", "pods", f"--namespace={namespace}",
                                f"--selector={status['selector']}")["items"]
    assert len(pods) == 2 and all(pod["status"]["phase"] == "Running" for pod in pods)

    # What the operator created is what `omnia render` prints for the same manifests.
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name in ("promptpack.yaml", "provider.yaml", "agentruntime.yaml"):
        (manifests / name).write_text(yaml.safe_dump(example(name, namespace)))
    rendered = subprocess.run([sys.executable, "-m", "omnia", "render", str(manifests), "--image",
                               operator.image, *operator.extra_args],
                              capture_output=True, text=True, check=True).stdout
    objects = list(yaml.safe_load_all(rendered))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects][1:] == [
        ("Secret", "support-agent-session-store"), ("ServiceAccount", "support-agent"), ("ConfigMap", "support-agent-config"), ("Service", "support-agent"),
        ("Deployment", "support-agent"), ("HorizontalPodAutoscaler", "support-agent"),
        ("PodDisruptionBudget", "support-agent"), ("NetworkPolicy", "support-agent"),
    ]
    for obj in objects:
        live = get(control_plane, f"{obj['kind'].lower()}/{obj['metadata']['name']}", namespace)
        assert live is not None, obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]["metadata"]["annotations"]
            del template["omnia.altairalabs.ai/config-hash"]  # covers Secret versions, unknown offline
        assert_subset(obj, live, obj["kind"])
        if obj["metadata"]["name"].startswith("support-agent"):
            owner = live["metadata"]["ownerReferences"]
            assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owner] == [
                ("AgentRuntime", "support-agent", agent["metadata"]["uid"], True)]

    deployment = get(control_plane, "deployment/support-agent", namespace)
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["omnia.altairalabs.ai/config-hash"] == status["configHash"]
    runtime = next(c for c in template["spec"]["containers"] if c["name"] == "runtime")
    assert runtime["env"] == [
        {"name": "OMNIA_PROVIDER_API_KEY", "valueFrom": {"secretKeyRef": {"name": "anthropic-api-key", "key": "api-key"}}},
        {"name": "OMNIA_SESSION_URL", "valueFrom": {"secretKeyRef": {"name": "support-agent-session-store", "key": "url"}}},
    ]
    config_maps = harness.kubectl_json(control_plane, "get", "configmaps", f"--namespace={namespace}")["items"]
    for value in (API_KEY, REDIS_URL):
        assert value not in json.dumps(config_maps)
        assert base64.b64encode(value.encode()).decode() not in json.dumps(config_maps)

    pack = get(control_plane, "promptpack/support-prompts", namespace)
    assert (pack["status"]["phase"], pack["status"]["stableVersion"]) == ("Ready", "1.0.0")
    assert pack["status"]["consumers"] == ["support-agent"]
    assert [entry["version"] for entry in pack["status"]["history"]] == ["1.0.0"]
    provider = wait_ready(control_plane, namespace, "claude-provider", kind="provider")
    assert condition(provider, "CredentialsFound")["status"] == "True"
    assert not [(e["reason"], e["message"]) for e in events(control_plane, namespace, "support-agent")
                if e["type"] == "Warning"]
    # The liveness endpoint reports the reconciler's counters (kopf caches probes for 10s).
    probe = wait_for(lambda: (p := operator.probe()["reconciler"]) and p["reconciles"] > 0 and p, timeout=20,
                     what="reconciles in the liveness probe")
    assert {"reconcile_p50_ms", "reconcile_p99_ms", "queued", "failures"} <= set(probe)


def test_secret_edit_rolls_exactly_the_agents_that_use_it(control_plane, namespace, operator):
    """Editing a provider's key Secret reconciles the agents whose Provider names it, through the Provider:
    their config hash changes and their pods roll; an agent on another Provider is not touched."""
    harness.apply(control_plane, [
        secret("key-a", key="one"), secret("key-b", key="two"),
        {**mock_provider("provider-a"), "spec": {"type": "openai", "credentials": {"secretRef": {"name": "key-a", "key": "key"}}}},
        {**mock_provider("provider-b"), "spec": {"type": "openai", "credentials": {"secretRef": {"name": "key-b", "key": "key"}}}},
        prompt_pack(), mock_agent("agent-a", provider="provider-a"), mock_agent("agent-b", provider="provider-b"),
    ], namespace=namespace)
    before = {name: wait_ready(control_plane, namespace, name) for name in ("agent-a", "agent-b")}
    generation_b = get(control_plane, "deployment/agent-b", namespace)["metadata"]["generation"]

    harness.apply(control_plane, [secret("key-a", key="rotated")], namespace=namespace)

    after_a = wait_for(lambda: (a := ready(control_plane, namespace, "agent-a"))
                       and a["status"]["configHash"] != before["agent-a"]["status"]["configHash"] and a,
                       timeout=60, what="agent-a rolled")
    deployment = get(control_plane, "deployment/agent-a", namespace)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["omnia.altairalabs.ai/config-hash"] == \
        after_a["status"]["configHash"]
    assert deployment["status"]["updatedReplicas"] == 1
    assert get(control_plane, "agentruntime/agent-b", namespace)["status"]["configHash"] == \
        before["agent-b"]["status"]["configHash"]
    assert get(control_plane, "deployment/agent-b", namespace)["metadata"]["generation"] == generation_b


# --- prompt packs -----------------------------------------------------------------


def test_prompt_pack_edit_rolls_the_agents_and_status_shows_the_new_version(control_plane, namespace, operator):
    """A new version of the example pack (a canary at 10%) reaches the agents' config, rolls their pods and
    shows in their status; setting the version back rolls the canary back."""
    deploy_support_agent(control_plane, namespace)
    before = wait_ready(control_plane, namespace, "support-agent")
    pack = example("promptpack.yaml")
    pack["spec"]["version"] = "1.1.0"
    pack["spec"]["variables"]["company"] = "Example Corp International"
    harness.apply(control_plane, pack, namespace=namespace)

    agent = wait_for(lambda: (a := ready(control_plane, namespace, "support-agent"))
                     and a["status"]["activePromptVersions"] == ["1.0.0", "1.1.0"] and a,
                     timeout=90, what="the canary in the agent's status")
    assert agent["status"]["configHash"] != before["status"]["configHash"]
    assert agent["status"]["updatedReplicas"] == 2
    pack_status = get(control_plane, "promptpack/support-prompts", namespace)["status"]
    assert (pack_status["phase"], pack_status["stableVersion"], pack_status["canaryVersion"],
            pack_status["canaryWeight"]) == ("Canary", "1.0.0", "1.1.0", 10)
    config = agent_config(control_plane, namespace, "support-agent")
    assert (config.prompts.stable.version, config.prompts.canary.version, config.prompts.canary_weight) == \
        ("1.0.0", "1.1.0", 10)
    assert config.prompts.canary.variables["company"] == "Example Corp International"
    snapshots = harness.kubectl_json(control_plane, "get", "configmaps", f"--namespace={namespace}",
                                     "--selector=omnia.altairalabs.ai/prompt-pack=support-prompts")["items"]
    assert sorted(s["metadata"]["annotations"]["omnia.altairalabs.ai/prompt-version"] for s in snapshots) == \
        ["1.0.0", "1.1.0"]
    assert all(s["immutable"] for s in snapshots)

    harness.apply(control_plane, example("promptpack.yaml"), namespace=namespace)
    wait_for(lambda: (a := ready(control_plane, namespace, "support-agent"))
             and a["status"]["activePromptVersions"] == ["1.0.0"], timeout=90, what="the rollback")
    pack_status = get(control_plane, "promptpack/support-prompts", namespace)["status"]
    assert (pack_status["phase"], pack_status["stableVersion"]) == ("Ready", "1.0.0")
    assert "canaryVersion" not in pack_status
    reasons = [e["reason"] for e in events(control_plane, namespace, "support-prompts")]
    assert "CanaryStarted" in reasons and "RolledBack" in reasons


def test_canary_at_20_percent_gives_about_20_percent_of_new_sessions_then_is_promoted(
    control_plane, namespace, operator
):
    """The runtime, configured from the operator's ConfigMap, sends ~20% of 1000 new sessions to the candidate;
    after the last step the candidate is promoted and every new session gets it."""
    steps = [{"weight": 20, "pause": "1h"}]
    harness.apply(control_plane, [mock_provider(), prompt_pack(rollout={"strategy": "canary", "steps": steps}),
                                  mock_agent("agent")], namespace=namespace)
    wait_ready(control_plane, namespace, "agent")
    harness.apply(control_plane, prompt_pack(version="2.0.0", prompt="You are terse.",
                                             rollout={"strategy": "canary", "steps": steps}), namespace=namespace)
    wait_for(lambda: (a := ready(control_plane, namespace, "agent"))
             and a["status"]["activePromptVersions"] == ["1.0.0", "2.0.0"], timeout=90, what="the canary")

    config = agent_config(control_plane, namespace, "agent")
    assert config.prompts.canary_weight == 20
    counts = asyncio.run(_new_sessions(config, 1000))
    share = counts["2.0.0"] / 1000
    assert 0.16 <= share <= 0.24, counts  # 20% ± 3 standard deviations of a binomial(1000, 0.2)

    short = [{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1s"}]
    harness.apply(control_plane, prompt_pack(version="2.0.0", prompt="You are terse.",
                                             rollout={"strategy": "canary", "steps": short}), namespace=namespace)
    wait_for(lambda: (a := ready(control_plane, namespace, "agent"))
             and a["status"]["activePromptVersions"] == ["2.0.0"], timeout=90, what="the promotion")
    pack_status = get(control_plane, "promptpack/prompts", namespace)["status"]
    assert (pack_status["phase"], pack_status["stableVersion"]) == ("Ready", "2.0.0")
    assert [entry["version"] for entry in pack_status["history"]] == ["1.0.0", "2.0.0"]
    config = agent_config(control_plane, namespace, "agent")
    assert config.prompts.canary is None
    assert [prompt.version for prompt in config.prompts.retained] == ["1.0.0"]
    assert asyncio.run(_new_sessions(config, 50)) == Counter({"2.0.0": 50})
    assert "Promoted" in [e["reason"] for e in events(control_plane, namespace, "prompts")]


def _pods(plane, namespace: str, agent: str) -> list[tuple[str, str]]:
    selector = f"app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance={agent}"
    items = harness.kubectl_json(plane, "get", "pods", f"--namespace={namespace}", f"--selector={selector}")["items"]
    return sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in items
                  if not p["metadata"].get("deletionTimestamp"))


def test_a_weight_step_a_promotion_and_a_rollback_restart_no_pod(control_plane, namespace, operator):
    """Only the routing changes: the rendered config does, the pod template and the pods do not."""
    steps = [{"weight": 20, "pause": "1h"}]
    harness.apply(control_plane, [mock_provider(), prompt_pack(rollout={"strategy": "canary", "steps": steps}),
                                  mock_agent("agent")], namespace=namespace)
    wait_ready(control_plane, namespace, "agent")

    def canary(weight_steps: list[dict], version: str = "2.0.0") -> None:
        harness.apply(control_plane, prompt_pack(version=version, prompt="You are terse.",
                                                 rollout={"strategy": "canary", "steps": weight_steps}),
                      namespace=namespace)

    canary(steps)
    wait_for(lambda: (a := ready(control_plane, namespace, "agent"))
             and a["status"]["activePromptVersions"] == ["1.0.0", "2.0.0"], timeout=90, what="the canary")
    wait_for(lambda: len(_pods(control_plane, namespace, "agent")) == 1, timeout=90, what="the old pod gone")
    template = get(control_plane, "deployment/agent", namespace)["spec"]["template"]
    pods = _pods(control_plane, namespace, "agent")
    assert agent_config(control_plane, namespace, "agent").prompts.canary_weight == 20

    canary([{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1h"}])
    wait_for(lambda: agent_config(control_plane, namespace, "agent").prompts.canary_weight == 50,
             timeout=90, what="the weight step in the agent's config")
    assert get(control_plane, "deployment/agent", namespace)["spec"]["template"] == template
    assert _pods(control_plane, namespace, "agent") == pods

    canary([{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1s"}])
    wait_for(lambda: (a := ready(control_plane, namespace, "agent"))
             and a["status"]["activePromptVersions"] == ["2.0.0"], timeout=90, what="the promotion")
    promoted_pods = pods
    config = agent_config(control_plane, namespace, "agent")
    assert (config.prompts.stable.version, config.prompts.canary) == ("2.0.0", None)
    assert [prompt.version for prompt in config.prompts.retained] == ["1.0.0"]
    assert get(control_plane, "deployment/agent", namespace)["spec"]["template"] == template
    assert _pods(control_plane, namespace, "agent") == pods
    assert ready(control_plane, namespace, "agent")["status"]["configHash"] == \
        template["metadata"]["annotations"]["omnia.altairalabs.ai/config-hash"]

    # New content rolls the pods; setting the version back (a rollback) does not.
    harness.apply(control_plane, prompt_pack(version="3.0.0", prompt="You are chatty.",
                                             rollout={"strategy": "canary", "steps": steps}), namespace=namespace)
    wait_for(lambda: (a := ready(control_plane, namespace, "agent"))
             and a["status"]["activePromptVersions"] == ["2.0.0", "3.0.0"], timeout=90, what="the second canary")
    wait_for(lambda: len(_pods(control_plane, namespace, "agent")) == 1, timeout=90, what="the old pod gone")
    template = get(control_plane, "deployment/agent", namespace)["spec"]["template"]
    pods = _pods(control_plane, namespace, "agent")
    assert [name for name, _ in pods] != [name for name, _ in promoted_pods]
    canary(steps)
    wait_for(lambda: agent_config(control_plane, namespace, "agent").prompts.canary is None,
             timeout=90, what="the rollback in the agent's config")
    assert get(control_plane, "deployment/agent", namespace)["spec"]["template"] == template
    assert _pods(control_plane, namespace, "agent") == pods


async def _new_sessions(config: AgentConfig, count: int) -> Counter:
    agent = Agent(config=config, provider=create_provider(config.provider, env={}), store=MemoryStore())
    versions = Counter()
    for _ in range(count):
        session, _ = await agent.open_session(session_id=None)
        versions[session.prompt_version] += 1
    return versions


# --- errors -------------------------------------------------------------------------


def test_missing_references_give_conditions_and_events_and_recover_when_created(control_plane, namespace, operator):
    """An agent whose PromptPack and Provider do not exist gets False conditions with reasons and Warning
    Events, no Deployment and no crash loop; creating them (the Provider's key last) starts it at once."""
    harness.apply(control_plane, mock_agent("agent", provider="keyed"), namespace=namespace)

    agent = wait_for(lambda: (a := get(control_plane, "agentruntime/agent", namespace))
                     and condition(a, "PromptPackReady").get("reason") == "PromptPackNotFound" and a,
                     timeout=60, what="PromptPackNotFound")
    assert agent["status"]["phase"] == "Pending"
    assert condition(agent, "ProviderReady")["reason"] == "ProviderNotFound"
    assert "'keyed' not found" in condition(agent, "ProviderReady")["message"]
    assert condition(agent, "Ready")["status"] == "False"
    warnings = {e["reason"] for e in events(control_plane, namespace, "agent") if e["type"] == "Warning"}
    assert {"PromptPackNotFound", "ProviderNotFound"} <= warnings
    assert get(control_plane, "deployment/agent", namespace) is None

    keyed = {**mock_provider("keyed"), "spec": {"type": "claude", "credentials": {"secretRef": {"name": "key", "key": "api-key"}}}}
    harness.apply(control_plane, [prompt_pack(), keyed], namespace=namespace)
    agent = wait_for(lambda: (a := get(control_plane, "agentruntime/agent", namespace))
                     and condition(a, "ProviderReady").get("reason") == "CredentialsNotFound"
                     and condition(a, "PromptPackReady").get("status") == "True" and a,
                     timeout=60, what="CredentialsNotFound and the PromptPack found")
    assert "Secret 'key' not found" in condition(agent, "ProviderReady")["message"]
    provider = get(control_plane, "provider/keyed", namespace)
    assert (condition(provider, "CredentialsFound")["status"], provider["status"]["phase"]) == ("False", "Pending")
    assert operator.alive() and operator.healthy()

    harness.apply(control_plane, secret("key", **{"api-key": API_KEY}), namespace=namespace)
    wait_ready(control_plane, namespace, "agent", timeout=30)  # no backoff wait: the Secret's event starts it
    assert "CredentialsNotFound" in {e["reason"] for e in events(control_plane, namespace, "agent")}


def test_deleting_a_referenced_object_degrades_the_status_and_keeps_the_agent_running(control_plane, namespace, operator):
    """The Provider goes away: ProviderReady False, phase Degraded, a Warning; the Deployment and its pods stay."""
    harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("agent", replicas=2)], namespace=namespace)
    before = wait_ready(control_plane, namespace, "agent")

    control_plane.kubectl("delete", "provider/mock", f"--namespace={namespace}", check=True)
    agent = wait_for(lambda: (a := get(control_plane, "agentruntime/agent", namespace))
                     and a["status"]["phase"] == "Degraded" and a, timeout=60, what="Degraded")
    assert condition(agent, "ProviderReady")["reason"] == "ProviderNotFound"
    assert agent["status"]["configHash"] == before["status"]["configHash"]
    deployment = get(control_plane, "deployment/agent", namespace)
    assert deployment["status"]["availableReplicas"] == 2
    assert deployment["metadata"]["generation"] == 1 or deployment["spec"]["template"]["metadata"]["annotations"][
        "omnia.altairalabs.ai/config-hash"] == before["status"]["configHash"]
    assert "ProviderNotFound" in {e["reason"] for e in events(control_plane, namespace, "agent") if e["type"] == "Warning"}

    harness.apply(control_plane, mock_provider(), namespace=namespace)
    wait_ready(control_plane, namespace, "agent", timeout=30)


def test_deleting_the_agent_garbage_collects_everything_it_owns(control_plane, namespace, operator):
    """Deletion is Kubernetes' garbage collector's job: every owned object has the agent as its controller."""
    deploy_support_agent(control_plane, namespace)
    wait_ready(control_plane, namespace, "support-agent")
    special = {"configmap": "support-agent-config", "secret": "support-agent-session-store"}
    names = {kind: special.get(kind, "support-agent") for kind in OWNED}
    assert all(get(control_plane, f"{kind}/{name}", namespace) for kind, name in names.items())

    control_plane.kubectl("delete", "agentruntime/support-agent", f"--namespace={namespace}", check=True)

    wait_for(lambda: not any(get(control_plane, f"{kind}/{name}", namespace) for kind, name in names.items()),
             timeout=90, what="the garbage collector")
    wait_for(lambda: not harness.kubectl_json(control_plane, "get", "pods", f"--namespace={namespace}")["items"],
             timeout=90, what="the pods to go")
    pack = wait_for(lambda: (p := get(control_plane, "promptpack/support-prompts", namespace))
                    and not p["status"].get("consumers") and p, timeout=30, what="the pack's consumers")
    assert pack["status"]["stableVersion"] == "1.0.0"
    assert operator.alive()


# --- the default session store ----------------------------------------------------------


@pytest.fixture
def operator_home(control_plane, crds, namespace):
    """The operator's own namespace, apart from the one it serves, with deploy/rbac's rights there: list and
    watch of the default store's Secret only (session_stores.yaml, narrowed to ``SESSION_SECRET``)."""
    home = f"{namespace}-home"
    control_plane.kubectl("create", "namespace", home, check=True)
    kubeconfig = harness.operator_kubeconfig(control_plane, home=home, namespaces=[namespace])
    rbac = list(yaml.safe_load_all((harness.REPO / "deploy" / "rbac" / "session_stores.yaml").read_text()))
    for obj in rbac:
        obj["metadata"]["namespace"] = home
        for rule in obj.get("rules", []):
            rule["resourceNames"] = [SESSION_SECRET]
        for subject in obj.get("subjects", []):
            subject["namespace"] = home
    harness.apply(control_plane, rbac, namespace=home)
    yield home, kubeconfig
    control_plane.kubectl("delete", "namespace", home, "--wait=false")


def operator_with_default(kubeconfig, namespace: str, log_file, *, home: str | None) -> harness.OperatorProcess:
    extra = [f"--default-session-secret=redis={home}/{SESSION_SECRET}:url"] if home else []
    return harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace], log_file=log_file, extra_args=extra)


def test_spec_agent_waits_for_a_default_session_store_then_runs_on_a_mirror_of_it(
    control_plane, namespace, operator_home, tmp_path
):
    """The SPEC's AgentRuntime verbatim (Redis sessions, no secretRef) with no default store installed: Ready
    False with SessionStoreNotConfigured, a Warning Event, no Deployment. The operator restarted with the
    default (a Secret in its own namespace): the key is mirrored beside the agent, the runtime reads it,
    the agent becomes Ready. The operator may read that one Secret of its namespace and no other."""
    home, kubeconfig = operator_home
    log_file = tmp_path / "operator.log"
    first = operator_with_default(kubeconfig, namespace, log_file, home=None).start()
    try:
        deploy_support_agent(control_plane, namespace)
        agent = wait_for(lambda: (a := get(control_plane, "agentruntime/support-agent", namespace))
                         and condition(a, "Ready").get("reason") == "SessionStoreNotConfigured" and a,
                         timeout=60, what="SessionStoreNotConfigured",
                         explain=lambda: (get(control_plane, "agentruntime/support-agent", namespace) or {}).get("status"))
        ready = condition(agent, "Ready")
        assert ready["status"] == "False"
        assert "spec.session.secretRef" in ready["message"] and "sessionStore.redis.secretRef" in ready["message"]
        assert agent["status"]["phase"] == "Pending"
        wait_for(lambda: [e for e in events(control_plane, namespace, "support-agent")
                          if (e["type"], e["reason"]) == ("Warning", "SessionStoreNotConfigured")],
                 timeout=30, what="the Warning Event")
        assert get(control_plane, "deployment/support-agent", namespace) is None
        assert first.alive()
    finally:
        first.stop()

    harness.apply(control_plane, secret(SESSION_SECRET, url=REDIS_URL), namespace=home)
    second = operator_with_default(kubeconfig, namespace, log_file, home=home).start()
    try:
        agent = wait_ready(control_plane, namespace, "support-agent")
        mirror = get(control_plane, "secret/support-agent-session-store", namespace)
        assert base64.b64decode(mirror["data"]["url"]).decode() == REDIS_URL
        assert [(o["kind"], o["name"], o["uid"]) for o in mirror["metadata"]["ownerReferences"]] == [
            ("AgentRuntime", "support-agent", agent["metadata"]["uid"])]
        assert mirror["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "omnia-operator"
        assert mirror["metadata"]["annotations"]["omnia.altairalabs.ai/session-store-source"] == \
            f"{home}/{SESSION_SECRET}:url"
        deployment = get(control_plane, "deployment/support-agent", namespace)
        runtime = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "runtime")
        assert {"name": "OMNIA_SESSION_URL", "valueFrom": {"secretKeyRef": {
            "name": "support-agent-session-store", "key": "url"}}} in runtime["env"]
        assert agent_config(control_plane, namespace, "support-agent").session.url_env == "OMNIA_SESSION_URL"
        written = json.dumps([harness.kubectl_json(control_plane, "get", "configmaps,events", f"--namespace={namespace}"),
                              agent["status"]])
        assert REDIS_URL not in written and "not-a-real-password" not in written
        assert "not-a-real-password" not in log_file.read_text()

        def can(*args: str) -> str:
            return control_plane.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig).stdout.strip()

        assert can("list", f"secrets/{SESSION_SECRET}", f"--namespace={home}") == "yes"
        assert can("list", "secrets", f"--namespace={home}") == "no"
        assert can("get", f"secrets/{SESSION_SECRET}", f"--namespace={home}") == "no"
        assert can("patch", "secrets", f"--namespace={home}") == "no"
        assert can("create", "secrets", f"--namespace={namespace}") == "yes"
    finally:
        second.stop()
        print(f"--- operator log ({log_file}) ---\n{second.log_tail(150)}")


def test_rotating_the_default_session_store_rolls_the_agents_that_use_it(
    control_plane, namespace, operator_home, tmp_path
):
    """A new URL in the installation's Secret reaches the mirror and rolls the Deployments of the agents on
    the default store (config hash); an agent with its own secretRef is not touched."""
    home, kubeconfig = operator_home
    harness.apply(control_plane, secret(SESSION_SECRET, url=REDIS_URL), namespace=home)
    process = operator_with_default(kubeconfig, namespace, tmp_path / "operator.log", home=home).start()
    try:
        harness.apply(control_plane, [
            mock_provider(), prompt_pack(), secret("own-redis", url="redis://own.invalid:6379/0"),
            mock_agent("on-default", session={"type": "redis"}),
            mock_agent("on-own", session={"type": "redis", "secretRef": {"name": "own-redis", "key": "url"}}),
        ], namespace=namespace)
        before = {name: wait_ready(control_plane, namespace, name) for name in ("on-default", "on-own")}
        generation_own = get(control_plane, "deployment/on-own", namespace)["metadata"]["generation"]

        rotated = "redis://:rotated-password@redis.invalid:6379/0"
        harness.apply(control_plane, secret(SESSION_SECRET, url=rotated), namespace=home)

        after = wait_for(lambda: (a := ready(control_plane, namespace, "on-default"))
                         and a["status"]["configHash"] != before["on-default"]["status"]["configHash"] and a,
                         timeout=60, what="on-default rolled")
        deployment = get(control_plane, "deployment/on-default", namespace)
        assert deployment["spec"]["template"]["metadata"]["annotations"]["omnia.altairalabs.ai/config-hash"] == \
            after["status"]["configHash"]
        mirror = get(control_plane, "secret/on-default-session-store", namespace)
        assert base64.b64decode(mirror["data"]["url"]).decode() == rotated
        assert get(control_plane, "agentruntime/on-own", namespace)["status"]["configHash"] == \
            before["on-own"]["status"]["configHash"]
        assert get(control_plane, "deployment/on-own", namespace)["metadata"]["generation"] == generation_own
        assert get(control_plane, "secret/on-own-session-store", namespace) is None
    finally:
        process.stop()
        print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


# --- pods refused by the API server ----------------------------------------------------


def test_a_resource_quota_refusing_pods_shows_on_the_agent(control_plane, namespace, operator):
    """A namespace quota of one pod and an agent of two: the AgentRuntime says QuotaExceeded with
    the API's message (and a Warning Event), not only a rollout that never ends; more room, Ready."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "agents"},
             "spec": {"hard": {"pods": "1"}}}
    harness.apply(control_plane, [quota], namespace=namespace)
    wait_for(lambda: ((get(control_plane, "resourcequota/agents", namespace) or {}).get("status") or {}).get("hard"),
             timeout=30, what="the quota's status")
    harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("agent", replicas=2)], namespace=namespace)

    def refused():
        agent = get(control_plane, "agentruntime/agent", namespace)
        found = condition(agent, "Ready")
        return agent if found.get("reason") == "QuotaExceeded" else None

    agent = wait_for(refused, timeout=120, what="Ready=False QuotaExceeded",
                     explain=lambda: (get(control_plane, "agentruntime/agent", namespace) or {}).get("status"))
    found = condition(agent, "Ready")
    assert found["status"] == "False" and agent["status"]["phase"] == "Degraded"
    assert "is forbidden: exceeded quota: agents" in found["message"], found["message"]
    assert "limited: pods=1" in found["message"], found["message"]
    wait_for(lambda: any(e["reason"] == "QuotaExceeded" and e["type"] == "Warning"
                         for e in events(control_plane, namespace, "agent")), timeout=30, what="a QuotaExceeded Event")

    patch(control_plane, "resourcequota/agents", namespace, {"spec": {"hard": {"pods": "2"}}})
    wait_ready(control_plane, namespace, "agent", timeout=180)


# --- the optional objects -------------------------------------------------------------


def test_optional_objects_follow_the_spec(control_plane, namespace, operator):
    """PDB above one replica, NetworkPolicy unless opted out, HPA when autoscaling: each created and deleted
    with the spec; an autoscaled Deployment keeps the autoscaler's replicas."""
    harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("agent", replicas=1)], namespace=namespace)
    wait_ready(control_plane, namespace, "agent")
    assert get(control_plane, "poddisruptionbudget/agent", namespace) is None
    assert get(control_plane, "horizontalpodautoscaler/agent", namespace) is None
    ingress_nginx = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    policy = get(control_plane, "networkpolicy/agent", namespace)["spec"]
    assert policy["ingress"] == [{"from": [ingress_nginx, monitoring], "ports": [{"port": 8080, "protocol": "TCP"}]}]

    web = {"namespaceSelector": {"matchLabels": {"team": "web"}}}
    patch(control_plane, "agentruntime/agent", namespace,
          {"spec": {"replicas": 3, "networkPolicy": {"ingressFrom": [web]}, "session": {"type": "redis"}}})
    wait_for(lambda: (a := ready(control_plane, namespace, "agent")) and a["status"]["readyReplicas"] == 3,
             timeout=90, what="3 replicas")
    assert get(control_plane, "poddisruptionbudget/agent", namespace)["spec"]["minAvailable"] == 1
    policy = get(control_plane, "networkpolicy/agent", namespace)["spec"]
    assert policy["ingress"] == [{"from": [web, monitoring], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    # The mock provider calls nothing: DNS and the session store only, to any address.
    assert policy["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"ports": [{"port": 6379, "protocol": "TCP"}]},
    ]

    patch(control_plane, "agentruntime/agent", namespace,
          {"spec": {"networkPolicy": {"enabled": False},
                    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5}}})
    wait_for(lambda: get(control_plane, "horizontalpodautoscaler/agent", namespace), timeout=60, what="the HPA")
    wait_for(lambda: get(control_plane, "networkpolicy/agent", namespace) is None, timeout=60, what="no NetworkPolicy")
    # The HPA (no metrics here) leaves the Deployment within its bounds: the
    # replicas it had are kept, not reset to one by the operator's apply.
    control_plane.kubectl("scale", "deployment/agent", "--replicas=4", f"--namespace={namespace}", check=True)
    patch(control_plane, "agentruntime/agent", namespace, {"metadata": {"labels": {"touched": "yes"}}})
    wait_for(lambda: (a := ready(control_plane, namespace, "agent")) and a["status"]["readyReplicas"] == 4,
             timeout=90, what="4 replicas kept")
    live = harness.kubectl_json(control_plane, "get", "deployment/agent", f"--namespace={namespace}",
                                "--show-managed-fields")
    managers = {m["manager"] for m in live["metadata"]["managedFields"]
                if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})}
    assert "omnia-operator" not in managers

    patch(control_plane, "agentruntime/agent", namespace, {"spec": {"autoscaling": {"enabled": False}, "replicas": 1}})
    wait_for(lambda: get(control_plane, "horizontalpodautoscaler/agent", namespace) is None, timeout=60, what="no HPA")
    wait_for(lambda: get(control_plane, "poddisruptionbudget/agent", namespace) is None, timeout=60, what="no PDB")
    wait_for(lambda: (a := ready(control_plane, namespace, "agent")) and a["status"]["replicas"] == 1,
             timeout=90, what="1 replica")


@pytest.fixture(scope="module")
def keda(control_plane):
    """KEDA's ScaledObject CRD, from KEDA's Go module (scripts/fetch-keda-crd caches it outside the repo)."""
    fetched = subprocess.run([str(harness.REPO / "scripts" / "fetch-keda-crd")], capture_output=True, text=True)
    if fetched.returncode != 0:
        pytest.fail(f"could not fetch KEDA's CRD: {fetched.stderr.strip()}")
    path = fetched.stdout.strip()
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", path, check=True)
    control_plane.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s",
                          check=True)


def test_keda_engine_scales_to_zero_with_a_prometheus_trigger(control_plane, keda, namespace, operator):
    """Engine keda: a ScaledObject (min 0, cpu/memory triggers, a prometheus trigger for the custom metric)
    instead of an HPA; switching back to hpa deletes it."""
    autoscaling = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 4, "metrics": [
        {"type": "cpu", "target": "80%"}, {"type": "custom", "name": "active_connections", "target": 100}]}
    harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("agent", autoscaling=autoscaling)],
                  namespace=namespace)
    scaled = wait_for(lambda: get(control_plane, "scaledobject/agent", namespace), timeout=60, what="ScaledObject")
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    assert spec["scaleTargetRef"]["name"] == "agent"
    assert [t["type"] for t in spec["triggers"]] == ["cpu", "prometheus"]
    assert spec["triggers"][1]["metadata"]["threshold"] == "100"
    assert spec["triggers"][1]["metadata"]["serverAddress"] == PROMETHEUS
    assert "active_connections" in spec["triggers"][1]["metadata"]["query"]
    assert get(control_plane, "horizontalpodautoscaler/agent", namespace) is None
    assert get(control_plane, "deployment/agent", namespace)["spec"]["replicas"] == 0

    patch(control_plane, "agentruntime/agent", namespace,
          {"spec": {"autoscaling": {"engine": "hpa", "minReplicas": 1}}})
    wait_for(lambda: get(control_plane, "horizontalpodautoscaler/agent", namespace), timeout=60, what="HPA")
    wait_for(lambda: get(control_plane, "scaledobject/agent", namespace) is None, timeout=60, what="no ScaledObject")


# --- crash safety and permissions --------------------------------------------------------


def test_operator_killed_mid_reconcile_converges_after_restart(control_plane, namespace, operator):
    """SIGKILL while ten agents are being created and while a new prompt version rolls out: after a
    restart every agent is Ready with exactly one set of objects, and the pack has one snapshot per version."""
    agents = [mock_agent(f"agent-{index}") for index in range(10)]
    harness.apply(control_plane, [mock_provider(), prompt_pack(), *agents], namespace=namespace)
    wait_for(lambda: get(control_plane, "deployment/agent-0", namespace) or get(control_plane, "configmap/agent-0-config", namespace),
             timeout=60, interval=0.05, what="the first object")
    operator.kill()
    created = harness.kubectl_json(control_plane, "get", "deployments", f"--namespace={namespace}")["items"]
    assert len(created) < 10, "the kill came too late to interrupt anything"

    operator.start()
    for index in range(10):
        wait_ready(control_plane, namespace, f"agent-{index}")

    harness.apply(control_plane, prompt_pack(version="1.1.0", prompt="You are brief."), namespace=namespace)
    wait_for(lambda: (get(control_plane, "promptpack/prompts", namespace) or {}).get("status", {}).get(
        "stableVersion") == "1.1.0", timeout=60, interval=0.05, what="1.1.0 published")
    operator.kill()
    operator.start()
    for index in range(10):
        wait_for(lambda: (a := ready(control_plane, namespace, f"agent-{index}"))
                 and a["status"]["activePromptVersions"] == ["1.1.0"], timeout=120, what=f"agent-{index} on 1.1.0",
                 explain=lambda: (get(control_plane, f"agentruntime/agent-{index}", namespace)["status"],
                                  get(control_plane, f"deployment/agent-{index}", namespace)["status"]))

    deployments = harness.kubectl_json(control_plane, "get", "deployments", f"--namespace={namespace}")["items"]
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(f"agent-{i}" for i in range(10))
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        agent = get(control_plane, f"agentruntime/{name}", namespace)
        assert deployment["spec"]["template"]["metadata"]["annotations"]["omnia.altairalabs.ai/config-hash"] == \
            agent["status"]["configHash"]
        assert agent_config(control_plane, namespace, name).prompts.stable.version == "1.1.0"
    pack = get(control_plane, "promptpack/prompts", namespace)["status"]
    assert [entry["version"] for entry in pack["history"]] == ["1.0.0", "1.1.0"]
    assert pack["consumers"] == sorted(f"agent-{i}" for i in range(10))
    snapshots = harness.kubectl_json(control_plane, "get", "configmaps", f"--namespace={namespace}",
                                     "--selector=omnia.altairalabs.ai/prompt-pack=prompts")["items"]
    assert len(snapshots) == 2


def test_operator_runs_with_no_more_than_its_cluster_role(control_plane, namespace, operator):
    """The operator's own credentials (a ServiceAccount token bound to deploy/rbac's ClusterRole in this
    namespace) may watch Secrets but not read one, may not delete Deployments, and see nothing elsewhere."""
    def can(*args: str) -> str:
        return control_plane.kubectl("auth", "can-i", *args, kubeconfig=operator.kubeconfig).stdout.strip()

    assert can("list", "secrets", f"--namespace={namespace}") == "yes"
    assert can("get", "secrets", f"--namespace={namespace}") == "no"
    assert can("patch", "deployments", f"--namespace={namespace}") == "yes"
    assert can("delete", "deployments", f"--namespace={namespace}") == "no"
    assert can("update", "agentruntimes", f"--namespace={namespace}") == "no"
    assert can("patch", "agentruntimes", "--subresource=status", f"--namespace={namespace}") == "yes"
    assert can("list", "configmaps", "--namespace=default") == "no"
    assert can("list", "secrets", "--all-namespaces") == "no"


LEADER = ("omnia_operator_leader", frozenset())


def test_the_operator_serves_its_metrics(control_plane, namespace, operator):
    """Scraped from the running process: its reconciles by kind and result, and that it leads (no election)."""
    harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("counted")], namespace=namespace)
    wait_ready(control_plane, namespace, "counted")
    samples = operator.metrics()
    succeeded = ("omnia_operator_reconciles_total", frozenset({("kind", "AgentRuntime"), ("result", "success")}))
    assert samples[succeeded] >= 1
    assert samples[LEADER] == 1
    assert samples[("omnia_operator_queue_wait_seconds_count", frozenset())] >= samples[succeeded]
    assert ("omnia_operator_queue_depth", frozenset()) in samples


def test_with_leader_election_one_replica_reconciles_and_another_takes_over(control_plane, crds, namespace, tmp_path):
    """Two replicas with --leader-elect: one holds the Lease and reconciles; SIGKILL it and the other
    takes the Lease when it expires and carries on. The Lease rights are deploy/rbac/leader_election.yaml's."""
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    rbac = list(yaml.safe_load_all((harness.REPO / "deploy" / "rbac" / "leader_election.yaml").read_text()))
    for obj in rbac:
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
    harness.apply(control_plane, rbac, namespace=namespace)
    replicas = [
        harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace], log_file=tmp_path / f"operator-{i}.log",
                                extra_args=["--leader-elect", f"--leader-election-namespace={namespace}"])
        for i in range(2)
    ]
    try:
        replicas[0].start()
        wait_for(lambda: "reconciler" in replicas[0].probe(), timeout=30, what="the first replica leading")
        replicas[1].start()
        assert replicas[1].probe() == {"leader": False}
        assert [replica.metrics()[LEADER] for replica in replicas] == [1, 0]
        harness.apply(control_plane, [mock_provider(), prompt_pack(), mock_agent("first")], namespace=namespace)
        wait_ready(control_plane, namespace, "first")

        replicas[0].kill()
        harness.apply(control_plane, mock_agent("second"), namespace=namespace)
        wait_for(lambda: "reconciler" in replicas[1].probe(), timeout=40, what="the second replica leading")
        wait_ready(control_plane, namespace, "second", timeout=60)
        assert replicas[1].metrics()[LEADER] == 1
        lease = get(control_plane, "lease/omnia-operator", namespace)
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        for replica in replicas:
            replica.stop()
        print("\n".join(f"--- {r.log_file} ---\n{r.log_tail(40)}" for r in replicas))
