"""Status and conditions in the Kubernetes API conventions, and the Events their changes deserve."""

from __future__ import annotations

import datetime

import pytest

from omnia.api.v1alpha1 import AgentRuntimeStatus, Condition
from omnia.operator import status
from omnia.operator.status import Check
from omnia.operator.summaries import DeploymentCondition, DeploymentSummary

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
T1 = T0 + datetime.timedelta(minutes=5)
GOOD_REFERENCES = [
    Check.passed(status.PROVIDER_READY, "ProviderReady"),
    Check.passed(status.PROMPT_PACK_READY, "PromptPackReady"),
    Check.passed(status.TOOLS_READY, "NoToolRegistry"),
]


def deployment(*, replicas=2, updated=2, available=2, ready=2, generation=3, observed=3, config_hash="h",
               available_condition="True", progressing_reason="NewReplicaSetAvailable") -> DeploymentSummary:
    return DeploymentSummary(
        generation=generation, observed_generation=observed, spec_replicas=2, replicas=replicas,
        ready_replicas=ready, updated_replicas=updated, available_replicas=available, config_hash=config_hash,
        replicas_applied_by_operator=False,
        conditions={"Available": DeploymentCondition(available_condition, "x", "m"),
                    "Progressing": DeploymentCondition("True", progressing_reason, "deadline")},
    )


def condition(type_: str, state: str, reason: str, when=T0) -> Condition:
    return Condition(type=type_, status=state, reason=reason, message="", last_transition_time=when)


def test_transition_time_changes_only_with_the_status():
    previous = [condition("Ready", "False", "RollingOut")]
    same = status.merge_conditions(previous, [Check.failed("Ready", "Unavailable", "new reason")], now=T1, generation=2)
    flipped = status.merge_conditions(previous, [Check.passed("Ready", "AgentReady")], now=T1, generation=2)
    assert (same[0].last_transition_time, same[0].reason, same[0].observed_generation) == (T0, "Unavailable", 2)
    assert flipped[0].last_transition_time == T1


@pytest.mark.parametrize(
    ("summary", "available", "progressing"),
    [
        pytest.param(deployment(), ("True", "MinimumReplicasAvailable"), ("False", "RolloutComplete"), id="complete"),
        pytest.param(deployment(updated=1, replicas=3), ("True", "MinimumReplicasAvailable"), ("True", "RollingOut"),
                     id="rolling"),
        pytest.param(deployment(observed=2), ("True", "MinimumReplicasAvailable"), ("True", "RollingOut"),
                     id="controller-has-not-seen-the-new-template"),
        pytest.param(deployment(config_hash="old"), ("True", "MinimumReplicasAvailable"), ("True", "RollingOut"),
                     id="cache-shows-the-old-template"),
        pytest.param(deployment(available=0, ready=0, available_condition="False", progressing_reason="ReplicaSetUpdated"),
                     ("False", "MinimumReplicasUnavailable"), ("True", "RollingOut"), id="pods-starting"),
        pytest.param(deployment(available=1, ready=1, available_condition="True"),
                     ("True", "MinimumReplicasAvailable"), ("False", "RolloutComplete"), id="a-pod-lost-after-the-rollout"),
        pytest.param(deployment(progressing_reason="ProgressDeadlineExceeded", updated=1),
                     ("True", "MinimumReplicasAvailable"), ("False", "ProgressDeadlineExceeded"), id="stuck"),
        pytest.param(None, ("False", "DeploymentNotFound"), ("True", "Creating"), id="no-deployment"),
    ],
)
def test_rollout_tracking(summary, available, progressing):
    got = status.rollout_checks(summary, config_hash="h")
    assert ((got[0].status, got[0].reason), (got[1].status, got[1].reason)) == (available, progressing)


def agent_status(**overrides) -> AgentRuntimeStatus:
    arguments = dict(
        generation=4, references=GOOD_REFERENCES, problem=None, invalid=False, deployment=deployment(),
        config_hash="h", prompt_versions=["1.0.0"], endpoint="ws://a.ns.svc:8080/ws", selector="s", now=T0,
    )
    return status.agent_status(AgentRuntimeStatus(config_hash="old", active_prompt_versions=["0.9.0"]),
                               **{**arguments, **overrides})


@pytest.mark.parametrize(
    ("overrides", "phase", "ready_reason"),
    [
        pytest.param({}, "Running", "AgentReady", id="running"),
        pytest.param({"deployment": deployment(updated=1)}, "Progressing", "RollingOut", id="rolling"),
        pytest.param({"references": [Check.failed(status.PROVIDER_READY, "ProviderNotFound", "gone"), *GOOD_REFERENCES[1:]],
                      "deployment": None}, "Pending", "ProviderNotFound", id="missing-reference-before-any-pod"),
        pytest.param({"references": [Check.failed(status.PROVIDER_READY, "ProviderNotFound", "gone"), *GOOD_REFERENCES[1:]]},
                     "Degraded", "ProviderNotFound", id="missing-reference-while-running"),
        pytest.param({"problem": Check.failed("Ready", "InvalidSpec", "bad"), "invalid": True}, "Failed", "InvalidSpec",
                     id="invalid-spec"),
        pytest.param({"deployment": deployment(available=0, available_condition="False")}, "Degraded",
                     "MinimumReplicasUnavailable", id="pods-lost"),
        pytest.param({"deployment": deployment(available=0, available_condition="False"),
                      "pods": Check.failed("Ready", "CrashLoopBackOff", "pod a container runtime: ...")},
                     "Degraded", "CrashLoopBackOff", id="pods-lost-and-why"),
        pytest.param({"deployment": deployment(updated=1), "pods": Check.failed("Ready", "ImagePullFailed", "...")},
                     "Degraded", "ImagePullFailed", id="rollout-stuck-on-a-bad-image"),
        pytest.param({"references": [Check.failed(status.PROVIDER_READY, "ProviderNotFound", "gone"), *GOOD_REFERENCES[1:]],
                      "pods": Check.failed("Ready", "OOMKilled", "...")},
                     "Degraded", "ProviderNotFound", id="a-missing-reference-comes-first"),
    ],
)
def test_agent_phase_and_ready(overrides, phase, ready_reason):
    current = agent_status(**overrides)
    ready = next(c for c in current.conditions if c.type == "Ready")
    assert (current.phase, ready.reason) == (phase, ready_reason)
    assert [c.type for c in current.conditions][:6] == list(status.AGENT_CONDITIONS)


def test_a_blocked_agent_keeps_reporting_what_its_pods_run():
    """Nothing was rolled out, so configHash and activePromptVersions stay those of the running pods."""
    current = agent_status(references=[Check.failed(status.PROVIDER_READY, "ProviderNotFound", "gone"), *GOOD_REFERENCES[1:]],
                           config_hash="new", prompt_versions=["2.0.0"])
    assert (current.config_hash, current.active_prompt_versions) == ("old", ["0.9.0"])


def test_counters_endpoint_and_selector_are_reported():
    current = agent_status(deployment=deployment(replicas=3, ready=2, updated=1))
    assert (current.replicas, current.ready_replicas, current.updated_replicas) == (3, 2, 1)
    assert (current.endpoint, current.selector, current.observed_generation) == ("ws://a.ns.svc:8080/ws", "s", 4)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param([], [condition("ProviderReady", "True", "ProviderReady")], [], id="good-news-on-creation"),
        pytest.param([], [condition("ProviderReady", "False", "ProviderNotFound")],
                     [("Warning", "ProviderNotFound")], id="failure-on-creation"),
        pytest.param([condition("ProviderReady", "False", "ProviderNotFound")], [condition("ProviderReady", "True", "ProviderReady")],
                     [("Normal", "ProviderReady")], id="recovery"),
        pytest.param([], [condition("Available", "False", "DeploymentNotFound")], [], id="not-yet-available"),
        pytest.param([condition("Available", "True", "MinimumReplicasAvailable")],
                     [condition("Available", "False", "MinimumReplicasUnavailable")],
                     [("Warning", "MinimumReplicasUnavailable")], id="lost-availability"),
        pytest.param([condition("Progressing", "False", "RolloutComplete")], [condition("Progressing", "True", "RollingOut")],
                     [("Normal", "RollingOut")], id="rollout-starts"),
        pytest.param([], [condition("PromptPackReady", "False", "PromptPackPending")], [], id="waiting-is-not-news"),
        pytest.param([], [condition("ProviderReady", "False", "ProviderNotFound"), condition("Ready", "False", "ProviderNotFound")],
                     [("Warning", "ProviderNotFound")], id="ready-repeats-another-condition"),
        pytest.param([], [condition("Ready", "False", "InvalidSpec")], [("Warning", "InvalidSpec")],
                     id="ready-with-its-own-reason"),
        pytest.param([condition("Ready", "True", "AgentReady")], [condition("Ready", "False", "CrashLoopBackOff")],
                     [("Warning", "CrashLoopBackOff")], id="pods-start-failing"),
        pytest.param([condition("Ready", "False", "RollingOut")], [condition("Ready", "False", "ImagePullFailed")],
                     [("Warning", "ImagePullFailed")], id="rollout-stuck-on-a-bad-image"),
        pytest.param([condition("Ready", "False", "CrashLoopBackOff")], [condition("Ready", "True", "AgentReady")],
                     [("Normal", "AgentReady")], id="pods-recover"),
    ],
)
def test_events_for_condition_changes(before, after, expected):
    found = status.events(before, after, quiet=("Ready",))
    assert [(type_, reason) for type_, reason, _ in found] == expected


# --- pods the API server refuses --------------------------------------------

QUOTA_MESSAGE = ('pods "support-agent-7d9c8b6f5-x2kqp" is forbidden: exceeded quota: agents, '
                 "requested: pods=1, used: pods=1, limited: pods=1")


def deployment_body(*conditions: dict) -> dict:
    """A Deployment of two replicas of which the ReplicaSet could create one, as the API server returns it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "support-agent", "namespace": "team-a", "generation": 1,
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": {"omnia.altairalabs.ai/config-hash": "h"}}}},
        "status": {
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1, "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability.",
                 "lastUpdateTime": "2026-01-01T12:00:05Z", "lastTransitionTime": "2026-01-01T12:00:05Z"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                 "message": 'ReplicaSet "support-agent-7d9c8b6f5" is progressing.',
                 "lastUpdateTime": "2026-01-01T12:00:05Z", "lastTransitionTime": "2026-01-01T12:00:00Z"},
                *conditions,
            ],
        },
    }


REPLICA_FAILURE = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": QUOTA_MESSAGE,
                   "lastUpdateTime": "2026-01-01T12:00:01Z", "lastTransitionTime": "2026-01-01T12:00:01Z"}


@pytest.mark.parametrize(("conditions", "expected"), [
    pytest.param([REPLICA_FAILURE], ("QuotaExceeded", QUOTA_MESSAGE), id="quota"),
    pytest.param([{**REPLICA_FAILURE, "message": 'pods "support-agent-7d9c8b6f5-x2kqp" is forbidden: '
                   "maximum memory usage per Container is 512Mi, but limit is 1Gi"}],
                 ("PodsRefused", 'pods "support-agent-7d9c8b6f5-x2kqp" is forbidden: '
                  "maximum memory usage per Container is 512Mi, but limit is 1Gi"), id="limit-range"),
    pytest.param([{**REPLICA_FAILURE, "status": "False"}], None, id="failure-over"),
    pytest.param([], None, id="no-failure"),
])
def test_pods_refused_by_the_api_server_are_named_with_its_message(conditions, expected):
    """A ResourceQuota (or a LimitRange) refusing pods shows on the agent, not only as a rollout that never ends."""
    refused = status.refused_pods(DeploymentSummary.from_body(deployment_body(*conditions)))
    assert (None if refused is None else (refused.reason, refused.message)) == expected


def test_a_quota_refusing_pods_makes_the_agent_not_ready_with_a_warning():
    """Ready says QuotaExceeded with the API's message, the phase is Degraded, and an Event says so once."""
    before = agent_status(deployment=DeploymentSummary.from_body(deployment_body()))
    after = status.agent_status(
        before, generation=4, references=GOOD_REFERENCES, problem=None, invalid=False,
        deployment=DeploymentSummary.from_body(deployment_body(REPLICA_FAILURE)), config_hash="h",
        prompt_versions=["1.0.0"], endpoint=None, selector="s", now=T1,
    )
    ready = next(c for c in after.conditions if c.type == "Ready")
    assert (after.phase, ready.status, ready.reason, ready.message) == ("Degraded", "False", "QuotaExceeded", QUOTA_MESSAGE)
    assert status.events(before.conditions, after.conditions, quiet=status.QUIET_CONDITIONS["AgentRuntime"]) == [
        ("Warning", "QuotaExceeded", QUOTA_MESSAGE)]
