"""The runtime process: its grpc.health.v1 service for the kubelet, and what it says when it cannot start.

Health is asked over real loopback channels, as the kubelet's gRPC probe
asks it; start-up failures are checked on the real command, as a pod runs it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc
from omnia.budgets.redis import RedisCounter
from omnia.config import (
    AgentConfig,
    BudgetConfig,
    BudgetLimit,
    PromptConfig,
    PromptRollout,
    ProviderConfig,
    SessionConfig,
)
from omnia.tools import Toolbox
from omnia.runtime import server
from omnia.termination import StartupError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def config(**overrides) -> AgentConfig:
    return AgentConfig(name="helper", provider=ProviderConfig(type="mock"), **overrides)


async def check(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


async def test_health_answers_serving_for_the_server_and_the_runtime_service():
    running = await server.launch(config(), address="127.0.0.1:0", health_address="127.0.0.1:0", env={})
    try:
        assert running.health_port not in (None, 0, running.port)
        assert await check(running.health_port) == SERVING
        assert await check(running.health_port, "omnia.runtime.v1.AgentRuntime") == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(running.health_port, "no.such.Service")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await running.stop(grace=0)


async def test_health_turns_not_serving_while_draining_and_answers_until_the_drain_ends():
    """SIGTERM with a conversation open: NOT_SERVING at once, while the conversation gets its grace."""
    running = await server.launch(config(), address="127.0.0.1:0", health_address="127.0.0.1:0", env={})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    call = pb_grpc.AgentRuntimeStub(channel).Converse()
    await call.write(pb.ClientEvent(open=pb.Open()))
    assert (await call.read()).WhichOneof("event") == "opened"

    stopping = asyncio.create_task(running.stop(grace=10))
    deadline = asyncio.get_running_loop().time() + 5
    while await check(running.health_port) != NOT_SERVING:
        assert asyncio.get_running_loop().time() < deadline, "health still SERVING while draining"
        await asyncio.sleep(0.05)
    assert await check(running.health_port, "omnia.runtime.v1.AgentRuntime") == NOT_SERVING
    assert not stopping.done()

    await call.done_writing()
    await asyncio.wait_for(stopping, timeout=10)
    await channel.close()


def test_a_wedged_event_loop_fails_the_probe():
    """The health answers come from the conversations' event loop: block it and the probe times out."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(
        server.launch(config(), address="127.0.0.1:0", health_address="127.0.0.1:0", env={}), loop
    ).result(timeout=30)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING
            loop.call_soon_threadsafe(time.sleep, 3)  # a blocking call on the loop, as a bug would make
            time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(2.5)
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(grace=0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def test_without_a_health_address_there_is_no_health_server():
    running = await server.launch(config(), address="127.0.0.1:0", env={})
    try:
        assert (running.health, running.health_server, running.health_port) == (None, None, None)
    finally:
        await running.stop(grace=0)


async def test_a_configuration_that_cannot_run_is_a_startup_error():
    with pytest.raises(StartupError, match="OMNIA_SESSION_URL"):
        await server.launch(config(session=SessionConfig(type="redis")), address="127.0.0.1:0", env={})


@pytest.mark.parametrize(
    ("budget", "counted"),
    [
        pytest.param(BudgetConfig(), False, id="no-limit-no-counter"),
        pytest.param(BudgetConfig(daily=BudgetLimit(tokens=10)), True, id="limited-in-the-session-store"),
    ],
)
async def test_budgets_are_counted_in_the_session_store_only_when_limited(budget, counted):
    """No limit, no counter and no traffic; a limit counts where the sessions live (same URL)."""
    env = {"OMNIA_SESSION_URL": "redis://127.0.0.1:1/0"}
    agent = server.build_agent(
        config(session=SessionConfig(type="redis"), budget=budget), env=env, toolbox=Toolbox([], env=env)
    )
    try:
        assert (agent.budgets is not None) == counted
        if counted:
            assert isinstance(agent.budgets.counter, RedisCounter)
    finally:
        await agent.store.aclose()
        if agent.budgets is not None:
            await agent.budgets.counter.aclose()


async def test_a_health_port_taken_is_a_startup_error():
    running = await server.launch(config(), address="127.0.0.1:0", health_address="127.0.0.1:0", env={})
    try:
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{running.health_port}"):
            await server.launch(config(), address="127.0.0.1:0",
                                health_address=f"127.0.0.1:{running.health_port}", env={})
    finally:
        await running.stop(grace=0)


# --- the command, as a pod runs it -------------------------------------------------------


def omnia_runtime(config_path: Path, termination_log: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "OMNIA_SESSION_URL"}
    return subprocess.run(
        [sys.executable, "-m", "omnia", "runtime", "--config", str(config_path),
         "--listen", f"unix://{tmp_path}/runtime.sock", "--health", "127.0.0.1:0",
         "--termination-log", str(termination_log)],
        capture_output=True, text=True, timeout=60, env=env,
    )


@pytest.mark.parametrize(
    ("contents", "reason"),
    [
        pytest.param(config(session=SessionConfig(type="redis")).to_json(),
                     "session store 'redis' needs its URL in the environment variable OMNIA_SESSION_URL",
                     id="session-store-url-not-set"),
        pytest.param('{"name": "helper", "provider": {"type": "mock"}, "session": {"type": "etcd"}}',
                     "invalid agent configuration", id="invalid-config-file"),
        pytest.param(None, "No such file or directory", id="no-config-file"),
        pytest.param(
            config(prompts=PromptRollout(stable=PromptConfig(
                system_prompt="Hi.{% if premium %} Dear {{ customer }}.{% endif %}", variables={"premium": ""},
            ))).to_json(),
            "systemPrompt: 'customer' is not defined", id="undefined-prompt-variable",
        ),
    ],
)
def test_a_runtime_that_cannot_start_says_why_in_one_line_and_exits_without_a_traceback(tmp_path, contents, reason):
    config_path = tmp_path / "agent.json"
    if contents is not None:
        config_path.write_text(contents)
    termination_log = tmp_path / "termination-log"

    result = omnia_runtime(config_path, termination_log, tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert reason in result.stderr
    written = termination_log.read_text()
    assert written.endswith("\n") and written.count("\n") == 1
    assert reason in written


def test_a_model_that_cannot_be_loaded_stops_the_runtime_before_it_serves(tmp_path):
    """The model is loaded at start-up, not by the first turn: a bad file is a start-up error."""
    junk = tmp_path / "broken.gguf"
    junk.write_text("not a model")
    config_path = tmp_path / "agent.json"
    local = AgentConfig(name="helper", provider=ProviderConfig(type="local", model_path=str(junk)))
    config_path.write_text(local.to_json())
    termination_log = tmp_path / "termination-log"

    result = omnia_runtime(config_path, termination_log, tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot be loaded" in result.stderr and str(junk) in result.stderr
    assert not (tmp_path / "runtime.sock").exists()
    assert str(junk) in termination_log.read_text()
