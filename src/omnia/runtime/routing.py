"""Prompt routing without restarts: the runtime follows its mounted config's rollout.

The operator rolls the pods only when they must hold new prompt content
(``omnia.operator.hashing``). A canary weight step, a promotion or a
rollback rewrites only which versions the config names and how new sessions
are split between them; the kubelet refreshes the mounted ConfigMap, and
:class:`ConfigWatcher` sees the new file and hands the rollout to the agent.
Sessions keep the version they started on, as always.

A new rollout is applied when nothing but the prompts' routing changed: the
rest of the config is the same, and every version the runtime already holds
has the same content. A version it does not hold yet is checked like at
start-up and joins. Anything else (the file cannot be read or parsed, other
settings or a held version's content changed) leaves the runtime serving as
it is, said once in the log: such a change comes with new pods.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from omnia.agent import Agent, PromptError
from omnia.agent.prompts import PromptRenderer, check_sources
from omnia.config import AgentConfig, PromptRollout

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often the runtime looks at its config file."""


class NotRouting(ValueError):
    """The new config differs in more than the prompts' routing."""


def routing_change(running: AgentConfig, new: AgentConfig) -> PromptRollout | None:
    """The rollout to apply, None when the routing is the same, or :class:`NotRouting`.

    Raises ``PromptError`` when a version the runtime does not hold yet
    does not render.
    """
    if running.model_dump(exclude={"prompts"}) != new.model_dump(exclude={"prompts"}):
        raise NotRouting("settings besides the prompt rollout changed")
    if new.prompts == running.prompts:
        return None
    held = {p.version: p for p in (running.prompts.stable, running.prompts.canary, *running.prompts.retained)
            if p is not None}
    for prompt in (new.prompts.stable, new.prompts.canary, *new.prompts.retained):
        if prompt is None:
            continue
        known = held.get(prompt.version)
        if known is None:
            check_sources(prompt)
            PromptRenderer(prompt).check()
        elif known != prompt:
            raise NotRouting(f"the content of prompt version {prompt.version} changed")
    return new.prompts


class ConfigWatcher:
    """Polls the config file every ``interval`` seconds and applies routing changes to ``agent``."""

    def __init__(self, agent: Agent, path: Path, *, interval: float = POLL_SECONDS) -> None:
        self.agent = agent
        self.path = path
        self.interval = interval
        self._seen = self._read()
        self._refused: str | None = None

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def check(self) -> bool:
        """Look at the file once; True when a new rollout was applied."""
        text = self._read()
        if text is None or text == self._seen:
            return False
        self._seen = text
        try:
            rollout = routing_change(self.agent.config, AgentConfig.from_json(text))
        except (NotRouting, PromptError) as exc:
            reason = str(exc)
        except ValueError as exc:  # not JSON, or not an agent configuration (pydantic's ValidationError)
            reason = f"invalid agent configuration: {exc}"
        else:
            reason = None
        if reason is not None:
            if reason != self._refused:
                self._refused = reason
                log.warning("config file changed; serving as before", extra={"path": str(self.path),
                                                                             "reason": reason})
            return False
        self._refused = None
        if rollout is None:
            return False
        self.agent.config = self.agent.config.model_copy(update={"prompts": rollout})
        log.info("prompt rollout applied", extra={
            "stable": rollout.stable.version,
            "canary": rollout.canary.version if rollout.canary else None,
            "canary_weight": rollout.canary_weight,
        })
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; the runtime keeps serving
                log.exception("checking the config file failed")
