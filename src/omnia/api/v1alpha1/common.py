"""Building blocks shared by the four kinds of ``omnia.altairalabs.ai/v1alpha1``.

The models here are the single source of truth for the Kubernetes API: the CRD
schemas, ``kubectl explain`` text and the API reference are generated from
them, and the operator and ``omnia run`` validate manifests with them. That is
why validation rules are declared once, as :class:`Rule` objects carrying both
the CEL expression the API server evaluates and its Python twin, so a manifest
is judged the same way by ``kubectl apply`` and by ``omnia run``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "omnia.altairalabs.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Rule:
    """A cross-field validation rule, enforced by the API server and in Python.

    ``cel`` is evaluated by the API server against the object the rule is
    attached to (``self``); ``check`` is its Python twin, called with the
    validated model. Both must agree: the unit tests exercise ``check`` and
    the cluster tests exercise ``cel`` with the same invalid manifests.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def to_openapi(self) -> dict[str, str]:
        validation = {"rule": self.cel, "message": self.message}
        if self.field_path:
            validation["fieldPath"] = self.field_path
        return validation


def _add_rules_to_schema(schema: dict[str, Any], model: type) -> None:
    rules = getattr(model, "validation_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_openapi() for rule in rules]


class ApiModel(BaseModel):
    """Base of every object inside a resource: camelCase on the wire, rules checked.

    ``extra="forbid"`` makes a misspelt field an error naming the field,
    rather than a setting that is silently ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        json_schema_extra=_add_rules_to_schema,
    )

    validation_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Any:
        for rule in type(self).validation_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


def defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """The default value of an optional object, written out for the CRD schema.

    The API server checks a default against the object's CEL rules as written,
    without filling in the defaults nested in it, so ``default: {}`` is not
    enough: the schema carries the fully defaulted object.
    """
    return {
        key: value
        for key, value in model().model_dump(mode="json", exclude_none=True).items()
        if value not in ({}, [])
    }


class StatusModel(ApiModel):
    """Base of status objects: written by the operator, read back by it.

    Unknown fields are ignored so an operator can read a status written by a
    newer version of itself during an upgrade.
    """

    model_config = ConfigDict(extra="ignore")


# Kubernetes duration strings as Go's time.ParseDuration accepts them,
# restricted to the units that make sense for configuration.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
"""A duration such as ``30s``, ``5m``, ``1h30m`` or ``24h``."""


def parse_duration(text: str) -> datetime.timedelta:
    """Turn a :data:`Duration` string (``"1h30m"``) into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 5m, 1h30m")
    seconds = sum(
        float(number) * _DURATION_UNITS[unit]
        for number, unit in _DURATION_PART.findall(text)
    )
    return datetime.timedelta(seconds=seconds)


JSONObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""Free-form JSON, such as a JSON schema; kept as is by the API server."""

# The pattern Kubernetes publishes for resource.Quantity.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# The pattern of metav1.Condition.type: CamelCase, optionally prefixed by a DNS subdomain.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)

Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
"""A Kubernetes resource quantity: ``500m``, ``2``, ``256Mi``."""


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = Field(min_length=1, description="Name of the referenced object.")


ObjectReference = LocalObjectReference


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same namespace. Secrets are only referenced, never inlined."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    key: str = Field(min_length=1, description="Key within the Secret whose value is used.")


SecretReference = SecretKeySelector


class ConfigMapKeySelector(ApiModel):
    """One key of a ConfigMap in the same namespace."""

    name: str = Field(min_length=1, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, description="Key within the ConfigMap whose value is used.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """An observation of one aspect of the object's state, per the Kubernetes API conventions."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Type of condition in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic identifier of the reason for the last transition, in CamelCase.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )
    last_transition_time: datetime.datetime = Field(
        description="When the condition last changed from one status to another.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object the condition was set for.",
    )


Conditions = Annotated[
    list[Condition],
    Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        }
    ),
]


def conditions_field(description: str) -> Any:
    return Field(default_factory=list, description=description)


def observed_generation_field() -> Any:
    return Field(
        default=None,
        ge=0,
        description="The metadata.generation the operator last reconciled; "
        "status is current when it equals metadata.generation.",
    )


class ObjectMeta(BaseModel):
    """The subset of Kubernetes object metadata Omnia reads; everything else is kept as is."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="allow"
    )

    name: str = Field(min_length=1, description="Name of the object, unique in its namespace.")
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the object."
    )
    uid: str | None = Field(default=None, description="Unique id set by the API server.")
    resource_version: str | None = Field(default=None, description="Version for optimistic concurrency.")
    generation: int | None = Field(default=None, description="Generation of the spec, set by the API server.")


class Resource(BaseModel):
    """Base of the four kinds: ``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="forbid"
    )

    # Each kind declares apiVersion, kind, metadata, spec and status itself,
    # so that manifests are written in the conventional field order.
    plural: ClassVar[str]
    singular: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-compatible dict, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)
