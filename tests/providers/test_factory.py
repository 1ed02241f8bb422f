"""``create_provider``: the right adapter for each type, credentials from the given env only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omnia.config import MockScript, ProviderConfig, ScriptedReply
from omnia.providers import (
    ClaudeProvider,
    MockProvider,
    OpenAIProvider,
    ProviderError,
    create_provider,
)
from omnia.providers.base import ChatRequest, Message, TextDelta


@pytest.mark.parametrize(
    ("config", "env", "cls", "model"),
    [
        pytest.param(ProviderConfig(type="mock"), {}, MockProvider, "mock", id="mock"),
        pytest.param(
            ProviderConfig(type="openai", model="gpt-4o-mini", api_key_env="OPENAI_KEY"),
            {"OPENAI_KEY": "sk-1"},
            OpenAIProvider,
            "gpt-4o-mini",
            id="openai",
        ),
        pytest.param(
            ProviderConfig(type="vllm", model="qwen", base_url="http://vllm:8000/v1"),
            {},
            OpenAIProvider,
            "qwen",
            id="vllm-without-key",
        ),
        pytest.param(ProviderConfig(type="ollama", model="llama3"), {}, OpenAIProvider, "llama3", id="ollama"),
        pytest.param(
            ProviderConfig(type="gemini", model="gemini-2.5-flash", api_key_env="GEMINI_KEY"),
            {"GEMINI_KEY": "g-1"},
            OpenAIProvider,
            "gemini-2.5-flash",
            id="gemini-through-openai-compatible-endpoint",
        ),
        pytest.param(
            ProviderConfig(type="claude", model="claude-sonnet-4-5", api_key_env="ANTHROPIC_KEY"),
            {"ANTHROPIC_KEY": "sk-ant-1"},
            ClaudeProvider,
            "claude-sonnet-4-5",
            id="claude",
        ),
    ],
)
async def test_each_type_gets_its_adapter(config, env, cls, model):
    provider = create_provider(config, env=env)
    try:
        assert isinstance(provider, cls)
        assert (provider.type, provider.model) == (config.type, model)
    finally:
        await provider.aclose()


@pytest.mark.parametrize("provider_type", ["openai", "gemini", "claude"])
def test_missing_key_fails_at_creation_naming_the_variable(provider_type, monkeypatch):
    """The key comes from ``env`` only, never from the process environment."""
    monkeypatch.setenv("OPENAI_API_KEY", "from-the-process")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-the-process")
    config = ProviderConfig(type=provider_type, model="m", api_key_env="TEAM_KEY")
    with pytest.raises(ProviderError, match="TEAM_KEY") as caught:
        create_provider(config, env={})
    assert caught.value.retryable is False


def test_missing_local_model_file_fails_at_creation(tmp_path):
    config = ProviderConfig(type="local", model_path=str(tmp_path / "absent.gguf"))
    with pytest.raises(ProviderError, match="absent.gguf"):
        create_provider(config, env={})


async def test_mock_gets_its_script():
    config = ProviderConfig(type="mock", mock=MockScript(replies=[ScriptedReply(text="scripted")]))
    provider = create_provider(config, env={})
    request = ChatRequest(messages=(Message("user", "hi"),))
    assert [e async for e in provider.stream(request)][0] == TextDelta("scripted")


def test_vendor_sdks_are_imported_only_when_used():
    """Processes that run the mock or only need the types do not pay for the SDK imports."""
    code = (
        "import sys, omnia.providers; "
        "print(sorted(m for m in ('openai', 'anthropic', 'xllamacpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
