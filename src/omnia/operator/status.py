"""Status of the four kinds, computed from what the operator observed.

Pure functions in the Kubernetes API conventions: ``conditions[]`` with
``type/status/reason/message/lastTransitionTime``, where the transition time
changes only when the status does, a short ``phase`` for printer columns and
``observedGeneration``. The handlers compare the result with the stored
status and write only differences, so a reconcile that changes nothing
writes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from omnia.api.v1alpha1 import (
    AgentRuntimeStatus,
    BudgetStanding,
    Condition,
    PromptPackStatus,
    PromptVersion,
    ProviderStatus,
)
from omnia.operator.promptpacks import RolloutState
from omnia.operator.summaries import DeploymentSummary

ConditionStatus = Literal["True", "False", "Unknown"]

PROVIDER_READY = "ProviderReady"
PROMPT_PACK_READY = "PromptPackReady"
TOOLS_READY = "ToolsReady"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
READY = "Ready"
CREDENTIALS_FOUND = "CredentialsFound"
BUDGET_EXCEEDED = "BudgetExceeded"

AGENT_CONDITIONS = (PROVIDER_READY, PROMPT_PACK_READY, TOOLS_READY, AVAILABLE, PROGRESSING, READY)
"""The conditions of every agent, in their order; BudgetExceeded follows for an agent with budgets."""

OWN_EVENTS = frozenset({BUDGET_EXCEEDED})
"""Conditions whose Events are posted by their own rules (``standings.crossings``), not by :func:`events`."""

# Reasons shared by handlers and tests.
INVALID_SPEC = "InvalidSpec"
ROLLOUT_COMPLETE = "RolloutComplete"
ROLLING_OUT = "RollingOut"
PROMPT_PACK_PENDING = "PromptPackPending"
QUOTA_EXCEEDED = "QuotaExceeded"
PODS_REFUSED = "PodsRefused"

WAITING_REASONS = frozenset({PROMPT_PACK_PENDING})
"""Reasons of a False condition that only mean "a moment": no Warning for them."""


@dataclass(frozen=True)
class Check:
    """One condition's verdict before it gets a transition time."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"

    @classmethod
    def passed(cls, type: str, reason: str, message: str = "") -> Check:
        return cls(type, "True", reason, message)

    @classmethod
    def failed(cls, type: str, reason: str, message: str) -> Check:
        return cls(type, "False", reason, message)


def merge_conditions(
    previous: Sequence[Condition],
    checks: Iterable[Check],
    *,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """The conditions after ``checks``, keeping each transition time unless its status changed.

    Conditions not among ``checks`` are kept as they were, in their order;
    new ones are appended in the order given.
    """
    by_type = {condition.type: condition for condition in previous}
    order = [condition.type for condition in previous]
    for check in checks:
        before = by_type.get(check.type)
        since = before.last_transition_time if before is not None and before.status == check.status else now
        by_type[check.type] = Condition(
            type=check.type,
            status=check.status,
            reason=check.reason,
            message=check.message[:32768],
            last_transition_time=since,
            observed_generation=generation,
        )
        if check.type not in order:
            order.append(check.type)
    return [by_type[type_] for type_ in order]


def changed(previous: Sequence[Condition], current: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed (or that are new): what deserves an Event."""
    before = {condition.type: (condition.status, condition.reason) for condition in previous}
    return [c for c in current if before.get(c.type) != (c.status, c.reason)]


def events(
    previous: Sequence[Condition], current: Sequence[Condition], *, quiet: Iterable[str] = ()
) -> list[tuple[str, str, str]]:
    """The Events (type, reason, message) that condition changes deserve.

    A condition turning False is a Warning (Available only when it was
    True); one recovering from False a Normal Event; a rollout starting and completing are Normal Events. Good
    news on creation is not news, and ``quiet`` conditions (those that
    summarise others, such as an agent's Ready) make Events only for reasons
    no other condition carries.
    """
    before = {condition.type: condition for condition in previous}
    silent = set(quiet)
    found = []
    for condition in changed(previous, current):
        if condition.type in OWN_EVENTS:
            continue
        if condition.type in silent and any(
            other.type != condition.type and other.reason == condition.reason for other in current
        ):
            continue
        old = before.get(condition.type)
        if condition.type == PROGRESSING:
            if condition.reason == "ProgressDeadlineExceeded":
                found.append(("Warning", condition.reason, condition.message))
            elif old is not None and condition.reason in (ROLLING_OUT, ROLLOUT_COMPLETE):
                found.append(("Normal", condition.reason, condition.message))
        elif condition.status == "False":
            if condition.reason in WAITING_REASONS:
                continue
            # Pods not available yet is news only when they were.
            if condition.type != AVAILABLE or (old is not None and old.status == "True"):
                found.append(("Warning", condition.reason, condition.message))
        elif old is not None and old.status == "False":
            found.append(("Normal", condition.reason, condition.message))
    return found


QUIET_CONDITIONS = {
    "AgentRuntime": (READY,),
    "Provider": (READY,),
    "PromptPack": (PROGRESSING,),
    "ToolRegistry": (),
}
"""Per kind, the conditions that summarise others (see :func:`events`)."""


def same_status(a: object, b: object) -> bool:
    """Whether two status models are equal for writing purposes."""
    dump = lambda model: model.model_dump(mode="json", exclude_none=True)  # noqa: E731
    return dump(a) == dump(b)


# --- AgentRuntime -----------------------------------------------------------


def rollout_checks(deployment: DeploymentSummary | None, *, config_hash: str | None) -> tuple[Check, Check]:
    """Available and Progressing, from the Deployment running ``config_hash``.

    The rollout is complete when the Deployment controller has seen the
    latest template, every pod runs it, no old pod is left and all are
    available — what ``kubectl rollout status`` waits for.
    """
    if deployment is None:
        return (
            Check.failed(AVAILABLE, "DeploymentNotFound", "the Deployment does not exist yet"),
            Check.passed(PROGRESSING, "Creating", "creating the Deployment"),
        )
    d = deployment
    counts = f"{d.updated_replicas} of {d.spec_replicas} pods updated, {d.available_replicas} available"
    available_condition = d.conditions.get("Available")
    if available_condition is not None and available_condition.status == "True":
        available = Check.passed(AVAILABLE, "MinimumReplicasAvailable", f"{d.available_replicas} pods available")
    else:
        message = available_condition.message if available_condition else "waiting for pods"
        available = Check.failed(AVAILABLE, "MinimumReplicasUnavailable", message)
    progressing_condition = d.conditions.get("Progressing")
    if progressing_condition is not None and progressing_condition.reason == "ProgressDeadlineExceeded":
        return available, Check.failed(PROGRESSING, "ProgressDeadlineExceeded", progressing_condition.message)
    # Pods that become unavailable after the rollout finished (the Deployment
    # controller then says NewReplicaSetAvailable) are not a rollout: that is
    # what Available reports.
    settled = progressing_condition is not None and progressing_condition.reason == "NewReplicaSetAvailable"
    complete = (
        (config_hash is None or d.config_hash == config_hash)
        and d.observed_generation >= d.generation
        and d.updated_replicas == d.spec_replicas
        and d.replicas == d.updated_replicas
        and (d.available_replicas == d.updated_replicas or settled)
    )
    if complete:
        return available, Check.failed(PROGRESSING, ROLLOUT_COMPLETE, f"{d.updated_replicas} pods run the current configuration")
    return available, Check.passed(PROGRESSING, ROLLING_OUT, counts)


def refused_pods(deployment: DeploymentSummary | None) -> Check | None:
    """Why the API server refuses the agent's pods, from the Deployment's ``ReplicaFailure``; None if it does not.

    The ReplicaSet controller cannot create a pod (a namespace ResourceQuota
    used up, a LimitRange or an admission policy saying no) and reports
    ``FailedCreate`` with the API's message on the ReplicaSet, which the
    Deployment controller copies to the Deployment. The counters only show
    a rollout that never finishes; this says why. ``QuotaExceeded`` when the
    message is the quota admission's ("exceeded quota: …"), ``PodsRefused``
    for any other refusal.
    """
    if deployment is None:
        return None
    failure = deployment.conditions.get("ReplicaFailure")
    if failure is None or failure.status != "True":
        return None
    reason = QUOTA_EXCEEDED if "exceeded quota" in failure.message else PODS_REFUSED
    return Check.failed(READY, reason, failure.message or failure.reason)


def agent_status(
    previous: AgentRuntimeStatus,
    *,
    generation: int | None,
    references: Sequence[Check],
    problem: Check | None,
    invalid: bool,
    deployment: DeploymentSummary | None,
    config_hash: str | None,
    prompt_versions: Sequence[str],
    endpoint: str | None,
    selector: str,
    now: datetime.datetime,
    pods: Check | None = None,
    budgets: Sequence[BudgetStanding] = (),
    budget: Check | None = None,
) -> AgentRuntimeStatus:
    """The AgentRuntime's status.

    ``references`` are the ProviderReady, PromptPackReady and ToolsReady
    checks; ``problem`` is anything else that stopped this reconcile (a
    missing Secret, KEDA not installed, an invalid spec with ``invalid``).
    ``pods`` is what is wrong with the running pods (``podhealth``): it
    makes Ready False, after the problems above and before the rollout's
    counters, which only say that pods are missing, not why. Pods the API
    server refuses to create (:func:`refused_pods`) come before those that
    run badly: they are why pods are missing.
    When something stopped it, the pods keep what they run: the config hash
    and prompt versions stay those of the last successful reconcile.
    ``budgets`` are the standings of the agent's budgets and ``budget`` their
    BudgetExceeded condition (``standings``), None for an agent without
    budgets, which then has no such condition: a spent budget refuses turns
    but leaves the pods Ready.
    """
    blocked = problem is not None or not all(check.ok for check in references)
    if blocked:
        config_hash = previous.config_hash
        prompt_versions = list(previous.active_prompt_versions)
    available, progressing = rollout_checks(deployment, config_hash=config_hash)
    if blocked and deployment is None:
        progressing = Check.failed(PROGRESSING, "Blocked", "waiting for the problems above to be fixed")
    rollout_done = progressing.reason == ROLLOUT_COMPLETE

    first_failure = problem or next((check for check in references if not check.ok), None)
    refused = refused_pods(deployment)
    if first_failure is not None:
        ready = Check.failed(READY, first_failure.reason, first_failure.message)
    elif refused is not None:
        ready = refused
    elif pods is not None:
        ready = Check.failed(READY, pods.reason, pods.message)
    elif not available.ok:
        ready = Check.failed(READY, available.reason, available.message)
    elif not rollout_done:
        ready = Check.failed(READY, progressing.reason, progressing.message)
    else:
        ready = Check.passed(READY, "AgentReady", progressing.message)

    if invalid:
        phase = "Failed"
    elif blocked or progressing.reason == "ProgressDeadlineExceeded":
        phase = "Degraded" if deployment is not None else "Pending"
    elif refused is not None or pods is not None:
        phase = "Degraded"
    elif not rollout_done:
        phase = "Progressing"
    elif not available.ok:
        phase = "Degraded"
    else:
        phase = "Running"

    checks = [*references]
    if problem is not None and problem.type not in (READY, *(c.type for c in references)):
        checks.append(problem)
    checks += [available, progressing, ready]
    if budget is not None:
        checks.append(budget)
    kept = [c for c in previous.conditions if budget is not None or c.type != BUDGET_EXCEEDED]
    conditions = merge_conditions(kept, checks, now=now, generation=generation)
    order = {type_: index for index, type_ in enumerate(AGENT_CONDITIONS)}
    conditions.sort(key=lambda c: order.get(c.type, len(order)))
    return AgentRuntimeStatus(
        phase=phase,
        replicas=deployment.replicas if deployment else 0,
        ready_replicas=deployment.ready_replicas if deployment else 0,
        updated_replicas=deployment.updated_replicas if deployment else 0,
        selector=selector,
        active_prompt_versions=list(prompt_versions),
        endpoint=endpoint,
        config_hash=config_hash,
        budgets=list(budgets) or None,
        budget_percent_used=max((entry.percent_used for entry in budgets), default=None),
        conditions=conditions,
        observed_generation=generation,
    )


# --- Provider ---------------------------------------------------------------


def provider_status(
    previous: ProviderStatus,
    *,
    credentials: Check,
    problem: Check | None,
    generation: int | None,
    now: datetime.datetime,
) -> ProviderStatus:
    failure = problem or (credentials if not credentials.ok else None)
    ready = (
        Check.failed(READY, failure.reason, failure.message)
        if failure
        else Check.passed(READY, "ProviderReady", "agents can use this provider")
    )
    checks = [credentials, ready] if problem is None else [credentials, problem, ready]
    conditions = merge_conditions(previous.conditions, checks, now=now, generation=generation)
    phase = "Ready" if ready.ok else ("Failed" if problem is not None else "Pending")
    return ProviderStatus(phase=phase, conditions=conditions, observed_generation=generation)


# --- PromptPack -------------------------------------------------------------


def prompt_pack_status(
    previous: PromptPackStatus,
    *,
    state: RolloutState,
    history: Sequence[PromptVersion],
    consumers: Sequence[str],
    problem: Check | None,
    generation: int | None,
    now: datetime.datetime,
) -> PromptPackStatus:
    """``problem`` says why the spec's content is not served (agents keep the stable snapshot)."""
    if problem is not None:
        ready = Check.failed(READY, problem.reason, problem.message)
    elif state.stable is None:
        ready = Check.failed(READY, "NoVersion", "no version has been published yet")
    else:
        served = f"{state.stable}" + (f" and canary {state.canary} at {state.canary_weight}%" if state.canary else "")
        ready = Check.passed(READY, "VersionsServed", f"new sessions get {served}")
    if state.canary is not None:
        progressing = Check.passed(
            PROGRESSING,
            "CanaryInProgress",
            f"canary {state.canary} gets {state.canary_weight}% of new sessions "
            f"(step {(state.canary_step or 0) + 1})",
        )
    else:
        progressing = Check.failed(PROGRESSING, ROLLOUT_COMPLETE, f"all new sessions get {state.stable}")
    conditions = merge_conditions(previous.conditions, [ready, progressing], now=now, generation=generation)
    if problem is not None:
        phase = "Failed"
    elif state.stable is None:
        phase = "Pending"
    elif state.canary is not None:
        phase = "Canary"
    else:
        phase = "Ready"
    return PromptPackStatus(
        phase=phase,
        stable_version=state.stable,
        canary_version=state.canary,
        canary_weight=state.canary_weight if state.canary else None,
        canary_step=state.canary_step if state.canary else None,
        history=list(history),
        consumers=sorted(consumers),
        conditions=conditions,
        observed_generation=generation,
    )
