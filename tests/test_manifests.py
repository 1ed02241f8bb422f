"""Manifests for ``omnia run``: what a local agent gets from the files and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnia import manifests

AGENT = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: PromptPack
metadata: {name: p}
spec: {version: 1.0.0, systemPrompt: hi}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: a}
spec: {promptPackRef: {name: p}, session: {type: postgres}}
"""


def test_a_shared_store_without_secret_ref_takes_its_url_from_the_environment(tmp_path: Path):
    """Locally there is no installation: its default store is whatever OMNIA_SESSION_URL names."""
    (tmp_path / "agent.yaml").write_text(AGENT)
    plan = manifests.plan_local_agent(manifests.load([tmp_path]), agent_name=None,
                                      env={"OMNIA_SESSION_URL": "postgresql://localhost/omnia"})
    assert (plan.config.session.type, plan.config.session.url_env) == ("postgres", "OMNIA_SESSION_URL")
    assert "OMNIA_SESSION_URL" not in plan.secret_env  # inherited from the caller's environment as it is


def test_without_it_the_error_names_the_file_the_field_and_the_ways_out(tmp_path: Path):
    (tmp_path / "agent.yaml").write_text(AGENT)
    with pytest.raises(manifests.ManifestLoadError) as raised:
        manifests.plan_local_agent(manifests.load([tmp_path]), agent_name=None, env={})
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'agent.yaml'} (document 2): spec.session: type postgres without secretRef")
    assert "set OMNIA_SESSION_URL" in message and "spec.session.secretRef" in message
