"""The operator: AgentRuntimes, PromptPacks, Providers and ToolRegistries made real.

Layers, by dependency direction: pure building blocks that know nothing of
Kubernetes clients or kopf (``builders``, ``hashing``, ``promptpacks``,
``toolregistries``, ``status``, ``podhealth``, ``references``, ``summaries``,
``sessionstores``), the work
queue (``queueing``) and what it measures (``metrics``), the API client (``applying``)
and the follower of single Secrets over it (``following``), the reconcilers that
combine them (``reconciling``), and the kopf glue (``handlers``, ``main``).
``render`` is the offline twin used by ``omnia render``
(``render.render(manifests, defaults=...)``).
"""

from omnia.operator.builders import (
    BuildError,
    Defaults,
    build_agent_objects,
    build_configmap,
    build_deployment,
    build_hpa,
    build_network_policy,
    build_pdb,
    build_prompt_snapshot,
    build_scaled_object,
    build_service,
    build_service_account,
)
from omnia.operator.hashing import config_hash
from omnia.operator.main import run

__all__ = [
    "BuildError",
    "Defaults",
    "build_agent_objects",
    "build_configmap",
    "build_deployment",
    "build_hpa",
    "build_network_policy",
    "build_pdb",
    "build_prompt_snapshot",
    "build_scaled_object",
    "build_service",
    "build_service_account",
    "config_hash",
    "run",
]
