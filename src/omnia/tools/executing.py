"""The executor of server-side tools: check, call, retry, protect.

For every call of an ``http``, ``mcp`` or ``openapi`` tool:

1. The arguments are checked against the tool's JSON schema *before* the
   call. Arguments that do not fit go back to the model as an error result
   naming each problem, so it can correct itself; the server never sees them.
2. The endpoint's circuit breaker must let the call through (``breakers.py``).
3. Each attempt is bounded by the tool's ``timeoutSeconds``.
4. A call whose server gave no answer is retried, up to the tool's
   ``retries``, after an exponential, jittered backoff, when repeating it is
   safe: the request never left (connection refused), or the operation is
   idempotent (GET, HEAD, OPTIONS, PUT, DELETE; MCP tools annotated read-only
   or idempotent). A POST that got an HTTP 500 is not repeated: it may have
   done its work before failing.

The whole call therefore takes at most ``timeoutSeconds × (retries + 1)``
(``call_budget``), the bound the agent loop puts around it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.validators import validator_for

from omnia.agent.loop import ToolOutcome, call_budget
from omnia.config import ToolConfig
from omnia.providers.base import ToolCall
from omnia.tools.base import CallFailed, Handler
from omnia.tools.breakers import Breakers

MAX_REPORTED_PROBLEMS = 8


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt ``n`` waits up to ``base × 2ⁿ``, capped."""

    base_delay: float = 0.25
    max_delay: float = 4.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (0-based): half fixed, half random."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return ceiling / 2 + self.random() * ceiling / 2


class ArgumentChecker:
    """Checks arguments against tool schemas; validators are built once per schema."""

    def __init__(self) -> None:
        self._validators: dict[str, jsonschema.protocols.Validator | str] = {}

    def problems(self, schema: dict, arguments: object) -> list[str]:
        """What is wrong with ``arguments``; empty when they fit."""
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = _validator(schema)
        if isinstance(validator, str):
            return [validator]
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        return [_problem(error) for error in errors[:MAX_REPORTED_PROBLEMS]]


def _validator(schema: dict) -> jsonschema.protocols.Validator | str:
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        return f"the tool's own schema is invalid ({exc.message}), so no arguments can be checked"
    return cls(schema)


def _problem(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


Route = Callable[[ToolConfig], Handler | None]


class Executor:
    """A ``ToolExecutor`` over handlers found by ``route`` (by tool type and name).

    Concurrency: any number of calls run at once; breakers and validators are
    shared between them. Cancellation: a cancelled call is abandoned at its
    current attempt or pause, and leaves its breaker as it was.
    """

    def __init__(
        self,
        route: Route,
        *,
        breakers: Breakers | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._route = route
        self.breakers = breakers or Breakers()
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._checker = ArgumentChecker()

    async def execute(self, tool: ToolConfig, call: ToolCall) -> ToolOutcome:
        handler = self._route(tool)
        if handler is None:
            return ToolOutcome(f"tool {tool.name!r} has no handler in this runtime", is_error=True)
        problems = self._checker.problems(tool.parameters, call.arguments)
        if problems:
            listed = "; ".join(problems)
            return ToolOutcome(
                f"tool {tool.name!r} was not called: its arguments do not match its schema: {listed}",
                is_error=True,
            )
        return await self._attempts(handler, tool, call.arguments)

    async def _attempts(self, handler: Handler, tool: ToolConfig, arguments: dict) -> ToolOutcome:
        endpoint = handler.endpoint(tool)
        breaker = self.breakers[endpoint]
        deadline = self._clock() + call_budget(tool)
        attempt = 0
        while True:
            if not breaker.allow():
                return ToolOutcome(
                    f"tool {tool.name!r} was not called: {endpoint} failed {breaker.failures} times in a row; "
                    f"calls resume in {max(breaker.retry_in(), 0.1):.1f}s",
                    is_error=True,
                )
            limit = min(tool.timeout_seconds, deadline - self._clock())
            try:
                async with asyncio.timeout(limit):
                    outcome = await handler.call(tool, arguments)
            except CallFailed as exc:
                failure = exc
            except TimeoutError:
                failure = CallFailed(f"{endpoint} gave no answer within {limit:.3g}s", reached=True)
            except BaseException:
                breaker.abandoned()
                raise
            else:
                breaker.succeeded()
                return outcome
            breaker.failed()
            attempt += 1
            tries = f" (attempt {attempt} of {tool.retries + 1})" if tool.retries else ""
            if attempt > tool.retries:
                return ToolOutcome(f"tool {tool.name!r} failed{tries}: {failure.message}", is_error=True)
            if failure.reached and not handler.idempotent(tool):
                return ToolOutcome(
                    f"tool {tool.name!r} failed: {failure.message}; not retried, "
                    "since the call may have had an effect",
                    is_error=True,
                )
            pause = self.retry.delay(attempt - 1)
            if self._clock() + pause >= deadline:
                return ToolOutcome(f"tool {tool.name!r} failed{tries}: {failure.message}", is_error=True)
            await self._sleep(pause)
