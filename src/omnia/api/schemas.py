"""Structural OpenAPI v3 schemas from the pydantic models.

The API server only accepts *structural* schemas: every node has a type, no
``$ref``, no ``anyOf`` with ``null``, a closed set of keywords. Pydantic emits
JSON Schema 2020-12, so this module rewrites it node by node: references are
inlined, optional types become ``nullable``, ``int | str`` becomes
``x-kubernetes-int-or-string``. Anything it does not know how to translate is
an error here, at generation time, rather than a CRD the API server rejects.
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic

from omnia.api.v1alpha1.common import Resource

# The JSONSchemaProps keywords of apiextensions.k8s.io/v1 this generator may
# emit, in the order a reader wants them: properties and rules last.
_KEYWORD_ORDER = (
    "type",
    "format",
    "description",
    "default",
    "enum",
    "nullable",
    "x-kubernetes-int-or-string",
    "anyOf",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-validations",
)

_ALLOWED_KEYWORDS = frozenset(_KEYWORD_ORDER)

_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


class SchemaError(ValueError):
    """A model uses a construct that has no structural OpenAPI equivalent."""


def structural_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (any spec or status model)."""
    raw = copy.deepcopy(model.model_json_schema(by_alias=True, mode="validation"))
    definitions = raw.pop("$defs", {})
    return _ordered(_convert(raw, definitions=definitions, path=model.__name__))


def resource_schema(resource: type[Resource]) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a CRD for one of the four kinds.

    ``metadata`` stays a bare object: the API server validates it itself and
    rejects CRD schemas that constrain more than its name.
    """
    fields = resource.model_fields
    return {
        "type": "object",
        "description": _docstring(resource),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": fields["api_version"].description},
            "kind": {"type": "string", "description": fields["kind"].description},
            "metadata": {"type": "object"},
            "spec": _with_description(structural_schema(_model_of(resource, "spec")), fields["spec"].description),
            "status": _with_description(
                structural_schema(_model_of(resource, "status")), fields["status"].description
            ),
        },
    }


def _model_of(resource: type[Resource], field: str) -> type[pydantic.BaseModel]:
    annotation = resource.model_fields[field].annotation
    assert isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)
    return annotation


def _docstring(model: type) -> str:
    return " ".join((model.__doc__ or "").split())


def _with_description(schema: dict[str, Any], description: str | None) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


def _convert(node: dict[str, Any], *, definitions: dict[str, Any], path: str) -> dict[str, Any]:
    node = dict(node)
    node.pop("title", None)
    if node.get("default", ...) is None:
        del node["default"]

    ref = node.pop("$ref", None)
    if ref is None and len(node.get("allOf", ())) == 1:
        ref = node.pop("allOf")[0]["$ref"]
    if ref is not None:
        target = _convert(_resolve(ref, definitions), definitions=definitions, path=path)
        # A field's own description says more than the docstring of its type.
        return {**target, **node}

    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _convert_any_of(node, definitions=definitions, path=path)
        if "anyOf" not in node:
            return node

    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[flag] = node[bound]
            node[bound] = True

    if "properties" in node:
        node["properties"] = {
            name: _convert(child, definitions=definitions, path=f"{path}.{name}")
            for name, child in node["properties"].items()
        }
    if "items" in node:
        node["items"] = _convert(node["items"], definitions=definitions, path=f"{path}[]")
    if node.get("additionalProperties") is False:
        # extra="forbid": the API server prunes unknown fields instead, and
        # structural schemas may not say so.
        del node["additionalProperties"]
    if "additionalProperties" in node:
        value = node["additionalProperties"]
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: free-form maps must be typed as JSONObject")
        node["additionalProperties"] = _convert(value, definitions=definitions, path=f"{path}{{}}")
    if node.get("default") == {} and node.get("type") != "object":
        raise SchemaError(f"{path}: default {{}} on a non-object")

    unknown = set(node) - _ALLOWED_KEYWORDS
    if unknown:
        raise SchemaError(f"{path}: no structural equivalent for {', '.join(sorted(unknown))}")
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"{path}: schema without a type")
    return node


def _convert_any_of(node: dict[str, Any], *, definitions: dict[str, Any], path: str) -> dict[str, Any]:
    branches = node.pop("anyOf")
    non_null = [branch for branch in branches if branch != {"type": "null"}]
    nullable = len(non_null) < len(branches)
    if len(non_null) == 1:
        merged = {**_convert(non_null[0], definitions=definitions, path=path), **node}
    elif sorted(branch.get("type", "") for branch in non_null) == ["integer", "string"]:
        merged = {"x-kubernetes-int-or-string": True, "anyOf": copy.deepcopy(_INT_OR_STRING), **node}
    else:
        raise SchemaError(f"{path}: unions other than X | None and int | str are not structural")
    if nullable:
        merged["nullable"] = True
    return merged


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: node[key] for key in _KEYWORD_ORDER if key in node}
    if "properties" in ordered:
        ordered["properties"] = {name: _ordered(child) for name, child in ordered["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(ordered.get(key), dict):
            ordered[key] = _ordered(ordered[key])
    if "x-kubernetes-validations" in ordered:
        ordered["x-kubernetes-validations"] = [
            {key: rule[key] for key in ("rule", "message", "fieldPath") if key in rule}
            for rule in ordered["x-kubernetes-validations"]
        ]
    return ordered


def _resolve(ref: str, definitions: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SchemaError(f"unexpected reference {ref}")
    return definitions[ref.removeprefix(prefix)]
