"""Where an idle connection's memory goes in the facade, by ``tracemalloc``.

    python bench/idle_heap.py [connections] [--traceback]

Serves a facade in this process (with a runtime on the ``mock`` model, also
in this process, which idle connections do not touch), opens the given
number of WebSocket connections (default 2,000) from a child process that
speaks the opening handshake directly and then holds them, and prints the
Python heap the facade grew by per connection, largest allocation sites
first. RSS, which also counts the allocator's overhead, is measured by
``bench/relay.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tracemalloc

from prometheus_client import CollectorRegistry

from omnia.agent import Agent
from omnia.config import AgentConfig, FacadeConfig, ProviderConfig
from omnia.facade.app import create_app
from omnia.facade.runtime_client import RuntimeClient
from omnia.facade.server import FacadeServer
from omnia.providers.mock import MockProvider
from omnia.runtime import server as runtime_server
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import MemoryStore

CLIENT = """
import asyncio, sys

port, count = int(sys.argv[1]), int(sys.argv[2])
REQUEST = (f"GET /ws HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nUpgrade: websocket\\r\\n"
           "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
           "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode()

class Upgrade(asyncio.Protocol):
    def __init__(self):
        self.connected = asyncio.get_running_loop().create_future()
        self.received = b""
    def connection_made(self, transport):
        transport.write(REQUEST)
    def data_received(self, data):
        self.received += data
        if b'"connected"' in self.received and not self.connected.done():
            self.connected.set_result(None)

async def main():
    loop = asyncio.get_running_loop()
    held = []
    for start in range(0, count, 200):
        made = await asyncio.gather(*(loop.create_connection(Upgrade, "127.0.0.1", port)
                                      for _ in range(min(200, count - start))))
        await asyncio.gather(*(protocol.connected for _, protocol in made))
        held += made
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def _hold(port: int, count: int) -> asyncio.subprocess.Process:
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, str(port), str(count), stdout=subprocess.PIPE
    )
    assert client.stdout is not None
    if (await client.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the client could not open its connections")
    return client


async def measure(count: int, *, by_traceback: bool) -> None:
    config = AgentConfig(name="heap", provider=ProviderConfig(type="mock"))
    agent = Agent(config=config, provider=MockProvider(), store=MemoryStore())
    grpc_server, grpc_port = await runtime_server.start(AgentRuntimeService(agent), address="127.0.0.1:0")
    runtime = RuntimeClient.connect(f"127.0.0.1:{grpc_port}")
    facade_config = FacadeConfig(port=0, max_connections=count + 1, max_pending_connections_per_address=0)
    app = create_app(facade_config, agent="heap", runtime=runtime, registry=CollectorRegistry())
    facade = FacadeServer(app, config=facade_config, host="127.0.0.1", port=0)
    await facade.start()
    clients = []
    try:
        # One connection first, so that lazily built shared state is not counted.
        clients.append(await _hold(facade.port, 1))
        gc.collect()
        tracemalloc.start(8 if by_traceback else 1)
        before = tracemalloc.take_snapshot()
        clients.append(await _hold(facade.port, count))
        await asyncio.sleep(1)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = after.compare_to(before, "traceback" if by_traceback else "lineno")
        print(f"{count} idle connections: {sum(s.size_diff for s in stats) / count:,.0f} bytes each")
        for stat in stats[:25]:
            print(f"{stat.size_diff / count:8.0f} B {stat.count_diff / count:6.2f} blocks  {stat.traceback[0]}")
            if by_traceback:
                for line in stat.traceback.format()[-8:]:
                    print("        ", line)
    finally:
        for client in clients:
            client.kill()
            await client.wait()
        await facade.stop()
        await runtime.close()
        await grpc_server.stop(grace=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("connections", type=int, nargs="?", default=2000)
    parser.add_argument("--traceback", action="store_true", help="group by call stack, not by line")
    args = parser.parse_args()
    asyncio.run(measure(args.connections, by_traceback=args.traceback))


if __name__ == "__main__":
    main()
