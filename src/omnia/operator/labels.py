"""Names, labels and annotations the operator puts on what it creates.

They are the operator's contract with the cluster: the watch on Deployments
filters on :data:`MANAGED_BY`, owned objects are found again by their names,
and the config hash annotation is what rolls the pods. Keeping them in one
module keeps the builders (which write them) and the handlers (which read
them) in agreement.
"""

from __future__ import annotations

from omnia.api.v1alpha1 import GROUP

OPERATOR = "omnia-operator"
"""Value of ``app.kubernetes.io/managed-by`` and the server-side apply field manager."""

SCALE_FIELD_MANAGER = "omnia-operator-scale"
"""Field manager that holds ``spec.replicas`` of an autoscaled Deployment until the autoscaler takes it.

Server-side apply removes a field its manager stops applying unless another
manager owns it too; handing ``spec.replicas`` to this second manager first
lets the operator stop applying it without resetting the Deployment to one pod.
"""

MANAGED_BY = "app.kubernetes.io/managed-by"
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
AGENT_NAME = "omnia-agent"

AGENT = f"{GROUP}/agent"
PROMPT_PACK = f"{GROUP}/prompt-pack"

CONFIG_HASH = f"{GROUP}/config-hash"
"""Pod template annotation: changes whenever anything a pod depends on changes."""
PROMPT_VERSIONS = f"{GROUP}/prompt-versions"
"""Pod template annotation: the prompt versions the pods hold, version to content digest (JSON)."""

PROMPT_VERSION = f"{GROUP}/prompt-version"
CONTENT_HASH = f"{GROUP}/content-hash"

ROLLOUT_STATE = f"{GROUP}/rollout-state"
"""PromptPack annotation holding the canary bookkeeping that status has no field for."""

SESSION_STORE_SOURCE = f"{GROUP}/session-store-source"
"""Annotation of a default session store's mirror: the Secret key it copies (``namespace/name:key``)."""

SESSION_STORE_VERSION = f"{GROUP}/session-store-version"
"""Annotation of a default session store's mirror: the source's resourceVersion it holds the value of."""

CONFIG_KEY = "agent.json"
CONFIG_DIR = "/etc/omnia"
SNAPSHOT_KEY = "prompt.json"


def config_map_name(agent: str) -> str:
    return f"{agent}-config"


def selector_labels(agent: str) -> dict[str, str]:
    """The labels that select an agent's pods; fixed for the Deployment's life."""
    return {NAME: AGENT_NAME, INSTANCE: agent}


def selector(agent: str) -> str:
    """:func:`selector_labels` as a label selector string (AgentRuntime ``status.selector``)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(agent).items()))


def agent_labels(agent: str) -> dict[str, str]:
    """Labels of every object the operator creates for an agent."""
    return {**selector_labels(agent), MANAGED_BY: OPERATOR, AGENT: agent}
