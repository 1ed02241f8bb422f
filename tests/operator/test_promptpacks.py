"""The PromptPack state machine: snapshots, canary steps, promotion and rollback, as pure code."""

from __future__ import annotations

import datetime

import pytest

from omnia.api.v1alpha1 import PromptPackStatus, PromptVersion, Rollout
from omnia.config import PromptConfig
from omnia.operator import promptpacks
from omnia.operator.promptpacks import RolloutState, VersionRef

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
IMMEDIATE = Rollout()
CANARY = Rollout(strategy="canary", steps=[{"weight": 10, "pause": "10m"}, {"weight": 50, "pause": "30m"}])


def history(*entries: tuple[str, str]) -> list[PromptVersion]:
    return [PromptVersion(version=v, content_hash=h, created_at=T0) for v, h in entries]


def minutes(n: float) -> datetime.timedelta:
    return datetime.timedelta(minutes=n)


def test_first_version_becomes_stable_at_once_whatever_the_strategy():
    decision = promptpacks.decide(RolloutState(), candidate=VersionRef("1.0.0", "a"), history=[], rollout=CANARY, now=T0)
    assert decision.state == RolloutState(stable="1.0.0")
    assert decision.publish == VersionRef("1.0.0", "a")
    assert [t.reason for t in decision.transitions] == ["Released"]


def test_unchanged_spec_changes_nothing():
    state = RolloutState(stable="1.0.0")
    decision = promptpacks.decide(state, candidate=VersionRef("1.0.0", "a"), history=history(("1.0.0", "a")),
                                  rollout=IMMEDIATE, now=T0)
    assert (decision.state, decision.publish, decision.transitions, decision.requeue_after) == (state, None, (), None)


def test_immediate_new_version_replaces_stable_and_retains_the_old_one():
    """Sessions that started on 1.0.0 keep it: it stays in the agents' config as retained."""
    state = RolloutState(stable="1.0.0")
    decision = promptpacks.decide(state, candidate=VersionRef("1.1.0", "b"), history=history(("1.0.0", "a")),
                                  rollout=IMMEDIATE, now=T0)
    assert decision.state == RolloutState(stable="1.1.0", retained=("1.0.0",))
    assert decision.publish == VersionRef("1.1.0", "b")


def test_canary_starts_at_the_first_step_and_waits_for_its_pause():
    decision = promptpacks.decide(RolloutState(stable="1.0.0"), candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a")), rollout=CANARY, now=T0)
    assert decision.state == RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=10, canary_step=0,
                                          step_started_at=T0)
    assert decision.requeue_after == minutes(10)
    assert [t.reason for t in decision.transitions] == ["CanaryStarted"]
    assert "10% of new sessions for 10m (step 1 of 2)" in decision.transitions[0].message


@pytest.mark.parametrize(
    ("elapsed", "step", "weight", "requeue", "reasons"),
    [
        pytest.param(minutes(4), 0, 10, minutes(6), [], id="within-the-first-pause"),
        pytest.param(minutes(10), 1, 50, minutes(30), ["CanaryStep"], id="first-pause-over"),
    ],
)
def test_canary_moves_to_the_next_step_when_the_pause_is_over(elapsed, step, weight, requeue, reasons):
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=10, canary_step=0, step_started_at=T0)
    decision = promptpacks.decide(state, candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0 + elapsed)
    assert (decision.state.canary_step, decision.state.canary_weight, decision.requeue_after) == (step, weight, requeue)
    assert [t.reason for t in decision.transitions] == reasons
    assert decision.publish is None


def test_canary_is_promoted_after_the_last_step():
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=50, canary_step=1, step_started_at=T0)
    decision = promptpacks.decide(state, candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0 + minutes(30))
    assert decision.state == RolloutState(stable="1.1.0", retained=("1.0.0",))
    assert [t.reason for t in decision.transitions] == ["Promoted"]
    assert decision.requeue_after is None


def test_steps_without_pauses_are_walked_through_at_once():
    rollout = Rollout(strategy="canary", steps=[{"weight": 10}, {"weight": 50}])
    decision = promptpacks.decide(RolloutState(stable="1.0.0"), candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a")), rollout=rollout, now=T0)
    assert decision.state == RolloutState(stable="1.1.0", retained=("1.0.0",))
    assert [t.reason for t in decision.transitions] == ["CanaryStarted", "CanaryStep", "Promoted"]


def test_setting_the_version_back_to_stable_rolls_the_canary_back():
    """The rolled-back version is not retained: its sessions continue on stable."""
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=10, canary_step=0, step_started_at=T0)
    decision = promptpacks.decide(state, candidate=VersionRef("1.0.0", "a"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0 + minutes(1))
    assert decision.state == RolloutState(stable="1.0.0")
    assert [(t.reason, t.warning) for t in decision.transitions] == [("RolledBack", True)]


def test_reverting_only_the_version_keeps_the_stable_snapshot():
    """After a rollback that set spec.version back but left the candidate's content, that content is not
    published as the stable version: the status says why."""
    decision = promptpacks.decide(RolloutState(stable="1.0.0"), candidate=VersionRef("1.0.0", "b"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0)
    assert decision.state == RolloutState(stable="1.0.0")
    assert decision.publish is None
    assert "that of version 1.1.0" in decision.mismatch


def test_content_edited_without_a_new_version_is_published_in_place():
    decision = promptpacks.decide(RolloutState(stable="1.0.0"), candidate=VersionRef("1.0.0", "c"),
                                  history=history(("1.0.0", "a")), rollout=CANARY, now=T0)
    assert decision.state == RolloutState(stable="1.0.0")
    assert decision.publish == VersionRef("1.0.0", "c")
    assert [(t.reason, t.warning) for t in decision.transitions] == [("ContentReplaced", True)]


def test_a_new_candidate_during_a_canary_restarts_the_steps():
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=50, canary_step=1, step_started_at=T0)
    decision = promptpacks.decide(state, candidate=VersionRef("1.2.0", "c"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0 + minutes(5))
    assert (decision.state.canary, decision.state.canary_step, decision.state.canary_weight) == ("1.2.0", 0, 10)
    assert "replacing canary 1.1.0" in decision.transitions[0].message


def test_a_lost_step_start_restarts_the_pause_rather_than_skipping_it():
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=10, canary_step=0, step_started_at=None)
    decision = promptpacks.decide(state, candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=CANARY, now=T0)
    assert decision.state.step_started_at == T0 and decision.requeue_after == minutes(10)


def test_fewer_steps_after_an_edit_promote_at_once():
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=50, canary_step=1, step_started_at=T0)
    rollout = Rollout(strategy="canary", steps=[{"weight": 10, "pause": "1m"}])
    decision = promptpacks.decide(state, candidate=VersionRef("1.1.0", "b"),
                                  history=history(("1.0.0", "a"), ("1.1.0", "b")), rollout=rollout, now=T0)
    assert decision.state.stable == "1.1.0" and decision.state.canary is None


def test_retained_versions_are_bounded():
    state = RolloutState(stable="1.3.0", retained=("1.2.0", "1.1.0", "1.0.0"))
    decision = promptpacks.decide(state, candidate=VersionRef("1.4.0", "e"), history=[], rollout=IMMEDIATE, now=T0)
    assert decision.state.retained == ("1.3.0", "1.2.0", "1.1.0")


def test_state_round_trips_through_status_and_annotation():
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=10, canary_step=0, step_started_at=T0,
                         retained=("0.9.0",))
    status = PromptPackStatus(stable_version="1.0.0", canary_version="1.1.0", canary_weight=10, canary_step=0)
    assert promptpacks.state_from(status, promptpacks.annotation(state)) == state


def test_an_annotation_for_another_step_is_ignored():
    """The operator died between writing the annotation (step 1) and the status (still step 0)."""
    annotation = promptpacks.annotation(RolloutState(stable="1.0.0", canary="1.1.0", canary_step=1, step_started_at=T0))
    status = PromptPackStatus(stable_version="1.0.0", canary_version="1.1.0", canary_weight=10, canary_step=0)
    assert promptpacks.state_from(status, annotation).step_started_at is None
    assert promptpacks.state_from(status, "not json").step_started_at is None


def test_agents_get_stable_canary_and_retained_snapshots():
    snapshots = {VersionRef("1.0.0", "a"): PromptConfig(version="1.0.0"), VersionRef("1.1.0", "b"): PromptConfig(version="1.1.0"),
                 VersionRef("0.9.0", "z"): PromptConfig(version="0.9.0")}
    state = RolloutState(stable="1.0.0", canary="1.1.0", canary_weight=20, canary_step=0, retained=("0.9.0",))
    rollout = promptpacks.prompt_rollout(state, history=history(("0.9.0", "z"), ("1.0.0", "a"), ("1.1.0", "b")),
                                         snapshot=snapshots.get)
    assert (rollout.stable.version, rollout.canary.version, rollout.canary_weight) == ("1.0.0", "1.1.0", 20)
    assert [p.version for p in rollout.retained] == ["0.9.0"]


def test_a_missing_snapshot_is_reported_not_guessed():
    state = RolloutState(stable="1.0.0")
    with pytest.raises(promptpacks.SnapshotMissing):
        promptpacks.prompt_rollout(state, history=history(("1.0.0", "a")), snapshot=lambda ref: None)
    with pytest.raises(promptpacks.SnapshotMissing):
        promptpacks.prompt_rollout(RolloutState(), history=[], snapshot=lambda ref: None)
