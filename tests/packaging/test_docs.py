"""The reference pages list everything they document: every facade and operator metric, every chart value.

A metric or a value added without a line in docs/metrics.md or
docs/install.md fails here, so the pages cannot fall behind the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from omnia.facade import metrics as facade_metrics
from omnia.operator import metrics as operator_metrics
from tests.packaging.charts import CHART, REPO

METRICS_DOC = REPO / "docs" / "metrics.md"
INSTALL_DOC = REPO / "docs" / "install.md"

EXPOSED_SUFFIX = {"counter": "_total", "histogram": "", "gauge": ""}


def exposed_metric_names() -> list[str]:
    """What the facade and the operator export, each on its own registry."""
    names = []
    for register in (lambda r: facade_metrics.Metrics(r, agent="agent"), operator_metrics.Metrics):
        registry = CollectorRegistry()
        register(registry)
        names += [family.name + EXPOSED_SUFFIX[family.type] for family in registry.collect()]
    return names


def value_paths(values: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the chart's values, down through the sections whose keys the schema closes."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        node = schema.get("properties", {}).get(key, {})
        if isinstance(value, Mapping) and node.get("additionalProperties") is False:
            yield from value_paths(value, node, prefix=f"{path}.")
        else:
            yield path


@pytest.mark.parametrize("name", exposed_metric_names())
def test_metrics_doc_describes_every_metric(name: str) -> None:
    assert f"`{name}`" in METRICS_DOC.read_text()


def test_install_doc_describes_every_chart_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = INSTALL_DOC.read_text()
    missing = [path for path in value_paths(values, schema) if f"`{path}`" not in text]
    assert not missing


def test_every_chart_value_is_in_the_schema() -> None:
    """The schema closes the top level: a value missing from it would be refused at install."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
