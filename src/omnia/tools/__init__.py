"""Server-side tools: HTTP endpoints, MCP servers, OpenAPI operations.

The runtime uses a ``Toolbox`` (the agent's live tool list and the executor
of its calls); the operator uses ``discover`` for a ToolRegistry's status
and ``credentials.secret_envs`` for the pod's secret environment.
"""

from omnia.tools.base import CallFailed, DiscoveryError, Found, Handler
from omnia.tools.breakers import Breakers, CircuitBreaker
from omnia.tools.credentials import CredentialError, SecretEnv, env_name, secret_envs
from omnia.tools.discovery import Discovery, HandlerResult, discover, handler_for
from omnia.tools.executing import Executor, RetryPolicy
from omnia.tools.toolbox import Toolbox

__all__ = [
    "Breakers",
    "CallFailed",
    "CircuitBreaker",
    "CredentialError",
    "Discovery",
    "DiscoveryError",
    "Executor",
    "Found",
    "Handler",
    "HandlerResult",
    "RetryPolicy",
    "SecretEnv",
    "Toolbox",
    "discover",
    "env_name",
    "handler_for",
    "secret_envs",
]
