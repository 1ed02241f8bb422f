"""Prompt rendering: PromptPack templates in a sandbox, and version choice.

Templates come from people who may not be the platform's operators, so they
run in Jinja's immutable sandbox (no attribute tricks, no mutation of the
values passed in) with strict undefined variables: a typo in a template is an
error at load time, not a silently empty prompt in production.
"""

from __future__ import annotations

import hashlib

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from omnia.config import PromptConfig, PromptRollout


class PromptError(ValueError):
    """A template does not parse or refers to an unknown variable or template."""


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
        try:
            self._system = self._env.from_string(prompt.system_prompt)
            self._templates = {name: self._env.get_template(name) for name in prompt.templates}
        except jinja2.TemplateError as exc:
            raise PromptError(f"prompt {prompt.version}: {exc}") from exc

    def system(self, overrides: dict[str, str] | None = None) -> str:
        return self._render(self._system, "systemPrompt", overrides)

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
            self.template(name)

    def _render(self, template: jinja2.Template, what: str, overrides: dict | None) -> str:
        variables = {**self.prompt.variables, **(overrides or {})}
        try:
            return template.render(**variables)
        except jinja2.TemplateError as exc:
            raise PromptError(f"prompt {self.prompt.version}, {what}: {exc}") from exc


def choose_version(rollout: PromptRollout, *, session_id: str) -> PromptConfig:
    """The prompt version a *new* session gets.

    The choice is a pure function of the session id, so it is sticky and the
    same on every replica; ``canary_weight`` percent of ids fall in the canary.
    """
    if rollout.canary is None or rollout.canary_weight <= 0:
        return rollout.stable
    digest = hashlib.sha256(session_id.encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return rollout.canary if bucket < rollout.canary_weight else rollout.stable


def find_version(rollout: PromptRollout, version: str) -> PromptConfig:
    """The prompt a resumed session started with, or stable once it is gone.

    A session keeps its version while that version is served; after a
    rollback or a promotion has retired it, the session continues on stable.
    """
    for candidate in (rollout.canary, rollout.stable, *rollout.retained):
        if candidate is not None and candidate.version == version:
            return candidate
    return rollout.stable
