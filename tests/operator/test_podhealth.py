"""An agent's pod statuses, as the kubelet writes them, turned into the Ready condition's verdict.

The pods here have the shapes ``kubectl get pod -o json`` shows on a real
cluster (containerd, Kubernetes 1.35): a crash loop after a bad start-up,
an image that cannot be pulled, an out-of-memory kill, a facade whose
readiness probe keeps failing.
"""

from __future__ import annotations

import copy
import datetime

import kopf
import pytest

from omnia.config import PromptConfig
from omnia.operator import builders, hashing, main, podhealth, reconciling
from omnia.operator.podhealth import PodSummary
from omnia.operator.references import Ref
from omnia.operator.summaries import DeploymentCondition, DeploymentSummary
from tests.operator import manifests
from tests.operator.fakes import MemoryApi, MemoryCache, with_status
from tests.operator.pods import NOW, pod, running, terminated, waiting

STORE_URL_MISSING = ("session store 'redis' needs its URL in the environment variable OMNIA_SESSION_URL, "
                     "which is unset or empty (set spec.session.secretRef to a Secret key holding the URL)")
BACK_OFF = "back-off 2m40s restarting failed container=runtime pod=agent-7d9f8b6c5-x2x8k_team-a(uid)"


def judge(*bodies: dict, now: datetime.datetime = NOW) -> podhealth.Verdict:
    return podhealth.assess([PodSummary.from_body(body) for body in bodies], now=now)


@pytest.mark.parametrize(
    ("pods", "reason", "message_parts"),
    [
        pytest.param([pod()], None, [], id="healthy"),
        pytest.param(
            [pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=5,
                                 last=terminated("Error", code=2, message=STORE_URL_MISSING)))],
            "CrashLoopBackOff",
            ["pod agent-7d9f8b6c5-x2x8k", "container runtime", "restarted 5 times", "exit code 2",
             "needs its URL in the environment variable OMNIA_SESSION_URL"],
            id="crash-loop-with-termination-message"),
        pytest.param(
            [pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=2, last=terminated("Error", code=1)))],
            "CrashLoopBackOff", ["container runtime", "exit code 1 (Error)"], id="crash-loop-without-message"),
        pytest.param(
            [pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=3,
                                 last=terminated("OOMKilled", code=137, finished=20)))],
            "OOMKilled", ["container runtime", "memory limit 1Gi", "restarted 3 times"], id="crash-loop-of-oom-kills"),
        pytest.param(
            [pod(runtime=running(since=60, restarts=1, last=terminated("OOMKilled", code=137, finished=61)))],
            "OOMKilled", ["container runtime", "OOMKilled", "memory limit 1Gi"], id="oom-killed-recently"),
        pytest.param(
            [pod(runtime=running(since=3600, restarts=1,
                                 last=terminated("OOMKilled", code=137, finished=3601)))],
            None, [], id="oom-kill-long-ago-is-history"),
        pytest.param(
            [pod(runtime=running(since=60, restarts=1, last=terminated("Error", code=1, finished=61)))],
            None, [], id="one-restart-that-recovered"),
        pytest.param(
            [pod(runtime=waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/altairalabs/omnia:nope"'))],
            "ImagePullFailed", ["container runtime", "ImagePullBackOff", 'omnia:nope"'], id="image-pull-back-off"),
        pytest.param(
            [pod(facade=waiting("ErrImagePull", 'failed to pull and unpack image "registry.local/omnia:1": '
                                                "failed to resolve reference: not found"))],
            "ImagePullFailed", ["container facade", "ErrImagePull", "not found"], id="err-image-pull"),
        pytest.param(
            [pod(runtime=waiting("InvalidImageName", 'Failed to apply default image tag "Omnia:x": invalid reference format'))],
            "ImagePullFailed", ["InvalidImageName"], id="invalid-image-name"),
        pytest.param(
            [pod(runtime=waiting("ErrImageNeverPull", 'Container image "omnia:dev" is not present with pull policy of Never'))],
            "ImagePullFailed", ["ErrImageNeverPull"], id="image-never-pulled"),
        pytest.param(
            [pod(runtime=waiting("CreateContainerConfigError", 'secret "redis-url" not found'))],
            "ContainerCannotStart", ["container runtime", "CreateContainerConfigError", 'secret "redis-url" not found'],
            id="create-container-config-error"),
        pytest.param(
            [pod(runtime=waiting("ContainerCreating", ""))], None, [], id="still-creating"),
        pytest.param(
            [pod(facade=running(since=300, ready=False), unready_since=300)],
            "ProbeFailing", ["container facade", "not ready since 2026-01-01T11:55:00Z"], id="readiness-failing"),
        pytest.param(
            [pod(facade=running(since=10, ready=False), unready_since=10)], None, [], id="not-ready-within-the-grace"),
        pytest.param(
            [pod(runtime=running(since=300, ready=False, started=False), unready_since=300)], None, [],
            id="still-starting-is-the-startup-probes-job"),
        pytest.param(
            [pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=9, last=terminated("Error", code=1)),
                 deleting=True)],
            None, [], id="a-pod-being-deleted-is-not-current"),
        pytest.param(
            [pod(phase="Failed", runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=9))], None, [],
            id="a-finished-pod-is-not-current"),
    ],
)
def test_pod_statuses_give_the_ready_verdict(pods, reason, message_parts):
    verdict = judge(*pods)
    if reason is None:
        assert verdict.problem is None
        return
    assert verdict.problem is not None
    assert (verdict.problem.type, verdict.problem.status, verdict.problem.reason) == ("Ready", "False", reason)
    for part in message_parts:
        assert part in verdict.problem.message


def test_the_first_problem_is_named_and_the_others_counted():
    """Several failing pods: the message names one (by severity, then pod name) and counts the rest."""
    crashing = waiting("CrashLoopBackOff", BACK_OFF, restarts=4, last=terminated("Error", code=2))
    verdict = judge(pod("agent-b", runtime=crashing), pod("agent-a", runtime=crashing),
                    pod("agent-c", facade=running(since=300, ready=False), unready_since=300))
    assert verdict.problem.reason == "CrashLoopBackOff"
    assert verdict.problem.message.startswith("pod agent-a container runtime:")
    assert verdict.problem.message.endswith("(and 2 more pods with problems)")


def test_a_long_termination_message_is_kept_to_its_end_on_one_line():
    """With FallbackToLogsOnError the message may be a traceback: its last line says what went wrong."""
    traceback = "Traceback (most recent call last):\n" + "  File \"x.py\", line 1, in <module>\n" * 200 + \
        "ValueError: the real reason"
    verdict = judge(pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=1,
                                        last=terminated("Error", code=1, message=traceback))))
    message = verdict.problem.message
    assert "\n" not in message and message.endswith("ValueError: the real reason")
    assert len(message) <= podhealth.MESSAGE_LIMIT + 200


@pytest.mark.parametrize(
    ("pods", "recheck"),
    [
        pytest.param([pod()], None, id="nothing-to-wait-for"),
        pytest.param([pod(facade=running(since=10, ready=False), unready_since=10)],
                     podhealth.PROBE_GRACE_SECONDS - 10, id="when-the-probe-grace-ends"),
        pytest.param([pod(runtime=running(since=60, restarts=1, last=terminated("OOMKilled", code=137, finished=60)))],
                     podhealth.OOM_WINDOW_SECONDS - 60, id="when-an-oom-kill-becomes-history"),
    ],
)
def test_the_verdict_says_when_time_alone_will_change_it(pods, recheck):
    """No pod event marks a grace period running out, so the reconcile must be requeued for it."""
    assert judge(*pods).recheck_after == recheck


def test_summaries_read_what_the_kubelet_wrote():
    body = pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=5,
                               last=terminated("Error", code=2, message=STORE_URL_MISSING, finished=30)))
    summary = PodSummary.from_body(body)
    runtime = summary.containers[1]
    assert (summary.name, summary.current, runtime.name, runtime.waiting_reason, runtime.restart_count) == (
        "agent-7d9f8b6c5-x2x8k", True, "runtime", "CrashLoopBackOff", 5)
    assert runtime.last_terminated.message == STORE_URL_MISSING
    assert runtime.last_terminated.finished_at == NOW - datetime.timedelta(seconds=30)
    assert runtime.memory_limit == "1Gi"


def test_a_pod_without_a_status_yet_is_healthy():
    """Just created, not scheduled: nothing has failed."""
    body = copy.deepcopy(pod())
    body["status"] = {"phase": "Pending"}
    assert judge(body).problem is None


# --- through the reconciler ------------------------------------------------------------

NS = manifests.NAMESPACE
AGENT = Ref("AgentRuntime", NS, "agent")


def ready_world() -> tuple[MemoryCache, MemoryApi, dict, reconciling.Context]:
    """An agent whose Provider and published PromptPack are in the cache, and a context at :data:`NOW`."""
    cache, api = MemoryCache(), MemoryApi()
    agent = manifests.agent()
    cache.put(agent)
    cache.put(manifests.provider())
    prompt = PromptConfig(version="1.0.0", system_prompt="You are helpful.")
    content_hash = hashing.content_hash(prompt)
    cache.snapshots[(NS, "prompts", prompt.version, content_hash)] = prompt
    cache.put(with_status(manifests.pack(), {"stableVersion": prompt.version, "history": [
        {"version": prompt.version, "contentHash": content_hash, "createdAt": "2026-01-01T00:00:00Z"}]}))
    ctx = reconciling.Context(cache=cache, api=api, defaults=builders.Defaults(image="omnia:test"),
                              clock=lambda: NOW, monotonic=lambda: 0.0)
    return cache, api, agent, ctx


def rolled_out(cache, api, agent: dict) -> None:
    """The cache as it is once the agent's Deployment finished its rollout."""
    status = api.statuses[("AgentRuntime", NS, "agent")]
    cache.put(with_status(agent, status))
    cache.deployments[(NS, "agent")] = DeploymentSummary(
        generation=1, observed_generation=1, spec_replicas=1, replicas=1, ready_replicas=1, updated_replicas=1,
        available_replicas=1, config_hash=status["configHash"], replicas_applied_by_operator=True,
        conditions={"Available": DeploymentCondition("True", "MinimumReplicasAvailable", "")})


def ready_condition(api) -> dict:
    return next(c for c in api.statuses[("AgentRuntime", NS, "agent")]["conditions"] if c["type"] == "Ready")


async def test_a_crash_looping_pod_turns_ready_false_with_its_termination_message_and_back():
    """The runtime cannot start: Ready False, reason CrashLoopBackOff, the message naming the pod, the container
    and what it wrote to its termination log, and a Warning Event; once the pod runs again, Ready is True."""
    cache, api, agent, ctx = ready_world()
    await reconciling.reconcile(AGENT, ctx)
    rolled_out(cache, api, agent)
    crashing = pod(runtime=waiting("CrashLoopBackOff", BACK_OFF, restarts=5,
                                   last=terminated("Error", code=2, message=STORE_URL_MISSING)))
    cache.pod_summaries[(NS, "agent")] = [PodSummary.from_body(crashing)]

    assert await reconciling.reconcile(AGENT, ctx) is None
    ready = ready_condition(api)
    assert (ready["status"], ready["reason"]) == ("False", "CrashLoopBackOff")
    assert ready["message"].startswith("pod agent-7d9f8b6c5-x2x8k container runtime: CrashLoopBackOff")
    assert STORE_URL_MISSING in ready["message"]
    assert api.statuses[("AgentRuntime", NS, "agent")]["phase"] == "Degraded"
    assert [(e["type"], e["reason"]) for e in api.events][-1] == ("Warning", "CrashLoopBackOff")

    cache.put(with_status(agent, api.statuses[("AgentRuntime", NS, "agent")]))
    cache.pod_summaries[(NS, "agent")] = [PodSummary.from_body(pod())]
    await reconciling.reconcile(AGENT, ctx)
    assert ready_condition(api)["status"] == "True"
    assert [(e["type"], e["reason"]) for e in api.events][-1] == ("Normal", "AgentReady")


async def test_a_pod_not_ready_within_the_grace_requeues_the_agent_for_when_it_ends():
    cache, api, agent, ctx = ready_world()
    await reconciling.reconcile(AGENT, ctx)
    rolled_out(cache, api, agent)
    cache.pod_summaries[(NS, "agent")] = [
        PodSummary.from_body(pod(facade=running(since=20, ready=False), unready_since=20))]
    assert await reconciling.reconcile(AGENT, ctx) == podhealth.PROBE_GRACE_SECONDS - 20


def test_the_pod_watch_is_narrowed_on_the_server_to_agent_pods():
    """A cluster's other pods change all the time: only the agents' reach the operator."""
    pods = kopf.Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    selectors = list(main.settings_for_omnia().watching.label_selectors.collect(pods))
    assert selectors == ["app.kubernetes.io/name=omnia-agent,app.kubernetes.io/managed-by=omnia-operator"]
