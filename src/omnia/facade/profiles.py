"""What the facade's open protocols say about the agent, taken from its configuration once.

The WebSocket protocol needs only the agent's name; the others describe the
agent to their clients (an OpenAI model entry, an A2A agent card) and need
to know which of its tools a client runs. The facade reads that here rather
than from the runtime, since it is fixed for the life of the pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omnia.config import AgentConfig, SkillConfig


@dataclass(frozen=True)
class AgentProfile:
    name: str
    description: str = ""
    version: str = ""
    skills: tuple[SkillConfig, ...] = ()
    client_tools: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, config: AgentConfig) -> AgentProfile:
        """The profile of ``config``, from its stable prompt version (what new sessions get)."""
        prompt = config.prompts.stable
        return cls(
            name=config.name,
            description=prompt.description,
            version=prompt.version,
            skills=tuple(prompt.skills),
            client_tools=frozenset(tool.name for tool in config.tools if tool.type == "client"),
        )
