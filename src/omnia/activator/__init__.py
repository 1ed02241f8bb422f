"""The activator: holds connections to agents at zero replicas until KEDA has woken them.

While a scale-to-zero agent has no ready pod, the operator points its
Service at the activator (an extra EndpointSlice). The activator accepts the
client's WebSocket, tells KEDA through its external scaler that the agent is
wanted, waits for a ready pod and relays the connection to it. See
docs/scaling.md.

Layers, by dependency: ``hosts`` and ``demand`` are bookkeeping without
I/O; ``backends`` (Kubernetes or in memory) say where an agent's pods are;
``waking``, ``proxying`` and ``scaling`` build on them; ``app`` and
``server`` put it on sockets.
"""

from omnia.activator.app import Activator
from omnia.activator.backends import Address, Backends
from omnia.activator.backends.memory import MemoryBackends
from omnia.activator.hosts import AgentRef
from omnia.activator.server import ActivatorServer

__all__ = ["Activator", "ActivatorServer", "Address", "AgentRef", "Backends", "MemoryBackends"]
