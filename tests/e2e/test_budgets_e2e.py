"""Budgets across replicas: two runtime + facade process pairs on one Redis.

The promise under test (SPEC §9, docs/budgets.md): a budget is enforced
across replicas before a turn starts, and since a turn is counted when it
ends, the total exceeds the limit by at most the turns in flight when it was
crossed (one per client here, as each client waits for its turn to end).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import websockets

from omnia.budgets import Budgets
from omnia.budgets.redis import RedisCounter
from omnia.config import (
    AgentConfig,
    BudgetConfig,
    BudgetLimit,
    MockScript,
    ProviderConfig,
    ScriptedReply,
    SessionConfig,
)
from omnia.testing import servers

from .processes import AgentProcesses

pytestmark = pytest.mark.services

FRAME_TIMEOUT_SECONDS = 15.0
TURN_TOKENS = 15  # every scripted turn reports 10 input and 5 output tokens
LIMIT = 400  # not a multiple of a turn: the crossing turn overshoots


@pytest.fixture(scope="module")
def redis_server() -> Iterator[servers.RedisServer]:
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.close()


def _config(name: str) -> AgentConfig:
    reply = ScriptedReply(text="ok", input_tokens=10, output_tokens=5, delay_ms=60)
    return AgentConfig(
        name=name,
        provider=ProviderConfig(type="mock", model="mock", mock=MockScript(replies=[reply])),
        session=SessionConfig(type="redis", url_env="OMNIA_SESSION_URL"),
        budget=BudgetConfig(daily=BudgetLimit(tokens=LIMIT)),
    )


@contextmanager
def _replicas(config: AgentConfig, tmp_path, redis_url: str) -> Iterator[list[AgentProcesses]]:
    started = []
    try:
        for name in ("replica-1", "replica-2"):
            workdir = tmp_path / name
            workdir.mkdir()
            started.append(AgentProcesses(config, workdir, env={"OMNIA_SESSION_URL": redis_url}).start())
        yield started
    finally:
        for replica in started:
            replica.stop()


async def _frame(ws) -> dict:
    async with asyncio.timeout(FRAME_TIMEOUT_SECONDS):
        return json.loads(await ws.recv())


async def _turn(ws, text: str) -> dict:
    """Send one message; returns its ``done`` or ``error`` frame."""
    await ws.send(json.dumps({"type": "message", "content": text}))
    while True:
        frame = await _frame(ws)
        if frame["type"] in ("done", "error"):
            return frame
        assert frame["type"] == "chunk", frame


async def _client(url: str) -> tuple[int, dict]:
    """Send messages until refused; returns the tokens of the turns done and the refusal."""
    tokens = 0
    async with websockets.connect(url) as ws:
        assert (await _frame(ws))["type"] == "connected"
        for n in range(1000):
            frame = await _turn(ws, f"message {n}")
            if frame["type"] == "error":
                return tokens, frame
            tokens += frame["usage"]["input_tokens"] + frame["usage"]["output_tokens"]
    raise AssertionError("never refused")


def _sample(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exported")


async def _spent(config: AgentConfig, redis_url: str) -> list[int]:
    counter = RedisCounter.from_url(redis_url)
    try:
        budgets = Budgets(config.budget, namespace=config.namespace, agent=config.name, counter=counter)
        return [spent.tokens for spent in (await budgets.spent()).values()]
    finally:
        await counter.aclose()


@pytest.mark.parametrize(
    "clients_per_replica",
    [pytest.param(1, id="one-client-each"), pytest.param(3, id="three-clients-each")],
)
async def test_two_replicas_overshoot_the_budget_by_at_most_the_turns_in_flight(
    tmp_path, redis_server, clients_per_replica
):
    config = _config(f"budget-agent-{clients_per_replica}")
    with _replicas(config, tmp_path, redis_server.url) as replicas:
        results = await asyncio.gather(
            *(_client(replica.ws_url) for replica in replicas for _ in range(clients_per_replica))
        )
        done_tokens = sum(tokens for tokens, _ in results)
        for _, refusal in results:
            assert (refusal["code"], refusal["retryable"]) == ("BUDGET_EXCEEDED", False)
            assert "daily budget of agent:default/" in refusal["message"]

        in_flight = 2 * clients_per_replica
        assert LIMIT <= done_tokens < LIMIT + in_flight * TURN_TOKENS
        # Every turn a client saw done for was counted, once, in the day and the month.
        assert await _spent(config, redis_server.url) == [done_tokens, done_tokens]

        # Each facade exports the shared total as of its last turn, and the limit.
        for replica in replicas:
            metrics = httpx.get(f"{replica.url}/metrics", timeout=5).text
            labels = f'{{period="day",scope="agent:default/{config.name}",unit="tokens"}}'
            spent = _sample(metrics, f"omnia_budget_spent{labels}")
            assert LIMIT - in_flight * TURN_TOKENS <= spent <= done_tokens
            assert _sample(metrics, f"omnia_budget_limit{labels}") == LIMIT

        # Once spent, every replica refuses new sessions' turns before the model is called.
        for replica in replicas:
            tokens, refusal = await _client(replica.ws_url)
            assert (tokens, refusal["code"]) == (0, "BUDGET_EXCEEDED")
