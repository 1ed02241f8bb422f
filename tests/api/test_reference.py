"""The generated API reference documents every field and rule."""

from __future__ import annotations

import pytest

from omnia.api import crds, reference
from tests.api.test_schemas import SCHEMAS, _nodes

MARKDOWN = reference.render_markdown()


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_field_path_is_documented(kind: str) -> None:
    schema = SCHEMAS[kind]
    missing = []
    for part in ("spec", "status"):
        for path, _ in _nodes(schema["properties"][part], part):
            if path != part and not path.endswith("[]") and not path.endswith("{}") and f"| `{path}` |" not in MARKDOWN:
                missing.append(path)
    assert missing == []


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_rule_is_documented_with_its_message(kind: str) -> None:
    for _, node in _nodes(SCHEMAS[kind]):
        for rule in node.get("x-kubernetes-validations", ()):
            assert f"{rule['message']} (`{rule['rule']}`)" in MARKDOWN


def test_kinds_are_documented_with_their_short_names() -> None:
    for presentation in crds.PRESENTATIONS:
        kind = presentation.resource.model_fields["kind"].default
        assert f"## {kind}\n" in MARKDOWN
        for short_name in presentation.short_names:
            assert f"`{short_name}`" in MARKDOWN


def test_table_cells_escape_pipes() -> None:
    """Regular expressions contain | and must not split a Markdown table row."""
    ttl_row = next(line for line in MARKDOWN.splitlines() if line.startswith("| `spec.session.ttl` |"))
    assert ttl_row.count(" | ") == 3
