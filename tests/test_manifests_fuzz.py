"""Any manifest file gives agents or a ``ManifestLoadError`` naming it, never a traceback.

Property-based: hypothesis writes arbitrary text, arbitrary YAML documents and
objects shaped like Omnia's kinds (with fields of every type) to a file, and
``omnia run``'s path reads it: ``manifests.load`` then ``plan_local_agent``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnia import manifests

KINDS = ("AgentRuntime", "PromptPack", "Provider", "ToolRegistry", "ConfigMap", "Secret")
SPEC_FIELDS = (
    "promptPackRef", "providerRef", "toolRegistryRef", "session", "facade", "autoscaling", "replicas",
    "version", "systemPrompt", "templates", "variables", "source", "rollout",
    "type", "model", "baseURL", "credentials", "defaults", "pricing", "mock", "handlers", "data", "stringData",
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
names = st.sampled_from(["a", "quickstart", "x-y", "Bad_Name", "", "a" * 300]) | st.text(max_size=20)

omnia_like = st.builds(
    lambda kind, name, spec, api: {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec,
                                   "data": spec},
    st.sampled_from(KINDS),
    names,
    st.dictionaries(st.sampled_from(SPEC_FIELDS), values, max_size=6),
    st.sampled_from(["omnia.altairalabs.ai/v1alpha1", "v1", "omnia.altairalabs.ai/v2", ""]),
)

fuzz = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent.yaml"
        path.write_text(text)
        try:
            loaded = manifests.load([path])
            manifests.plan_local_agent(loaded, agent_name=None, env={})
        except manifests.ManifestLoadError as error:
            assert str(error), "the error names what is wrong"


@fuzz
@given(st.text(max_size=300))
def test_arbitrary_text_is_loaded_or_refused_with_a_manifest_error(text):
    loads_or_refuses(text)


@fuzz
@given(st.lists(values, max_size=3))
def test_arbitrary_yaml_documents_are_loaded_or_refused_with_a_manifest_error(documents):
    loads_or_refuses(yaml.safe_dump_all(documents))


@fuzz
@given(st.lists(omnia_like, min_size=1, max_size=4))
def test_objects_shaped_like_omnia_kinds_are_loaded_or_refused_with_a_manifest_error(documents):
    loads_or_refuses(yaml.safe_dump_all(documents))


def test_secret_data_that_is_not_ascii_is_a_manifest_error_not_a_traceback(tmp_path):
    """Found by the fuzzing above: base64 of non-ASCII text raised a bare ValueError."""
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                    "data": {"url": "\u00e9t\u00e9"}}))
    with pytest.raises(manifests.ManifestLoadError, match="data.url is not base64-encoded text"):
        manifests.load([path])
