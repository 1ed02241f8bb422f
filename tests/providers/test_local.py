"""The embedded llama.cpp model, for real, on the CPU (``-m model``)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from omnia.config import ProviderConfig
from omnia.providers._retrying import RetryPolicy
from omnia.providers.base import ChatRequest, Finish, Message, ProviderError, TextDelta
from omnia.providers.local import LocalEngine, LocalProvider
from omnia.providers.openai import OpenAIProvider

pytestmark = pytest.mark.model


def _ask(text: str, *, max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest(
        messages=(Message("system", "You are a helpful assistant."), Message("user", text)),
        max_tokens=max_tokens,
        temperature=0.0,
    )


async def _reply(provider, request: ChatRequest) -> tuple[str, Finish]:
    events = [event async for event in provider.stream(request)]
    assert isinstance(events[-1], Finish)
    assert all(isinstance(e, TextDelta) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), events[-1]


async def test_generates_text_with_real_usage(local_engine: LocalEngine):
    provider = LocalProvider(engine=local_engine, max_tokens=32)
    text, finish = await _reply(provider, _ask("What is the capital of France?"))
    assert text.strip()
    assert finish.usage.input_tokens > 0
    assert 0 < finish.usage.output_tokens <= 32


async def test_max_tokens_ends_the_reply_with_length(local_engine: LocalEngine):
    provider = LocalProvider(engine=local_engine)
    _, finish = await _reply(provider, _ask("Write a long story about a dragon.", max_tokens=5))
    assert (finish.reason, finish.usage.output_tokens) == ("length", 5)


async def test_prompt_beyond_the_context_is_a_non_retryable_error(local_engine: LocalEngine):
    provider = LocalProvider(engine=local_engine)
    with pytest.raises(ProviderError) as caught:
        await _reply(provider, _ask("word " * (local_engine.context_size + 100)))
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "context" in caught.value.message


async def test_cancel_stops_generation_and_frees_the_slot(local_engine: LocalEngine):
    """A cancelled reply stops decoding within moments instead of running to max_tokens."""
    provider = LocalProvider(engine=local_engine)
    first_token = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(_ask("Write a very long story about a dragon.", max_tokens=2000)):
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), timeout=30)
    assert await _busy_slots(local_engine) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    deadline = time.monotonic() + 2  # 2000 tokens would take well over 10 s
    while await _busy_slots(local_engine):
        assert time.monotonic() < deadline, "the model kept generating after the cancel"
        await asyncio.sleep(0.02)


async def _busy_slots(engine: LocalEngine) -> int:
    """How many of llama.cpp's slots are decoding, from its ``/slots`` endpoint."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{engine.base_url.removesuffix('/v1')}/slots",
            headers={"Authorization": f"Bearer {engine.api_key}"},
        )
    return sum(slot["is_processing"] for slot in response.json())


async def test_concurrent_streams_do_not_block_the_event_loop(local_engine: LocalEngine):
    provider = LocalProvider(engine=local_engine)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    start = time.monotonic()
    replies = await asyncio.gather(*(_reply(provider, _ask(f"Name a colour, {n}.", max_tokens=16)) for n in range(3)))
    elapsed = time.monotonic() - start
    ticker.cancel()
    assert all(text.strip() for text, _ in replies)
    assert ticks >= elapsed / 0.01 * 0.5  # the loop kept ticking while the model worked


async def test_openai_provider_against_the_local_openai_compatible_server(local_engine: LocalEngine):
    """End to end: the ``openai`` adapter, over HTTP, to llama.cpp's own server."""
    config = ProviderConfig(type="vllm", model=local_engine.model_path.stem, base_url=local_engine.base_url)
    provider = OpenAIProvider.from_config(config, api_key=local_engine.api_key, retry=RetryPolicy(max_retries=0))
    try:
        text, finish = await _reply(provider, _ask("What is the capital of France?", max_tokens=24))
    finally:
        await provider.aclose()
    assert text.strip()
    assert finish.reason in ("stop", "length")
    assert finish.usage.input_tokens > 0 and finish.usage.output_tokens > 0


async def test_local_http_api_requires_its_key(local_engine: LocalEngine):
    """The embedded server listens on loopback, but still not for any local process."""
    config = ProviderConfig(type="vllm", model="any", base_url=local_engine.base_url)
    provider = OpenAIProvider.from_config(config, api_key="wrong", retry=RetryPolicy(max_retries=0))
    try:
        with pytest.raises(ProviderError) as caught:
            await _reply(provider, _ask("hi", max_tokens=2))
    finally:
        await provider.aclose()
    assert (caught.value.status, caught.value.retryable) == (401, False)


async def test_a_file_that_is_not_a_model_fails_prepare_with_its_path(tmp_path):
    """The runtime calls ``prepare`` at start-up, so this is said before the agent is ready."""
    junk = tmp_path / "model.gguf"
    junk.write_text("not a model")
    provider = LocalProvider(engine=LocalEngine(model_path=junk, context_size=512, threads=1))
    with pytest.raises(ProviderError, match=r"cannot load .*model\.gguf.*GGUF model file"):
        await provider.prepare()
