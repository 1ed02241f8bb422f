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


def _hosted(kind: str, *, secret_manifest: bool = False) -> str:
    secret = (
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: llm-key}\nstringData: {api-key: from-manifest}\n"
        if secret_manifest
        else ""
    )
    return (
        "apiVersion: omnia.altairalabs.ai/v1alpha1\nkind: PromptPack\nmetadata: {name: p}\n"
        "spec: {version: 1.0.0, systemPrompt: hi}\n"
        "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: Provider\nmetadata: {name: llm}\n"
        f"spec: {{type: {kind}, credentials: {{secretRef: {{name: llm-key, key: api-key}}}}}}\n"
        "---\napiVersion: omnia.altairalabs.ai/v1alpha1\nkind: AgentRuntime\nmetadata: {name: a}\n"
        "spec: {promptPackRef: {name: p}, providerRef: {name: llm}}\n" + secret
    )


@pytest.mark.parametrize(
    ("kind", "secret_manifest", "env", "key", "source"),
    [
        pytest.param("claude", False, {"LLM_KEY_API_KEY": "specific", "ANTHROPIC_API_KEY": "vendor"},
                     "specific", "LLM_KEY_API_KEY", id="specific-variable-wins-over-vendor"),
        pytest.param("claude", True, {"ANTHROPIC_API_KEY": "vendor"},
                     "from-manifest", "Secret 'llm-key' among the manifests", id="secret-manifest-wins-over-vendor"),
        pytest.param("claude", False, {"ANTHROPIC_API_KEY": "vendor"}, "vendor", "ANTHROPIC_API_KEY", id="claude"),
        pytest.param("openai", False, {"OPENAI_API_KEY": "vendor"}, "vendor", "OPENAI_API_KEY", id="openai"),
        pytest.param("gemini", False, {"GEMINI_API_KEY": "vendor"}, "vendor", "GEMINI_API_KEY", id="gemini"),
    ],
)
def test_a_providers_key_comes_from_the_specific_variable_then_the_secret_then_the_vendors(
    tmp_path: Path, kind, secret_manifest, env, key, source
):
    """Locally, the vendor's conventional variable stands in for a Secret nobody created; the note names
    the variable used, never its value."""
    (tmp_path / "agent.yaml").write_text(_hosted(kind, secret_manifest=secret_manifest))
    plan = manifests.plan_local_agent(manifests.load([tmp_path]), agent_name=None, env=env)
    assert plan.secret_env["OMNIA_PROVIDER_API_KEY"] == key
    [note] = [note for note in plan.notes if "API key" in note]
    assert source in note and key not in note


@pytest.mark.parametrize(
    ("kind", "env"),
    [
        pytest.param("claude", {}, id="nothing-set"),
        pytest.param("claude", {"ANTHROPIC_API_KEY": " "}, id="vendor-variable-blank"),
        pytest.param("claude", {"OPENAI_API_KEY": "other-vendor"}, id="another-vendors-variable"),
    ],
)
def test_without_any_key_the_error_names_both_variables(tmp_path: Path, kind, env):
    (tmp_path / "agent.yaml").write_text(_hosted(kind))
    with pytest.raises(manifests.ManifestLoadError) as raised:
        manifests.plan_local_agent(manifests.load([tmp_path]), agent_name=None, env=env)
    message = str(raised.value)
    assert "Secret 'llm-key' key 'api-key' not found" in message
    assert "LLM_KEY_API_KEY" in message and "ANTHROPIC_API_KEY" in message


def test_openai_compatible_servers_have_no_vendor_variable(tmp_path: Path):
    """A vllm or ollama server's key is its operator's, not OpenAI's: OPENAI_API_KEY is not sent to it."""
    manifest = _hosted("vllm").replace("type: vllm,", "type: vllm, baseURL: 'http://127.0.0.1:8000/v1',")
    (tmp_path / "agent.yaml").write_text(manifest)
    with pytest.raises(manifests.ManifestLoadError) as raised:
        manifests.plan_local_agent(manifests.load([tmp_path]), agent_name=None, env={"OPENAI_API_KEY": "vendor"})
    assert "OPENAI_API_KEY" not in str(raised.value)
