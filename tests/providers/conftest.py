from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnia.providers import local
from omnia.providers.base import ProviderError

from . import anthropic_wire, openai_wire
from .serving import ScriptedServer, serving


@pytest.fixture(scope="session")
def _openai_http() -> Iterator[ScriptedServer]:
    with serving(ScriptedServer(openai_wire.PATH)) as server:
        yield server


@pytest.fixture(scope="session")
def _anthropic_http() -> Iterator[ScriptedServer]:
    with serving(ScriptedServer(anthropic_wire.PATH)) as server:
        yield server


@pytest.fixture
def openai_api(_openai_http: ScriptedServer) -> ScriptedServer:
    """A loopback server speaking OpenAI's wire format, with an empty script."""
    _openai_http.script()
    return _openai_http


@pytest.fixture
def anthropic_api(_anthropic_http: ScriptedServer) -> ScriptedServer:
    """A loopback server speaking Anthropic's wire format, with an empty script."""
    _anthropic_http.script()
    return _anthropic_http


@pytest.fixture(scope="session")
def local_model_path() -> Path:
    """The bundled GGUF model; its absence fails the tests under CI, skips them elsewhere."""
    try:
        return local.default_model_path()
    except ProviderError as error:
        if os.environ.get("CI"):
            pytest.fail(f"the local model is required under CI: {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def local_engine(local_model_path: Path) -> local.LocalEngine:
    """The process-wide engine that ``create_provider`` also uses for the default config."""
    engine = local.LocalEngine.shared(
        model_path=local_model_path, context_size=2048, threads=local.DEFAULT_THREADS
    )
    engine.load()
    return engine
