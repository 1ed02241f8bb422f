"""PromptPack: a versioned prompt configuration with canary rollouts."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from omnia.api.v1alpha1.common import (
    API_VERSION,
    ApiModel,
    ConfigMapKeySelector,
    Conditions,
    Duration,
    ObjectMeta,
    Resource,
    Rule,
    StatusModel,
    conditions_field,
    defaults_of,
    observed_generation_field,
)

# Semantic Versioning 2.0.0, the regular expression recommended by semver.org.
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class PromptSource(ApiModel):
    """Where the prompt content comes from when it is not inline."""

    config_map_ref: ConfigMapKeySelector = Field(
        description="ConfigMap key whose value is a YAML document with systemPrompt, "
        "templates and variables, the same shape as the inline fields.",
    )


class RolloutStep(ApiModel):
    """One step of a canary rollout."""

    weight: int = Field(
        ge=0, le=100,
        description="Percentage of new sessions that get the candidate version.",
    )
    pause: Duration | None = Field(
        default=None,
        description="How long to hold this weight before the next step, e.g. 5m; omitted moves on at once.",
    )


RolloutStrategy = Literal["immediate", "canary"]


class Rollout(ApiModel):
    """How a new version replaces the current one.

    A session keeps the version it started with for its whole life; weights
    apply to new sessions. To roll back, set spec.version back to the stable version.
    """

    validation_rules = (
        Rule(
            cel="self.strategy != 'canary' || (has(self.steps) && size(self.steps) > 0)",
            message="a canary rollout needs at least one step",
            check=lambda rollout: rollout.strategy != "canary" or bool(rollout.steps),
        ),
        Rule(
            cel="self.strategy == 'canary' || !has(self.steps) || size(self.steps) == 0",
            message="steps are only allowed with strategy canary",
            check=lambda rollout: rollout.strategy == "canary" or not rollout.steps,
        ),
    )

    strategy: RolloutStrategy = Field(
        default="immediate",
        description="immediate switches all new sessions at once; canary moves through steps.",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=20,
        description="Canary steps, in order; after the last one the candidate is promoted to stable.",
    )


# A template variable name (a Jinja identifier).
VARIABLE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

ClientVariableType = Literal["string", "integer", "number", "boolean", "enum"]


class ClientVariable(ApiModel):
    """A template variable a client may set in a message's metadata, and the values it accepts."""

    validation_rules = (
        Rule(
            cel="self.name != 'message'",
            message="message is the user's text in a template and cannot be a client variable",
            check=lambda variable: variable.name != "message",
        ),
        Rule(
            cel="self.type == 'enum' ? has(self.values) && size(self.values) > 0 "
            ": !has(self.values) || size(self.values) == 0",
            message="values are required with type enum and only allowed with it",
            check=lambda variable: bool(variable.values) == (variable.type == "enum"),
        ),
        Rule(
            cel="self.type == 'string' || (!has(self.pattern) && !has(self.maxLength))",
            message="pattern and maxLength are only allowed with type string",
            check=lambda variable: variable.type == "string"
            or (variable.pattern is None and variable.max_length is None),
        ),
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=VARIABLE_NAME_PATTERN,
        description="Name of the variable, as the templates use it ({{ name }}).",
    )
    type: ClientVariableType = Field(
        default="string",
        description="What a client may send: a JSON string (string), an integer, a number, true or false "
        "(boolean), or one of values (enum). Anything else is refused with INVALID_MESSAGE.",
    )
    pattern: str | None = Field(
        default=None,
        max_length=1024,
        description="Regular expression the whole value must match (type string), e.g. ^[A-Z]{2}-[0-9]{4}$.",
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Longest value accepted, in characters (type string); omitted accepts up to 256.",
    )
    values: list[Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=list,
        max_length=64,
        description="The accepted values (type enum).",
    )


class ClientInputs(ApiModel):
    """What a client may set in a message's metadata; nothing unless declared here.

    Declared variables are available to every template, the system prompt
    included: where they appear is the pack author's decision, so a free-text
    variable belongs in a template the client picks (the user's turn), not in
    the system prompt.
    """

    validation_rules = (
        Rule(
            cel="self.variables.all(v, self.variables.exists_one(o, o.name == v.name))",
            message="client variable names must be unique",
            check=lambda inputs: len({v.name for v in inputs.variables}) == len(inputs.variables),
        ),
    )

    variables: list[ClientVariable] = Field(
        default_factory=list,
        max_length=32,
        description="Variables a client may set in metadata.variables, each with the type of value it accepts. "
        "A declared variable overrides its default in spec.variables for that message only.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    templates: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=32,
        description="Templates a client may pick in metadata.template; the picked template, rendered with "
        "the user's text as {{ message }}, becomes the user's message.",
    )


class Skill(ApiModel):
    """Something the agent does well, listed in its A2A agent card."""

    id: str = Field(min_length=1, max_length=128, description="Identifier of the skill, unique in the pack.")
    name: str = Field(min_length=1, max_length=256, description="Human-readable name.")
    description: str = Field(default="", max_length=4096, description="What the skill does.")
    tags: list[str] = Field(default_factory=list, description="Keywords for discovery.")
    examples: list[str] = Field(default_factory=list, description="Example requests.")


class PromptPackSpec(ApiModel):
    """The desired state of a PromptPack.

    The content is either inline (systemPrompt, templates, variables) or in a
    ConfigMap (source.configMapRef), never both.
    """

    validation_rules = (
        Rule(
            cel="has(self.source) ? !has(self.systemPrompt) && "
            "(!has(self.templates) || size(self.templates) == 0) && "
            "(!has(self.variables) || size(self.variables) == 0) : has(self.systemPrompt)",
            message="set exactly one prompt source: inline systemPrompt (with optional templates "
            "and variables) or source.configMapRef",
            check=lambda spec: (
                spec.system_prompt is None and not spec.templates and not spec.variables
                if spec.source is not None
                else spec.system_prompt is not None
            ),
        ),
        Rule(
            cel="has(self.source) || !has(self.clientInputs) || !has(self.clientInputs.templates) || "
            "self.clientInputs.templates.all(t, has(self.templates) && t in self.templates)",
            message="clientInputs.templates must name templates of spec.templates",
            check=lambda spec: spec.source is not None
            or spec.client_inputs is None
            or all(name in spec.templates for name in spec.client_inputs.templates),
        ),
    )

    version: str = Field(
        pattern=SEMVER_PATTERN,
        max_length=128,
        description="Semantic version of this content, e.g. 1.4.0. Each version is kept as an immutable snapshot.",
    )
    system_prompt: str | None = Field(
        default=None, description="System prompt template (sandboxed Jinja syntax, variables in {{ name }})."
    )
    templates: dict[str, str] = Field(
        default_factory=dict, description="Named templates the system prompt can include, name to template text."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Template variables and their default values."
    )
    source: PromptSource | None = Field(
        default=None,
        description="Load the content from a ConfigMap instead.",
    )
    client_inputs: ClientInputs | None = Field(
        default=None,
        description="The variables and templates a client may set in a message's metadata, whichever "
        "source the content comes from. Nothing is client-settable unless declared here; a message that "
        "sets anything else gets INVALID_MESSAGE.",
    )
    description: str | None = Field(
        default=None,
        max_length=4096,
        description="What the agent is for; its A2A agent card shows it (versioned with the content).",
    )
    skills: list[Skill] = Field(
        default_factory=list,
        description="What the agent does well; its A2A agent card lists them (versioned with the content).",
    )
    rollout: Rollout = Field(
        default_factory=Rollout,
        json_schema_extra={"default": defaults_of(Rollout)},
        description="How a new version reaches new sessions: immediate, or a canary in steps. "
        "A session keeps the version it started with. To roll back a canary, set version back "
        "to status.stableVersion.",
    )


class PromptVersion(StatusModel):
    """An immutable snapshot of one version of the pack."""

    version: str = Field(description="Semantic version of the snapshot.")
    content_hash: str = Field(description="Hash of the rendered content of the snapshot.")
    created_at: datetime.datetime = Field(description="When the snapshot was taken.")


PromptPackPhase = Literal["Pending", "Ready", "Canary", "Failed"]


class PromptPackStatus(StatusModel):
    """The observed state of a PromptPack."""

    phase: PromptPackPhase | None = Field(
        default=None, description="Summary of the state: Pending, Ready, Canary (a rollout is in progress) or Failed."
    )
    stable_version: str | None = Field(
        default=None,
        description="Version served to new sessions outside a canary.",
    )
    canary_version: str | None = Field(default=None, description="Candidate version during a canary rollout.")
    canary_weight: int | None = Field(
        default=None, ge=0, le=100, description="Percentage of new sessions that currently get the canary."
    )
    canary_step: int | None = Field(default=None, ge=0, description="Index of the current rollout step.")
    history: list[PromptVersion] = Field(
        default_factory=list, description="Snapshots of every version, oldest first."
    )
    consumers: list[str] = Field(
        default_factory=list, description="Names of the AgentRuntimes that use this pack."
    )
    conditions: Conditions = conditions_field("Current conditions: Ready, and Progressing during a rollout.")
    observed_generation: int | None = observed_generation_field()


class PromptPack(Resource):
    """A PromptPack is a versioned prompt configuration: a system prompt, templates and variables."""

    plural = "promptpacks"
    singular = "promptpack"

    api_version: Literal["omnia.altairalabs.ai/v1alpha1"] = Field(
        default=API_VERSION, description="API version: omnia.altairalabs.ai/v1alpha1."
    )
    kind: Literal["PromptPack"] = Field(default="PromptPack", description="Kind: PromptPack.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: PromptPackSpec = Field(description="Desired state of the PromptPack.")
    status: PromptPackStatus = Field(
        default_factory=PromptPackStatus, description="Observed state of the PromptPack."
    )
