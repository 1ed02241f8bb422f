"""Prompt rendering: PromptPack templates in a sandbox, client inputs, version choice.

Templates come from people who may not be the platform's operators, so they
run in Jinja's immutable sandbox (no attribute tricks, no mutation of the
values passed in) with strict undefined variables: a typo in a template is an
error at load time, not a silently empty prompt in production.

Clients are not trusted with the prompt at all, except where the pack says
so: a message's metadata may set only the variables and pick only the
templates the pack declares as client inputs, with values of the declared
type (:func:`client_choice`). The pack's author decides where a declared
variable lands; nothing a client sends reaches the system prompt unless the
author wrote that variable into it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from omnia.config import ClientInputsConfig, ClientVariableConfig, PromptConfig, PromptRollout
from omnia.protocol import sessions

MESSAGE_VARIABLE = "message"
"""The user's text in a template a client picked; never a client input."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Integers beyond this do not survive every JSON client, so they are refused."""


class PromptError(ValueError):
    """A template does not parse or refers to an unknown variable or template."""


class InputError(PromptError):
    """A message's metadata sets something its prompt does not let clients set."""


@dataclass(frozen=True)
class ClientChoice:
    """What one message's metadata sets, checked against the pack's declaration."""

    variables: dict[str, Any] = field(default_factory=dict)
    template: str | None = None


def client_choice(inputs: ClientInputsConfig, metadata: Mapping[str, Any]) -> ClientChoice:
    """The variables and template of ``metadata``, or :class:`InputError`.

    Only ``metadata.variables`` and ``metadata.template`` steer the prompt;
    other keys are the client's own annotations and are ignored here. Every
    variable must be declared and its value of the declared type; the
    template must be one the pack lets clients pick. Error messages name
    the client's own keys, never the pack's other variables or templates.
    """
    variables = metadata.get("variables")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise InputError("metadata.variables must be a JSON object")
    for name, value in variables.items():
        declared = inputs.variables.get(name)
        if declared is None or name == MESSAGE_VARIABLE:
            raise InputError(f"metadata.variables: {_excerpt(name)} is not a variable clients may set")
        problem = _value_problem(declared, value)
        if problem:
            raise InputError(f"metadata.variables.{name}: {problem}")
    template = metadata.get("template")
    if template is not None:
        if not isinstance(template, str):
            raise InputError("metadata.template must be a string")
        if template not in inputs.templates:
            raise InputError(f"metadata.template: {_excerpt(template)} is not a template clients may pick")
    return ClientChoice(variables=dict(variables), template=template)


def _value_problem(declared: ClientVariableConfig, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``declared``; None when it is."""
    match declared.type:
        case "string":
            if not isinstance(value, str):
                return "must be a string"
            if len(value) > declared.max_length:
                return f"longer than {declared.max_length} characters"
            if declared.pattern is not None and re.fullmatch(declared.pattern, value) is None:
                return f"does not match {declared.pattern!r}"
        case "enum":
            if not isinstance(value, str) or value not in declared.values:
                return "must be one of " + ", ".join(repr(v) for v in declared.values)
        case "boolean":
            if not isinstance(value, bool):
                return "must be true or false"
        case "integer":
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_SAFE_INTEGER:
                return "must be an integer"
        case "number":
            finite = isinstance(value, float) and math.isfinite(value)
            safe = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER
            if not (finite or safe):
                return "must be a finite number"
    return None


def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_sources(prompt: PromptConfig) -> None:
    """Compile every template and name the variables nothing defines, without rendering anything.

    A variable is defined by the pack's ``variables`` or its client inputs;
    named templates also see :data:`MESSAGE_VARIABLE`, set when a client
    picks one. Unlike :meth:`PromptRenderer.check`, this finds an undefined
    variable in a branch the defaults do not take, and runs no template code.
    The error names the field, ``systemPrompt`` or ``templates.NAME``.
    """
    env = ImmutableSandboxedEnvironment()
    defined = set(prompt.variables) | set(prompt.client_inputs.variables) | set(env.globals)
    sources = {"systemPrompt": prompt.system_prompt}
    sources.update({f"templates.{name}": text for name, text in prompt.templates.items()})
    for field_name, source in sources.items():
        try:
            parsed = env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{field_name}, line {exc.lineno}: {exc.message}") from None
        allowed = defined if field_name == "systemPrompt" else defined | {MESSAGE_VARIABLE}
        undefined = sorted(jinja2.meta.find_undeclared_variables(parsed) - allowed)
        if undefined:
            names = ", ".join(repr(name) for name in undefined)
            raise PromptError(
                f"{field_name}: {names} {'is' if len(undefined) == 1 else 'are'} not defined; "
                "declare it in spec.variables or spec.clientInputs.variables"
            )


class PromptRenderer:
    """Renders one prompt version's system prompt and named templates."""

    def __init__(self, prompt: PromptConfig) -> None:
        self.prompt = prompt
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.DictLoader(dict(prompt.templates)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._default_system: str | None = None
        try:
            self._system = self._env.from_string(prompt.system_prompt)
            self._templates = {name: self._env.get_template(name) for name in prompt.templates}
        except jinja2.TemplateError as exc:
            raise PromptError(f"prompt {prompt.version}: {exc}") from exc
        for name, declared in prompt.client_inputs.variables.items():
            if declared.pattern is not None:
                try:
                    re.compile(declared.pattern)
                except re.error as exc:
                    raise PromptError(f"prompt {prompt.version}, client variable {name}: {exc}") from None
        unknown = set(prompt.client_inputs.templates) - set(prompt.templates)
        if unknown:
            raise PromptError(f"prompt {prompt.version}: client templates {sorted(unknown)} do not exist")

    def system(self, overrides: dict[str, str] | None = None) -> str:
        """The system prompt with the pack's variables and ``overrides``.

        Without overrides (no client variables: most turns) it is rendered
        once per version: a template's output depends on its variables only.
        """
        if overrides:
            return self._render(self._system, "systemPrompt", overrides)
        if self._default_system is None:
            self._default_system = self._render(self._system, "systemPrompt", None)
        return self._default_system

    def template(self, name: str, overrides: dict[str, str] | None = None) -> str:
        try:
            template = self._templates[name]
        except KeyError:
            raise PromptError(f"prompt {self.prompt.version} has no template {name!r}") from None
        return self._render(template, name, overrides)

    def check(self) -> None:
        """Render everything with the defaults, so bad templates fail at start-up."""
        self.system()
        for name in self._templates:
            self.template(name, {MESSAGE_VARIABLE: ""})

    def _render(self, template: jinja2.Template, what: str, overrides: dict | None) -> str:
        variables = {**self.prompt.variables, **(overrides or {})}
        try:
            return template.render(**variables)
        except Exception as exc:  # noqa: BLE001 - any failure in the sandbox is the template's, e.g. 1 / 0
            raise PromptError(f"prompt {self.prompt.version}, {what}: {exc}") from exc


def choose_version(rollout: PromptRollout, *, session_id: str) -> PromptConfig:
    """The prompt version a *new* session gets.

    The choice is a pure function of the session id (``protocol.sessions``),
    so it is sticky, the same on every replica, and the facade can announce
    it before the runtime sees the session; ``canary_weight`` percent of ids
    fall in the canary.
    """
    if rollout.canary is None or rollout.canary_weight <= 0:
        return rollout.stable
    bucket = sessions.canary_bucket(session_id)
    return rollout.canary if bucket < rollout.canary_weight else rollout.stable


def served_version(rollout: PromptRollout, version: str) -> PromptConfig | None:
    """The prompt ``version`` when the rollout still serves it to new sessions."""
    for candidate in (rollout.canary, rollout.stable):
        if candidate is not None and candidate.version == version:
            return candidate
    return None


def find_version(rollout: PromptRollout, version: str) -> PromptConfig:
    """The prompt a resumed session started with, or stable once it is gone.

    A session keeps its version while that version is served; after a
    rollback or a promotion has retired it, the session continues on stable.
    """
    for candidate in (rollout.canary, rollout.stable, *rollout.retained):
        if candidate is not None and candidate.version == version:
            return candidate
    return rollout.stable
