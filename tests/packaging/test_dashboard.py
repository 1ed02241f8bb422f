"""The Grafana dashboard asks only for series the facade exports, with labels they have.

A renamed metric or label would leave a panel silently empty; these tests
read every PromQL expression of the dashboard (panels and variables) and
check its metric names and labels against the facade's own registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from omnia.facade.metrics import Metrics
from tests.packaging.charts import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "omnia-dashboard.json"

# Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels).
TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",)}


def exported_series() -> dict[str, set[str]]:
    """Every series name the facade's registry exports, with the labels it carries."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, agent="support-agent")
    # prometheus_client keeps label names on the metric objects only: a family
    # with no children yet has no samples to read them from.
    label_names = {
        metric._name: set(metric._labelnames)  # noqa: SLF001 - no public accessor
        for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = label_names[family.name] | extra
    return series


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def expressions() -> list[str]:
    board = dashboard()
    found = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Identifiers that name series: not functions, keywords, labels, durations or variables."""
    text = strip_strings(expr)
    text = re.sub(r"\$\w+", " ", text)                    # Grafana variables
    text = re.sub(r"\[[^\]]*\]", " ", text)               # range selectors
    text = re.sub(r"\{[^}]*\}", " ", text)                # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    text = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", text)         # the label argument of label_values
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end():].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def labels_used(expr: str) -> set[str]:
    text = strip_strings(expr)
    used = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        used.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text):
        used.update(label.strip() for label in grouping.split(",") if label.strip())
    for label in re.findall(r"label_values\([^,]*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", text):
        used.add(label)
    return used


def test_every_queried_metric_is_exported_by_the_facade() -> None:
    exported = exported_series()
    for expr in expressions():
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        unknown = names - exported.keys()
        assert not unknown, f"{sorted(unknown)} in {expr!r} are not facade metrics"


def test_every_label_is_one_the_series_carry() -> None:
    exported = exported_series()
    for expr in expressions():
        carried = set(TARGET_LABELS)
        for name in metric_names(expr):
            carried |= exported[name]
        unknown = labels_used(expr) - carried
        assert not unknown, f"labels {sorted(unknown)} in {expr!r} are on none of its series"


@pytest.mark.parametrize(
    "family",
    [
        pytest.param("omnia_active_connections", id="connections"),
        pytest.param("omnia_connections_total", id="connection-results"),
        pytest.param("omnia_turns_total", id="turns-by-outcome"),
        pytest.param("omnia_turn_duration_seconds_bucket", id="turn-latency"),
        pytest.param("omnia_time_to_first_chunk_seconds_bucket", id="time-to-first-chunk"),
        pytest.param("omnia_tokens_total", id="tokens"),
        pytest.param("omnia_cost_usd_total", id="cost"),
        pytest.param("omnia_errors_total", id="errors-by-code"),
        pytest.param("omnia_tool_calls_total", id="tool-calls"),
    ],
)
def test_dashboard_covers(family: str) -> None:
    assert any(family in metric_names(expr) for expr in expressions())


def test_latency_is_shown_as_quantiles() -> None:
    for histogram in ("omnia_turn_duration_seconds", "omnia_time_to_first_chunk_seconds"):
        quantiles = {
            float(q) for expr in expressions() if f"{histogram}_bucket" in expr
            for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)", expr)
        }
        assert quantiles == {0.5, 0.9, 0.99}, histogram


def test_tokens_and_cost_are_broken_down_by_provider_and_model() -> None:
    for metric in ("omnia_tokens_total", "omnia_cost_usd_total"):
        grouped = [expr for expr in expressions() if metric in expr and "by (" in expr]
        assert any({"provider", "model"} <= labels_used(expr) for expr in grouped), metric


def test_every_query_uses_the_dashboard_datasource_and_filters() -> None:
    """Panels follow the data source, namespace and agent pickers instead of a fixed source."""
    for panel in panels(dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]
            assert 'service=~"$agent"' in target["expr"], panel["title"]


def test_expressions_have_balanced_brackets() -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    for expr in expressions():
        stack: list[str] = []
        for char in strip_strings(expr):
            if char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack and stack.pop() == pairs[char], expr
        assert not stack, expr


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    every = list(panels(dashboard()))
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
