"""The agent: prompt rendering and the turn loop, free of I/O."""

from omnia.agent.loop import (
    Agent,
    ApprovalDecision,
    Chunk,
    ClientChannel,
    NoServerTools,
    OpenError,
    ToolCallStarted,
    ToolExecutor,
    ToolFinished,
    ToolOutcome,
    TurnDone,
    TurnEvent,
    TurnFailed,
    UserInput,
)
from omnia.agent.prompts import PromptError, PromptRenderer, choose_version, find_version

__all__ = [
    "Agent",
    "ApprovalDecision",
    "Chunk",
    "ClientChannel",
    "NoServerTools",
    "OpenError",
    "PromptError",
    "PromptRenderer",
    "ToolCallStarted",
    "ToolExecutor",
    "ToolFinished",
    "ToolOutcome",
    "TurnDone",
    "TurnEvent",
    "TurnFailed",
    "UserInput",
    "choose_version",
    "find_version",
]
