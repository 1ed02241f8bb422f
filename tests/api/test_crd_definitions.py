"""The CustomResourceDefinitions: names, subresources and what kubectl shows."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from omnia.api import crds

CRDS = {crd["spec"]["names"]["kind"]: crd for crd in crds.custom_resource_definitions()}


def _version(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]


def test_there_is_one_crd_per_kind() -> None:
    assert sorted(CRDS) == ["AgentRuntime", "PromptPack", "Provider", "ToolRegistry"]


@pytest.mark.parametrize(
    ("kind", "plural", "short_names"),
    [
        pytest.param("AgentRuntime", "agentruntimes", ["agent", "ar"], id="AgentRuntime"),
        pytest.param("PromptPack", "promptpacks", ["pp"], id="PromptPack"),
        pytest.param("ToolRegistry", "toolregistries", ["tr"], id="ToolRegistry"),
        pytest.param("Provider", "providers", ["prov"], id="Provider"),
    ],
)
def test_kinds_are_namespaced_in_the_omnia_group_with_short_names(
    kind: str, plural: str, short_names: list[str]
) -> None:
    crd = CRDS[kind]
    assert crd["metadata"]["name"] == f"{plural}.omnia.altairalabs.ai"
    assert crd["spec"]["group"] == "omnia.altairalabs.ai"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] == plural
    assert crd["spec"]["names"]["shortNames"] == short_names
    assert crd["spec"]["names"]["categories"] == ["omnia"]
    assert [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]] == [("v1alpha1", True, True)]


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_status_is_a_subresource(kind: str) -> None:
    """Users cannot write status, and the operator's status writes do not bump generation."""
    assert _version(kind)["subresources"]["status"] == {}


def test_agent_runtime_scales_like_a_deployment() -> None:
    assert _version("AgentRuntime")["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


@pytest.mark.parametrize("kind", ["PromptPack", "ToolRegistry", "Provider"])
def test_only_agent_runtime_scales(kind: str) -> None:
    assert "scale" not in _version(kind)["subresources"]


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        pytest.param(
            "AgentRuntime",
            ["Phase", "Replicas", "Ready", "Provider", "Prompt", "Budget", "Age", "Endpoint"],
            id="AgentRuntime",
        ),
        pytest.param("PromptPack", ["Version", "Stable", "Canary", "Weight", "Phase", "Age"], id="PromptPack"),
        pytest.param("ToolRegistry", ["Phase", "Age"], id="ToolRegistry"),
        pytest.param("Provider", ["Type", "Model", "Phase", "Age"], id="Provider"),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    assert [column["name"] for column in _version(kind)["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_printer_columns_point_at_declared_fields(kind: str) -> None:
    """A column on a misspelt path would stay empty forever, silently."""
    schema = _version(kind)["schema"]["openAPIV3Schema"]
    for column in _version(kind)["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            node = node["properties"][part]


def test_yaml_stream_holds_the_four_crds_without_anchors() -> None:
    """``omnia crds | kubectl apply -f -`` must work, and the YAML must be plain to read."""
    text = crds.render_yaml()
    assert list(yaml.safe_load_all(text)) == crds.custom_resource_definitions()
    assert "&id" not in text and "*id" not in text
