"""The executor against a real HTTP service: checks, retries, timeouts, circuit breakers."""

from __future__ import annotations

import asyncio
import time

import pytest

from omnia.providers.base import ToolCall
from omnia.tools import Breakers, Executor, RetryPolicy, http
from omnia.tools.executing import ArgumentChecker

from .conftest import http_tool
from .serving import free_port

FAST = RetryPolicy(base_delay=0.01, max_delay=0.02)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture
def run(client):
    """Call a tool through a fresh executor (or the given one) and return the outcome."""

    async def run(tool, arguments=None, *, executor=None):
        executor = executor or Executor(lambda t: http.Handler(t, env={}, client=client), retry=FAST)
        return await executor.execute(tool, ToolCall("c1", tool.name, arguments or {}))

    return run


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        pytest.param({}, "'city' is a required property", id="missing"),
        pytest.param({"city": 42}, "city: 42 is not of type 'string'", id="wrong-type"),
        pytest.param({"city": "Oslo", "days": 0}, "days: 0 is less than the minimum of 1", id="out-of-range"),
        pytest.param({"city": "Oslo", "when": "now"}, "Additional properties are not allowed", id="unknown"),
    ],
)
async def test_arguments_that_do_not_fit_the_schema_are_refused_before_the_call(
    http_server, http_state, run, arguments, problem
):
    tool = http_tool("weather", http_server.url + "/weather/{{ city }}", schema=WEATHER_SCHEMA)
    outcome = await run(tool, arguments)
    assert outcome.is_error and problem in outcome.content
    assert "was not called" in outcome.content
    assert http_state.requests == []


def test_every_problem_is_reported_with_its_place():
    problems = ArgumentChecker().problems(WEATHER_SCHEMA, {"city": 1, "days": "two"})
    assert problems == ["city: 1 is not of type 'string'", "days: 'two' is not of type 'integer'"]


async def test_a_tool_with_an_invalid_schema_is_not_called(http_server, http_state, run):
    tool = http_tool("weather", http_server.url + "/weather/x", schema={"type": "thing"})
    outcome = await run(tool, {})
    assert outcome.is_error and "the tool's own schema is invalid" in outcome.content
    assert http_state.requests == []


async def test_a_get_that_got_http_500_is_retried_until_it_succeeds(http_server, http_state, run):
    http_state.failures = 2
    outcome = await run(http_tool("flaky", http_server.url + "/flaky", retries=2))
    assert (outcome.content, outcome.is_error) == ("fine now", False)
    assert len(http_state.seen("/flaky")) == 3


async def test_retries_stop_at_the_tools_retry_count(http_server, http_state, run):
    http_state.failures = 5
    outcome = await run(http_tool("flaky", http_server.url + "/flaky", retries=1))
    assert outcome.is_error and "(attempt 2 of 2)" in outcome.content and "HTTP 500" in outcome.content
    assert len(http_state.seen("/flaky")) == 2


async def test_a_post_that_got_http_500_is_not_retried(http_server, http_state, run):
    """The server may have done the work before failing; repeating could do it twice."""
    http_state.failures = 1
    outcome = await run(http_tool("flaky", http_server.url + "/flaky", method="POST", retries=3))
    assert outcome.is_error and "not retried" in outcome.content
    assert len(http_state.seen("/flaky")) == 1


async def test_a_post_that_never_connected_is_retried(run):
    """A refused connection proves the request never left, so repeating it is safe."""
    tool = http_tool("gone", f"http://127.0.0.1:{free_port()}/orders", method="POST", retries=2)
    outcome = await run(tool)
    assert outcome.is_error and "(attempt 3 of 3)" in outcome.content and "cannot connect" in outcome.content


async def test_an_attempt_that_takes_too_long_is_abandoned_at_the_tools_timeout(http_server, http_state, run):
    http_state.delay = 2.0
    tool = http_tool("weather", http_server.url + "/weather/{{ city }}", timeout_seconds=0.3, retries=1)
    started = time.monotonic()
    outcome = await run(tool, {"city": "Oslo"})
    elapsed = time.monotonic() - started
    assert outcome.is_error and "gave no answer within" in outcome.content
    assert len(http_state.requests) == 2
    assert elapsed < 1.5


async def test_the_breaker_opens_after_repeated_failures_and_closes_after_its_cool_down(
    http_server, http_state, client, run
):
    executor = Executor(
        lambda t: http.Handler(t, env={}, client=client),
        breakers=Breakers(failure_threshold=2, reset_after=0.5),
        retry=FAST,
    )
    tool = http_tool("flaky", http_server.url + "/flaky")
    http_state.failures = 100
    for _ in range(2):
        assert "HTTP 500" in (await run(tool, executor=executor)).content
    refused = await run(tool, executor=executor)
    assert refused.is_error and "failed 2 times in a row" in refused.content and "calls resume in" in refused.content
    assert len(http_state.requests) == 2
    http_state.failures = 0
    await asyncio.sleep(0.6)
    assert (await run(tool, executor=executor)).content == "fine now"
    assert executor.breakers.states() == {http.origin(tool.handler["url"]): "closed"}


async def test_answers_with_client_errors_do_not_trip_the_breaker(http_server, http_state, client, run):
    executor = Executor(lambda t: http.Handler(t, env={}, client=client), breakers=Breakers(failure_threshold=1))
    tool = http_tool("missing", http_server.url + "/missing")
    for _ in range(3):
        assert "HTTP 404" in (await run(tool, executor=executor)).content
    assert len(http_state.requests) == 3


async def test_a_tool_without_a_handler_is_an_error_result(run):
    executor = Executor(lambda tool: None)
    outcome = await run(http_tool("orphan", "http://127.0.0.1:1/"), executor=executor)
    assert outcome.is_error and "has no handler" in outcome.content


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        pytest.param(0, 0.125, 0.25, id="first"),
        pytest.param(2, 0.5, 1.0, id="doubles"),
        pytest.param(10, 2.0, 4.0, id="capped"),
    ],
)
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempt, low, high):
    assert RetryPolicy(random=lambda: 0.0).delay(attempt) == low
    assert RetryPolicy(random=lambda: 1.0).delay(attempt) == high
