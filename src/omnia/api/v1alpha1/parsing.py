"""Turning manifest dicts (from YAML files or the API server) into typed resources.

Errors name the field path as ``kubectl`` would (``spec.autoscaling.metrics[1].name``)
so a typo in a manifest read by ``omnia run`` is as easy to find as one
rejected by the API server.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from omnia.api.v1alpha1.agentruntime import AgentRuntime
from omnia.api.v1alpha1.common import API_VERSION, Resource
from omnia.api.v1alpha1.promptpack import PromptPack
from omnia.api.v1alpha1.provider import Provider
from omnia.api.v1alpha1.toolregistry import ToolRegistry

KINDS: Mapping[str, type[Resource]] = {
    model.model_fields["kind"].default: model
    for model in (AgentRuntime, PromptPack, ToolRegistry, Provider)
}


@dataclass(frozen=True)
class FieldError:
    """One problem in a manifest: where (``spec.replicas``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(ValueError):
    """A manifest that is not a valid Omnia resource; ``errors`` lists every problem."""

    def __init__(self, *, kind: str | None, name: str | None, errors: Sequence[FieldError]) -> None:
        self.kind = kind
        self.name = name
        self.errors = list(errors)
        subject = " ".join(part for part in (kind or "manifest", repr(name) if name else None) if part)
        details = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{subject} is invalid:\n{details}")


def parse_manifest(obj: Mapping[str, Any]) -> Resource:
    """Validate a manifest dict and return the model of its kind.

    Raises :class:`ManifestError` naming each invalid field's path.
    """
    if not isinstance(obj, Mapping):
        raise ManifestError(kind=None, name=None, errors=[FieldError("", "a manifest must be a mapping")])
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if obj.get("apiVersion") != API_VERSION:
        raise ManifestError(
            kind=kind,
            name=name,
            errors=[FieldError("apiVersion", f"expected {API_VERSION}, got {obj.get('apiVersion')!r}")],
        )
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ManifestError(
            kind=None,
            name=name,
            errors=[FieldError("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")],
        )
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        raise ManifestError(
            kind=kind, name=name, errors=[_field_error(model, error) for error in exc.errors()]
        ) from None


def _field_error(model: type[pydantic.BaseModel], error: Any) -> FieldError:
    loc = tuple(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
        known = _field_names(_model_at(model, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "string_pattern_mismatch":
        # The pattern itself (a semver or duration regex) helps nobody; the
        # field's description says what is expected, with an example.
        description = _field_description(_model_at(model, loc[:-1]), loc[-1])
        if description:
            message = f"invalid value {error['input']!r} ({description.rstrip('.')})"
    return FieldError(_format_path(loc), message)


def _format_path(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("int", "str"):
            # pydantic names the branch of an int-or-string union it tried; the
            # field path alone is what a manifest author needs.
            continue
        else:
            path += f".{part}" if path else part
    return path


def _field_names(model: type[pydantic.BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _field_description(model: type[pydantic.BaseModel] | None, name: str | int) -> str | None:
    for field_name, field in (model.model_fields.items() if model else ()):
        if name in (field.alias, field_name):
            return field.description
    return None


def _model_at(model: type[pydantic.BaseModel], loc: Sequence[str | int]) -> type[pydantic.BaseModel] | None:
    annotation: Any = model
    for part in loc:
        current = find_model(annotation)
        if current is None:
            return None
        if isinstance(part, int):
            continue
        fields = {field.alias or name: field for name, field in current.model_fields.items()}
        if part not in fields:
            return None
        annotation = fields[part].annotation
    return find_model(annotation)


def find_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The model class inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = find_model(arg)
            if found is not None:
                return found
    return None
