"""PromptPack versions: immutable snapshots and the canary state machine, as pure code.

A PromptPack's spec holds one version; the operator keeps every version it
has seen as an immutable snapshot (a ConfigMap per version and content), and
decides which snapshots new sessions get: the *stable* one and, during a
canary, the *candidate* with a weight. :func:`decide` is that decision, a
function of the previous state, the spec and the time, so the controller can
be killed at any point and recompute the same answer.

The rules, also in docs/operator.md:

- the first version seen becomes stable at once;
- a new ``spec.version`` with strategy ``immediate`` becomes stable at once;
  with ``canary`` it becomes the candidate and walks the steps (weight, then
  pause), and is promoted to stable after the last one;
- setting ``spec.version`` back to the stable version during a canary rolls
  the candidate back;
- content edited without a new version is published under the same version
  (a new snapshot) at once, since there is nothing to canary against — unless
  that content is exactly another version's, which is what a rollback that
  only reverted ``spec.version`` looks like: then the stable snapshot stays.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from omnia.api.v1alpha1 import PromptPackStatus, PromptVersion, Rollout, parse_duration
from omnia.config import PromptConfig, PromptRollout

RETAINED_VERSIONS = 3
"""Earlier stable versions kept in agents' configs, so sessions started on them keep them."""


@dataclass(frozen=True)
class VersionRef:
    """One snapshot: a version and the hash of its content."""

    version: str
    content_hash: str


@dataclass(frozen=True)
class RolloutState:
    """What new sessions get. Stored in the pack's status, plus :func:`annotation` for the rest."""

    stable: str | None = None
    canary: str | None = None
    canary_weight: int | None = None
    canary_step: int | None = None
    step_started_at: datetime.datetime | None = None
    retained: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transition:
    """Something that happened to the rollout, reported as an Event."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    publish: VersionRef | None = None
    """A snapshot to create and add to the history before the state is written."""
    transitions: tuple[Transition, ...] = ()
    requeue_after: datetime.timedelta | None = None
    """When to decide again (the end of a canary pause)."""
    mismatch: str | None = None
    """Why the spec's content is not being served, if it is not."""


@dataclass
class _Builder:
    state: RolloutState
    publish: VersionRef | None = None
    transitions: list[Transition] = field(default_factory=list)

    def note(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.transitions.append(Transition(reason, message, warning))


def latest_snapshots(history: Sequence[PromptVersion]) -> dict[str, str]:
    """Version → content hash of its newest snapshot (history is oldest first)."""
    return {entry.version: entry.content_hash for entry in history}


def decide(
    state: RolloutState,
    *,
    candidate: VersionRef,
    history: Sequence[PromptVersion],
    rollout: Rollout,
    now: datetime.datetime,
) -> Decision:
    """The next rollout state for a pack whose spec now holds ``candidate``."""
    latest = latest_snapshots(history)
    b = _Builder(state)

    def publish_if_new() -> None:
        if latest.get(candidate.version) != candidate.content_hash:
            b.publish = candidate

    if state.stable is None:
        publish_if_new()
        b.state = RolloutState(stable=candidate.version)
        b.note("Released", f"version {candidate.version} serves all new sessions")
        return Decision(b.state, b.publish, tuple(b.transitions))

    if candidate.version == state.stable:
        mismatch = None
        if state.canary is not None:
            b.note(
                "RolledBack",
                f"canary {state.canary} rolled back: all new sessions get {state.stable}",
                warning=True,
            )
            b.state = replace(
                state, canary=None, canary_weight=None, canary_step=None, step_started_at=None
            )
        elif latest.get(state.stable) != candidate.content_hash:
            other = _version_with(latest, candidate.content_hash, besides=state.stable)
            if other is not None:
                mismatch = (
                    f"the spec's content is that of version {other}, not of {state.stable}; "
                    f"new sessions keep the snapshot of {state.stable}: restore its content or set a new version"
                )
            else:
                publish_if_new()
                b.note(
                    "ContentReplaced",
                    f"content of {state.stable} changed without a new version: replaced for all new "
                    "sessions at once (set a new spec.version to roll out gradually)",
                    warning=True,
                )
        return Decision(b.state, b.publish, tuple(b.transitions), mismatch=mismatch)

    if rollout.strategy != "canary" or not rollout.steps:
        publish_if_new()
        b.state = _promoted(state, candidate.version)
        b.note("Released", f"version {candidate.version} serves all new sessions (was {state.stable})")
        return Decision(b.state, b.publish, tuple(b.transitions))

    publish_if_new()
    if state.canary != candidate.version:
        replaced = f" (replacing canary {state.canary})" if state.canary else ""
        b.state = replace(
            state,
            canary=candidate.version,
            canary_step=0,
            canary_weight=rollout.steps[0].weight,
            step_started_at=now,
        )
        b.note("CanaryStarted", _step_message(candidate.version, 0, rollout) + replaced)
    elif b.publish is not None:
        b.note(
            "ContentReplaced",
            f"content of canary {candidate.version} changed without a new version: replaced in place",
            warning=True,
        )
    return _walk_steps(b, rollout=rollout, now=now)


def _walk_steps(b: _Builder, *, rollout: Rollout, now: datetime.datetime) -> Decision:
    """Move through every step whose pause is over; promote after the last one."""
    steps = rollout.steps
    while True:
        state = b.state
        step = state.canary_step or 0
        started = state.step_started_at or now
        if state.step_started_at is None:
            # The bookkeeping was lost (e.g. the annotation removed): the
            # current pause starts over rather than being skipped.
            b.state = state = replace(state, step_started_at=now)
        if step >= len(steps):
            return _promote(b)
        pause = steps[step].pause
        if pause is not None:
            ends = started + parse_duration(pause)
            if now < ends:
                weight = steps[step].weight
                if state.canary_weight != weight:
                    b.state = replace(state, canary_weight=weight)
                return Decision(b.state, b.publish, tuple(b.transitions), requeue_after=ends - now)
        step += 1
        if step >= len(steps):
            return _promote(b)
        b.state = replace(state, canary_step=step, canary_weight=steps[step].weight, step_started_at=now)
        b.note("CanaryStep", _step_message(state.canary or "", step, rollout))


def _promote(b: _Builder) -> Decision:
    canary = b.state.canary or ""
    previous = b.state.stable
    b.state = _promoted(b.state, canary)
    b.note("Promoted", f"canary {canary} promoted: all new sessions get it (was {previous})")
    return Decision(b.state, b.publish, tuple(b.transitions))


def _promoted(state: RolloutState, version: str) -> RolloutState:
    retained = tuple(
        v for v in (state.stable, *state.retained) if v is not None and v != version
    )[:RETAINED_VERSIONS]
    return RolloutState(stable=version, retained=retained)


def _step_message(version: str, step: int, rollout: Rollout) -> str:
    current = rollout.steps[step]
    pause = f" for {current.pause}" if current.pause else ""
    return f"canary {version} gets {current.weight}% of new sessions{pause} (step {step + 1} of {len(rollout.steps)})"


def _version_with(latest: Mapping[str, str], content_hash: str, *, besides: str) -> str | None:
    for version, known in latest.items():
        if known == content_hash and version != besides:
            return version
    return None


# --- where the state lives --------------------------------------------------


def state_from(status: PromptPackStatus, annotation: str | None) -> RolloutState:
    """The state stored in a pack: status fields, plus the annotation's timing and retained versions."""
    extra: dict = {}
    if annotation:
        try:
            loaded = json.loads(annotation)
            extra = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            extra = {}
    started = None
    if extra.get("canary") == status.canary_version and extra.get("step") == status.canary_step:
        try:
            started = datetime.datetime.fromisoformat(extra["stepStartedAt"])
        except (KeyError, TypeError, ValueError):
            started = None
    retained = tuple(str(v) for v in extra.get("retained", []) if isinstance(v, str))
    return RolloutState(
        stable=status.stable_version,
        canary=status.canary_version,
        canary_weight=status.canary_weight,
        canary_step=status.canary_step,
        step_started_at=started if status.canary_version else None,
        retained=retained,
    )


def annotation(state: RolloutState) -> str:
    """The part of the state status has no field for, as the pack's rollout-state annotation.

    The canary and step it belongs to are recorded too, so that a stale
    annotation (the operator died between writing it and the status) is
    recognised and the pause restarts instead of being skipped.
    """
    value: dict = {"retained": list(state.retained)}
    if state.canary is not None and state.step_started_at is not None:
        value |= {
            "canary": state.canary,
            "step": state.canary_step,
            "stepStartedAt": state.step_started_at.isoformat(),
        }
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- what agents get --------------------------------------------------------


class SnapshotMissing(LookupError):
    """A version the rollout serves has no snapshot (yet): its ConfigMap is not there."""


def prompt_rollout(
    state: RolloutState,
    *,
    history: Sequence[PromptVersion],
    snapshot: Callable[[VersionRef], PromptConfig | None],
) -> PromptRollout:
    """The ``PromptRollout`` of agents' configs: stable, canary with its weight, retained versions."""
    latest = latest_snapshots(history)

    def load(version: str) -> PromptConfig:
        content_hash = latest.get(version)
        prompt = snapshot(VersionRef(version, content_hash)) if content_hash else None
        if prompt is None:
            raise SnapshotMissing(f"no snapshot of version {version} yet")
        return prompt

    if state.stable is None:
        raise SnapshotMissing("no stable version yet")
    stable = load(state.stable)
    canary = load(state.canary) if state.canary else None
    retained = []
    for version in state.retained:
        if version in latest and version not in (state.stable, state.canary):
            try:
                retained.append(load(version))
            except SnapshotMissing:
                continue
    return PromptRollout(
        stable=stable,
        canary=canary,
        canary_weight=(state.canary_weight or 0) if canary else 0,
        retained=retained,
    )
