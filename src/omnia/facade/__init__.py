"""The facade: the agent pod's client-facing server.

A thin, stateless ASGI app in front of the runtime's gRPC service: the
WebSocket protocol of ``omnia.protocol``, auth, limits, probes, metrics and a
chat page. Sessions live in the runtime, so any replica serves any client.
"""

from omnia.facade.app import create_app
from omnia.facade.server import FacadeServer, run, serve

__all__ = ["FacadeServer", "create_app", "run", "serve"]
