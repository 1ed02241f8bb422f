"""An agent's pods, judged: whether what runs is healthy, and if not, why, in words to act on.

The Deployment's counters say how many pods are available, not why the others
are not; the kubelet says why, in each pod's status. This module turns those
statuses into the verdict that the AgentRuntime's ``Ready`` condition shows:
the reason, the pod, the container, and the last words the container wrote
to its termination log (``lastState.terminated.message``, which is what
``omnia runtime`` and ``omnia facade`` write when they cannot start, or the
end of the log with ``FallbackToLogsOnError``). Pure: pod JSON in, as the
watch delivers it, a verdict out.

What counts, chosen to be robust rather than clever:

- **A container waiting** with the kubelet's reason: ``CrashLoopBackOff``;
  the image ones (``ImagePullBackOff``, ``ErrImagePull``,
  ``ErrImageNeverPull``, ``InvalidImageName``) as ``ImagePullFailed``; the
  ones that stop a container before it runs (``CreateContainerConfigError``,
  ``CreateContainerError``, ``RunContainerError``) as ``ContainerCannotStart``.
- **OOMKilled**, from the container's current or last termination: when it is
  crash-looping on it, or when the kill is recent (``OOM_WINDOW_SECONDS``).
  An out-of-memory kill an hour ago followed by an hour of service is
  history, not health; ``lastState`` would otherwise keep it for ever.
- **Failing probes**, from the pod status only: a container that is running
  and has passed its startup probe, but has not been ready for
  ``PROBE_GRACE_SECONDS``, is ``ProbeFailing``. The kubelet's ``Unhealthy``
  Events are not read: Events are best-effort, rate-limited and aggregated,
  one failed probe is no problem, and the status already holds the outcome.
  A failing liveness probe restarts the container, so it shows as restarts
  and then as ``CrashLoopBackOff`` with the last termination; a container
  that never passes its startup probe is restarted the same way.
- Pods being deleted and pods that finished (``Succeeded``, ``Failed``: an
  evicted pod lingers until collected) are not current and do not count.

Verdicts that depend on how long something lasted say when they should be
looked at again (``recheck_after``): no pod event marks a grace period
running out.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omnia.operator.status import READY, Check

CRASH_LOOP = "CrashLoopBackOff"
IMAGE_PULL_FAILED = "ImagePullFailed"
CONTAINER_CANNOT_START = "ContainerCannotStart"
OOM_KILLED = "OOMKilled"
PROBE_FAILING = "ProbeFailing"

REASONS = (IMAGE_PULL_FAILED, CONTAINER_CANNOT_START, OOM_KILLED, CRASH_LOOP, PROBE_FAILING)
"""Every reason a verdict can give, most severe first: the order in which several problems are named."""

IMAGE_WAITING_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName"})
CANNOT_START_WAITING_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})

OOM_WINDOW_SECONDS = 300.0
"""How long an out-of-memory kill keeps the agent not Ready after the container came back.

Five minutes, the kubelet's longest crash back-off: a container killed again
within it is crash-looping on memory anyway.
"""

PROBE_GRACE_SECONDS = 60.0
"""How long a started container may be not ready before its probe counts as failing.

Longer than the facade's readiness probe takes to notice a problem (two
failures 5 s apart) and to recover from a short one, such as the runtime
restarting.
"""

MESSAGE_LIMIT = 512
"""Characters of a termination message kept in the condition; the end is kept, where the error is."""

_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Termination:
    """How a container last ended (``state.terminated`` or ``lastState.terminated``)."""

    reason: str
    exit_code: int | None
    message: str
    finished_at: datetime.datetime | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None) -> Termination | None:
        if not body:
            return None
        code = body.get("exitCode")
        return cls(
            reason=str(body.get("reason") or ""),
            exit_code=int(code) if code is not None else None,
            message=str(body.get("message") or ""),
            finished_at=_time(body.get("finishedAt")),
        )


@dataclass(frozen=True)
class ContainerSummary:
    """One container's status, with the memory limit its spec gave it."""

    name: str
    ready: bool
    started: bool
    restart_count: int
    waiting_reason: str | None
    waiting_message: str
    running_since: datetime.datetime | None
    terminated: Termination | None
    last_terminated: Termination | None
    memory_limit: str | None = None


@dataclass(frozen=True)
class PodSummary:
    """An agent pod as far as its health goes; what the operator's pod cache holds."""

    name: str
    current: bool
    """Neither being deleted nor finished."""
    unready_since: datetime.datetime | None
    """When the pod's ``ContainersReady`` condition turned False; None while it is True."""
    containers: tuple[ContainerSummary, ...]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodSummary:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        limits = {
            container.get("name"): ((container.get("resources") or {}).get("limits") or {}).get("memory")
            for container in spec.get("containers") or []
        }
        unready_since = None
        for condition in status.get("conditions") or []:
            if condition.get("type") == "ContainersReady" and condition.get("status") != "True":
                unready_since = _time(condition.get("lastTransitionTime"))
        containers = []
        for item in status.get("containerStatuses") or []:
            state = item.get("state") or {}
            waiting = state.get("waiting") or {}
            started = item.get("started")
            containers.append(ContainerSummary(
                name=str(item.get("name") or ""),
                ready=bool(item.get("ready")),
                # Without the field (older kubelets) a running container counts as started.
                started=bool(started) if started is not None else "running" in state,
                restart_count=int(item.get("restartCount") or 0),
                waiting_reason=waiting.get("reason") if "waiting" in state else None,
                waiting_message=str(waiting.get("message") or ""),
                running_since=_time((state.get("running") or {}).get("startedAt")),
                terminated=Termination.from_body(state.get("terminated")),
                last_terminated=Termination.from_body((item.get("lastState") or {}).get("terminated")),
                memory_limit=limits.get(item.get("name")),
            ))
        return cls(
            name=str(metadata.get("name") or ""),
            current=not metadata.get("deletionTimestamp") and status.get("phase") not in _FINISHED_PHASES,
            unready_since=unready_since,
            containers=tuple(containers),
        )


@dataclass(frozen=True)
class Finding:
    reason: str
    pod: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """The Ready check the pods call for (None: nothing wrong), and when to look again."""

    problem: Check | None
    recheck_after: float | None = None
    """Seconds until time alone may change the verdict; None when only a pod event can."""


def assess(pods: Iterable[PodSummary], *, now: datetime.datetime) -> Verdict:
    """Judge an agent's pods: the most severe problem, named, and the others counted."""
    findings: list[Finding] = []
    rechecks: list[float] = []
    for pod in sorted(pods, key=lambda p: p.name):
        if not pod.current:
            continue
        for container in pod.containers:
            finding, recheck = _judge(pod, container, now=now)
            if finding is not None:
                findings.append(finding)
            if recheck is not None:
                rechecks.append(recheck)
    recheck_after = min(rechecks) if rechecks else None
    if not findings:
        return Verdict(problem=None, recheck_after=recheck_after)
    first = min(findings, key=lambda f: REASONS.index(f.reason))
    message = first.message
    others = len({f.pod for f in findings} - {first.pod})
    if others:
        message += f" (and {others} more pod{'s' if others > 1 else ''} with problems)"
    return Verdict(problem=Check.failed(READY, first.reason, message), recheck_after=recheck_after)


def _judge(pod: PodSummary, container: ContainerSummary, *, now: datetime.datetime) -> tuple[Finding | None, float | None]:
    """One container's finding, if any, and the seconds until time alone may change it."""
    where = f"pod {pod.name} container {container.name}"
    waiting = container.waiting_reason
    last = container.terminated or container.last_terminated
    restarts = f"restarted {container.restart_count} time{'s' if container.restart_count != 1 else ''}"

    oom = last is not None and last.reason == OOM_KILLED
    if oom and (waiting == CRASH_LOOP or container.terminated is not None):
        return Finding(OOM_KILLED, pod.name, f"{where}: {_oom(container, last)}, {restarts}{_said(last)}"), None
    if waiting == CRASH_LOOP:
        ended = _ended(last) if last is not None else "it keeps exiting"
        return Finding(CRASH_LOOP, pod.name, f"{where}: CrashLoopBackOff, {restarts}, {ended}"), None
    if waiting in IMAGE_WAITING_REASONS:
        return Finding(IMAGE_PULL_FAILED, pod.name, f"{where}: {waiting}: {container.waiting_message}"), None
    if waiting in CANNOT_START_WAITING_REASONS:
        return Finding(CONTAINER_CANNOT_START, pod.name, f"{where}: {waiting}: {container.waiting_message}"), None

    if oom and last is not None and last.finished_at is not None:
        remaining = OOM_WINDOW_SECONDS - (now - last.finished_at).total_seconds()
        if remaining > 0:
            message = f"{where}: {_oom(container, last)} at {_stamp(last.finished_at)}, {restarts}{_said(last)}"
            return Finding(OOM_KILLED, pod.name, message), remaining

    if container.running_since is not None and container.started and not container.ready:
        since = max(filter(None, (container.running_since, pod.unready_since)))
        remaining = PROBE_GRACE_SECONDS - (now - since).total_seconds()
        if remaining > 0:
            return None, remaining
        message = f"{where}: running but not ready since {_stamp(since)}: its readiness probe fails"
        if container.last_terminated is not None:
            message += f"; {restarts}, {_ended(container.last_terminated)}"
        return Finding(PROBE_FAILING, pod.name, message), None
    return None, None


def _oom(container: ContainerSummary, termination: Termination) -> str:
    limit = f" at its memory limit {container.memory_limit}" if container.memory_limit else ""
    return f"OOMKilled{limit} (exit code {termination.exit_code})"


def _ended(termination: Termination) -> str:
    reason = f" ({termination.reason})" if termination.reason and not termination.message else ""
    return f"last exit code {termination.exit_code}{reason}{_said(termination)}"


def _said(termination: Termination) -> str:
    """``: <termination message>`` on one line, its end kept if long; empty without one."""
    text = " ".join(termination.message.split())
    if not text:
        return ""
    if len(text) > MESSAGE_LIMIT:
        text = "…" + text[-MESSAGE_LIMIT:]
    return f": {text}"


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: Any) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
