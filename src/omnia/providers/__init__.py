"""LLM providers: one streaming interface (``base``), one module per vendor.

``create_provider`` turns a ``ProviderConfig`` into a ``Provider``:

=========================  =====================================================
``type``                   served by
=========================  =====================================================
``mock``                   ``mock.MockProvider``: scripted, deterministic
``local``                  ``local.LocalProvider``: embedded llama.cpp model
``claude``                 ``claude.ClaudeProvider``: Anthropic Messages API
``openai``, ``vllm``,      ``openai.OpenAIProvider``: Chat Completions API
``ollama``, ``gemini``     (gemini through Google's OpenAI-compatible endpoint)
=========================  =====================================================

The vendor modules are imported on first use, not with this package: the
SDKs take a second or more to import, and a process that runs the mock or
only needs the types should not pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omnia.config import ProviderConfig
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    Provider,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from omnia.providers.mock import MockProvider

if TYPE_CHECKING:
    from omnia.providers.claude import ClaudeProvider
    from omnia.providers.local import LocalEngine, LocalProvider
    from omnia.providers.openai import OpenAIProvider

__all__ = [
    "ChatRequest",
    "ClaudeProvider",
    "Finish",
    "LocalEngine",
    "LocalProvider",
    "Message",
    "MockProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallRequest",
    "ToolSpec",
    "Usage",
    "create_provider",
]

_LAZY = {
    "ClaudeProvider": "omnia.providers.claude",
    "LocalEngine": "omnia.providers.local",
    "LocalProvider": "omnia.providers.local",
    "OpenAIProvider": "omnia.providers.openai",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_provider(config: ProviderConfig, *, env: Mapping[str, str]) -> Provider:
    """The provider ``config`` describes, with its API key read from ``env``.

    The key is ``env[config.api_key_env]``; ``env`` is passed in (rather than
    read from ``os.environ``) so that callers decide what a provider may see.
    Nothing is contacted and no model is loaded here: a bad configuration
    (missing key, missing model file) fails now, with a ``ProviderError``;
    an unreachable endpoint fails on the first ``stream``.
    """
    api_key = env.get(config.api_key_env) if config.api_key_env else None
    if config.type == "mock":
        return MockProvider(config.mock, model=config.model or "mock")
    if config.type == "local":
        from omnia.providers import local

        return local.LocalProvider.from_config(config)
    if config.type == "claude":
        from omnia.providers import claude

        return claude.ClaudeProvider.from_config(config, api_key=api_key)
    if config.type in ("openai", "vllm", "ollama", "gemini"):
        from omnia.providers import openai

        return openai.OpenAIProvider.from_config(config, api_key=api_key)
    raise ProviderError(f"unknown provider type {config.type!r}")
