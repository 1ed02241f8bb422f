"""From typed specs to Kubernetes manifests: the objects an AgentRuntime owns.

Every function here is pure: it takes the models of ``omnia.api.v1alpha1``
and the rendered ``AgentConfig`` and returns plain dicts ready for
server-side apply. The operator's handlers and ``omnia render`` call the same
functions, so what ``omnia render`` prints is what the operator creates.

Nothing here reads a Secret: credentials reach the pods as ``secretKeyRef``
environment variables named in the config (``apiKeyEnv`` and friends), so the
ConfigMap holding ``agent.json`` never contains one. The one Secret the
operator writes, the mirror of a default session store
(:func:`build_session_store_secret`), gets its value from the reconciler.
The OTLP headers of traces (a collector's API key) are such a reference too.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

from omnia import __version__
from omnia.api.v1alpha1 import (
    API_VERSION,
    AgentRuntime,
    PromptPack,
    Provider,
    ResourceRequirements,
    ScalingMetric,
    ToolRegistry,
    parse_duration,
)
from omnia.api.v1alpha1.common import Resource, SecretKeySelector
from omnia.config import AgentConfig, PromptConfig
from omnia.operator import labels, sessionstores
from omnia.operator.sessionstores import DefaultStore
from omnia.rendering import FACADE_API_KEYS_ENV, PROVIDER_API_KEY_ENV, SESSION_URL_ENV
from omnia.tools import credentials

DEFAULT_IMAGE = f"ghcr.io/altairalabs/omnia:{__version__}"
DEFAULT_MEMORY_TARGET = "70%"
DEFAULT_INGRESS_NAMESPACE = "ingress-nginx"
DEFAULT_SCRAPE_NAMESPACE = "monitoring"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace: a namespaceSelector matching one namespace by name."""
HOSTED_PROVIDERS = frozenset({"claude", "openai", "gemini"})
"""Provider types whose SDK calls a public HTTPS API when the Provider names no baseURL."""
RUNTIME_ADDRESS = "127.0.0.1:9090"
RUNTIME_HEALTH_PORT = 9091
"""The runtime's ``grpc.health.v1`` service, on the pod's address for the kubelet's probes."""
TERMINATION_LOG = "/dev/termination-log"
"""Where both containers write why they could not start; the kubelet puts it in the pod status."""

RESERVED_PORTS = {
    int(RUNTIME_ADDRESS.rpartition(":")[2]): "the runtime's gRPC service",
    RUNTIME_HEALTH_PORT: "the runtime's health service",
}
"""Ports the runtime takes inside the pod, which the facade cannot listen on too."""

OTLP_HEADERS_ENV = "OTEL_EXPORTER_OTLP_HEADERS"
TRACE_SAMPLER = "parentbased_traceidratio"
"""New traces are sampled at the configured ratio; a caller's sampled trace is always followed."""
POD_NAME_ENV = "OMNIA_POD_NAME"
POD_NAMESPACE_ENV = "OMNIA_POD_NAMESPACE"

# The distroless "nonroot" user: any non-zero id satisfies runAsNonRoot, a
# well-known one keeps file ownership in images predictable.
POD_USER = 65532

SERVICE_PORT_NAME = "ws"
"""The name of the facade's port on an agent's Service (and of the activator's port in its EndpointSlice)."""

ACTIVE_CONNECTIONS = "active_connections"
"""The custom metric the activator's external scaler serves (the facade's gauge of open connections)."""
ACTIVATOR_HTTP_PORT = 8080
ACTIVATOR_SCALER_PORT = 9090

SESSION_STORE_PORTS = {"redis": 6379, "postgres": 5432}
DNS_PORT = 53
HTTPS_PORT = 443


class BuildError(ValueError):
    """The spec cannot become manifests; the message starts with the field at fault."""


@dataclass(frozen=True)
class TracingDefaults:
    """The installation's trace collector (the chart's ``tracing`` values); no endpoint, no traces."""

    endpoint: str | None = None
    headers: SecretKeySelector | None = None
    """A key of a Secret in each agent's namespace holding the OTLP headers, sent only to ``endpoint``."""
    sampling_ratio: float = 1.0


@dataclass(frozen=True)
class Tracing:
    """Where one agent's pods send their traces, resolved from its ``spec.tracing`` and the defaults."""

    endpoint: str
    headers: SecretKeySelector | None
    sampling_ratio: float

    def to_dict(self) -> dict[str, Any]:
        """What the pods' variables are made of, for the config hash."""
        headers = self.headers.model_dump(mode="json") if self.headers is not None else None
        return {"endpoint": self.endpoint, "headers": headers, "samplingRatio": self.sampling_ratio}


@dataclass(frozen=True)
class ActivatorService:
    """The activator's Service (``omnia operator --activator-service NAMESPACE/NAME``).

    The activator holds the first connections to an agent at zero replicas
    and tells KEDA about them through its external scaler (``routing``).
    """

    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ActivatorService:
        """``NAMESPACE/NAME``; raises ValueError naming what is wrong."""
        namespace, slash, name = text.partition("/")
        if not slash or not namespace or not name or "/" in name:
            raise ValueError(f"{text!r} is not NAMESPACE/NAME")
        for part in (namespace, name):
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", part):
                raise ValueError(f"{text!r} is not NAMESPACE/NAME: {part!r} is not a valid name")
        return cls(namespace=namespace, name=name)

    @property
    def scaler_address(self) -> str:
        """Where KEDA reaches the external scaler: the Service's ``scaler`` port."""
        return f"{self.name}.{self.namespace}.svc:{ACTIVATOR_SCALER_PORT}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Defaults:
    """What the operator fills in when an AgentRuntime leaves it out."""

    image: str = DEFAULT_IMAGE
    facade_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }
    )
    runtime_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }
    )
    prometheus_url: str | None = None
    """Where KEDA's prometheus triggers query custom metrics; None: no Prometheus (opt-in)."""
    activator: ActivatorService | None = None
    """The activator, which wakes agents at zero and serves ``active_connections`` to KEDA; None: none."""
    session_stores: Mapping[str, DefaultStore] = field(default_factory=dict)
    """Session type → the store agents of that type use when they name none (``sessionstores``)."""
    tracing: TracingDefaults = field(default_factory=TracingDefaults)
    ingress_namespaces: Sequence[str] = (DEFAULT_INGRESS_NAMESPACE,)
    """Namespaces admitted to the facade port of agents whose ``networkPolicy.ingressFrom`` is empty."""
    scrape_namespaces: Sequence[str] = (DEFAULT_SCRAPE_NAMESPACE,)
    """Namespaces admitted to every agent's facade port, for Prometheus to read ``/metrics``."""


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable of an agent pod, filled from a Secret key."""

    variable: str
    secret: str
    key: str
    container: Literal["facade", "runtime"]


@dataclass(frozen=True)
class PodImages:
    facade: str
    runtime: str


@dataclass(frozen=True)
class ObjectKind:
    api_version: str
    kind: str


HPA = ObjectKind("autoscaling/v2", "HorizontalPodAutoscaler")
SCALED_OBJECT = ObjectKind("keda.sh/v1alpha1", "ScaledObject")
PDB = ObjectKind("policy/v1", "PodDisruptionBudget")
NETWORK_POLICY = ObjectKind("networking.k8s.io/v1", "NetworkPolicy")

PRE_STOP_SECONDS = 10
"""How long agent pods keep serving after deletion starts, while endpoints are withdrawn."""

LINGER_SECONDS = 5
"""How long the facade still answers late connections with DRAINING after its drain, instead of refusing them."""

OPTIONAL_KINDS = (HPA, SCALED_OBJECT, PDB, NETWORK_POLICY)
"""Kinds an agent owns only under some specs; the operator deletes them when the spec stops asking."""


@dataclass(frozen=True)
class AgentObjects:
    """Everything an AgentRuntime should own, and the optional kinds it should not."""

    objects: list[dict[str, Any]]
    absent: list[ObjectKind]


# --- what the pods need -----------------------------------------------------


def pod_images(agent: AgentRuntime, *, default: str) -> PodImages:
    images = agent.spec.images
    return PodImages(
        facade=(images.facade if images and images.facade else default),
        runtime=(images.runtime if images and images.runtime else default),
    )


def tracing(agent: AgentRuntime, *, defaults: TracingDefaults) -> Tracing | None:
    """The agent's trace export, or None: ``spec.tracing`` over the installation's defaults.

    The installation's headers go only to the installation's endpoint: an
    agent that names its own collector names its own headers too, so a
    collector's API key never reaches another collector.
    """
    spec = agent.spec.tracing
    if spec is not None and not spec.enabled:
        return None
    own_endpoint = spec.endpoint if spec is not None else None
    endpoint = own_endpoint or defaults.endpoint
    if not endpoint:
        return None
    headers = spec.headers_secret_ref if spec is not None else None
    if headers is None and own_endpoint is None:
        headers = defaults.headers
    ratio = spec.sampling_ratio if spec is not None and spec.sampling_ratio is not None else defaults.sampling_ratio
    return Tracing(endpoint=endpoint, headers=headers, sampling_ratio=ratio)


def secret_env(
    agent: AgentRuntime, *, provider: Provider | None, registry: ToolRegistry | None, tracing: Tracing | None
) -> list[SecretEnv]:
    """The Secret keys an agent's pods read, and the variables that carry them.

    Provider key, session store URL and client API keys use the names the
    rendered config points at (the URL of a default session store comes from
    its mirror beside the agent); tool handlers' secret headers and MCP
    environment use the names ``omnia.tools.credentials`` gives them; the
    OTLP headers of traces are the standard variable, in both containers.
    Raises ``CredentialError`` when two tool values would share a variable.
    """
    env: list[SecretEnv] = []
    if provider is not None and provider.spec.credentials is not None:
        ref = provider.spec.credentials.secret_ref
        env.append(SecretEnv(PROVIDER_API_KEY_ENV, ref.name, ref.key, "runtime"))
    if agent.spec.session.secret_ref is not None:
        ref = agent.spec.session.secret_ref
        env.append(SecretEnv(SESSION_URL_ENV, ref.name, ref.key, "runtime"))
    elif sessionstores.uses_default(agent):
        mirror = sessionstores.mirror_name(agent.metadata.name)
        env.append(SecretEnv(SESSION_URL_ENV, mirror, sessionstores.MIRROR_KEY, "runtime"))
    auth = agent.spec.facade.auth
    if auth.type == "apiKey" and auth.secret_ref is not None:
        env.append(SecretEnv(FACADE_API_KEYS_ENV, auth.secret_ref.name, auth.secret_ref.key, "facade"))
    if registry is not None:
        for tool in credentials.secret_envs(registry.spec):
            env.append(SecretEnv(tool.env, tool.secret, tool.key, "runtime"))
    if tracing is not None and tracing.headers is not None:
        for container in ("facade", "runtime"):
            env.append(SecretEnv(OTLP_HEADERS_ENV, tracing.headers.name, tracing.headers.key, container))
    return env


def tracing_env(agent: AgentRuntime, *, tracing: Tracing | None, container: str) -> list[dict[str, Any]]:
    """The standard OpenTelemetry variables of one container (``omnia.telemetry`` reads them).

    The service is the agent; the resource names the pod, namespace and
    container through the downward API (defined first, as Kubernetes expands
    ``$(VAR)`` only from earlier variables), so ``omnia render`` without a
    namespace gives the same pods. The headers come by reference
    (:func:`secret_env`), never as a value here.
    """
    if tracing is None:
        return []
    name = agent.metadata.name
    attributes = ",".join([
        f"service.namespace=$({POD_NAMESPACE_ENV})",
        f"k8s.namespace.name=$({POD_NAMESPACE_ENV})",
        f"k8s.deployment.name={name}",
        f"k8s.pod.name=$({POD_NAME_ENV})",
        f"k8s.container.name={container}",
    ])
    return [
        {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": POD_NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "OTEL_SERVICE_NAME", "value": name},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": attributes},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.endpoint},
        {"name": "OTEL_TRACES_SAMPLER", "value": TRACE_SAMPLER},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": format(tracing.sampling_ratio, "g")},
    ]


def autoscaled(agent: AgentRuntime) -> bool:
    autoscaling = agent.spec.autoscaling
    return autoscaling is not None and autoscaling.enabled


def desired_replicas(agent: AgentRuntime, *, deployment_exists: bool) -> int | None:
    """``spec.replicas`` to apply, or None to leave it to the autoscaler.

    An autoscaled Deployment starts at ``minReplicas`` and is never scaled by
    the operator afterwards, so it never fights the HPA (or KEDA) over it.
    """
    autoscaling = agent.spec.autoscaling
    if autoscaling is None or not autoscaling.enabled:
        return agent.spec.replicas
    return None if deployment_exists else autoscaling.min_replicas


def scales_to_zero(agent: AgentRuntime) -> bool:
    """Whether KEDA may take the agent to zero pods (``minReplicas: 0``), so the activator must wake it."""
    autoscaling = agent.spec.autoscaling
    return autoscaled(agent) and autoscaling is not None and autoscaling.engine == "keda" \
        and autoscaling.min_replicas == 0


def needs_pdb(agent: AgentRuntime) -> bool:
    autoscaling = agent.spec.autoscaling
    floor = autoscaling.min_replicas if autoscaled(agent) and autoscaling else agent.spec.replicas
    return floor > 1


def endpoint(agent: AgentRuntime) -> str:
    """The in-cluster WebSocket URL of the agent's Service."""
    namespace = agent.metadata.namespace or "default"
    return f"ws://{agent.metadata.name}.{namespace}.svc:{agent.spec.facade.port}/ws"


# --- the objects ------------------------------------------------------------


def build_agent_objects(
    agent: AgentRuntime,
    *,
    config: AgentConfig,
    config_hash: str,
    secrets: Sequence[SecretEnv],
    registry: ToolRegistry | None,
    defaults: Defaults,
    replicas: int | None,
    prompt_versions: Mapping[str, str] | None = None,
) -> AgentObjects:
    """All objects the agent owns, in apply order (the ConfigMap before the pods that mount it).

    All but the mirror of a default session store, whose value only the
    reconciler reads: it applies :func:`build_session_store_secret` first.
    """
    objects = [
        build_service_account(agent),
        build_configmap(agent, config=config),
        build_service(agent),
        build_deployment(
            agent,
            config=config,
            config_hash=config_hash,
            secrets=secrets,
            images=pod_images(agent, default=defaults.image),
            defaults=defaults,
            replicas=replicas,
            prompt_versions=prompt_versions,
        ),
    ]
    absent = []
    engine = agent.spec.autoscaling.engine if autoscaled(agent) and agent.spec.autoscaling else None
    if engine == "hpa":
        objects.append(build_hpa(agent))
    else:
        absent.append(HPA)
    if engine == "keda":
        objects.append(build_scaled_object(agent, activator=defaults.activator, prometheus_url=defaults.prometheus_url))
    else:
        absent.append(SCALED_OBJECT)
    if needs_pdb(agent):
        objects.append(build_pdb(agent))
    else:
        absent.append(PDB)
    if agent.spec.network_policy.enabled:
        objects.append(build_network_policy(agent, config=config, registry=registry, defaults=defaults))
    else:
        absent.append(NETWORK_POLICY)
    return AgentObjects(objects=objects, absent=absent)


_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def check_name(name: str) -> None:
    """An AgentRuntime names its Service, so its name must be one a Service can have (a DNS-1035 label)."""
    if not _DNS_LABEL.fullmatch(name):
        raise BuildError(
            f"metadata.name: {name!r} cannot name the agent's Service; use at most 63 lower-case letters, "
            "digits and '-', starting with a letter and ending with a letter or digit (no '.')"
        )


def build_service_account(agent: AgentRuntime) -> dict[str, Any]:
    """The pods' own identity, with no token mounted: agents never call the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(agent, agent.metadata.name),
        "automountServiceAccountToken": False,
    }


def build_configmap(agent: AgentRuntime, *, config: AgentConfig) -> dict[str, Any]:
    """``agent.json``: the rendered configuration, which names Secrets' variables but holds no secret."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(agent, labels.config_map_name(agent.metadata.name)),
        "data": {labels.CONFIG_KEY: config.to_json()},
    }


def build_session_store_secret(
    agent: AgentRuntime, *, store: DefaultStore, source_version: str | None, value: str | None
) -> dict[str, Any]:
    """The default session store's URL beside the agent, where its pods can read it.

    Annotated with the source key and the source's resourceVersion, so the
    operator sees when the copy is stale without reading the value again.
    ``value`` None (``omnia render``, which cannot read the cluster) leaves
    the data out.
    """
    metadata = _metadata(agent, sessionstores.mirror_name(agent.metadata.name))
    metadata["annotations"] = {labels.SESSION_STORE_SOURCE: str(store)}
    if source_version is not None:
        metadata["annotations"][labels.SESSION_STORE_VERSION] = source_version
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}
    if value is not None:
        secret["data"] = {sessionstores.MIRROR_KEY: base64.b64encode(value.encode()).decode()}
    return secret


def build_service(agent: AgentRuntime) -> dict[str, Any]:
    name = agent.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(agent, name),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.selector_labels(name),
            "ports": [{"name": SERVICE_PORT_NAME, "port": agent.spec.facade.port, "targetPort": "ws",
                       "protocol": "TCP"}],
        },
    }


def build_deployment(
    agent: AgentRuntime,
    *,
    config: AgentConfig,
    config_hash: str,
    secrets: Sequence[SecretEnv],
    images: PodImages,
    defaults: Defaults,
    replicas: int | None,
    prompt_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The agent's pods: facade and runtime containers sharing the rendered config.

    ``replicas`` None leaves the field to the autoscaler (see
    :func:`desired_replicas`). The config hash on the pod template is what
    rolls the pods when anything they depend on changes; ``prompt_versions``
    (``hashing.held_prompts``) records the prompt versions those pods hold,
    so that a later rollout naming only those keeps them.
    """
    name = agent.metadata.name
    port = agent.spec.facade.port
    if port in RESERVED_PORTS:
        raise BuildError(f"spec.facade.port: {port} is taken inside the pod by {RESERVED_PORTS[port]}; choose another")
    config_file = f"{labels.CONFIG_DIR}/{labels.CONFIG_KEY}"
    resources = agent.spec.resources
    traces = tracing(agent, defaults=defaults.tracing)
    facade = {
        "name": "facade",
        "image": images.facade,
        "command": ["omnia"],
        "args": ["facade", "--config", config_file, "--runtime", RUNTIME_ADDRESS, "--port", str(port),
                 "--linger", str(LINGER_SECONDS), "--termination-log", TERMINATION_LOG],
        "ports": [{"name": "ws", "containerPort": port, "protocol": "TCP"}],
        "env": _env(secrets, "facade") + tracing_env(agent, tracing=traces, container="facade"),
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "ws"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Every second, so that a new pod (an agent waking from zero, a
        # rollout) takes traffic within a second of being able to; ten
        # failures in a row, as before, before it stops taking any.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "ws"},
            "periodSeconds": 1,
            "timeoutSeconds": 2,
            "failureThreshold": 10,
        },
        "resources": merge_resources(
            defaults.facade_resources,
            resources.facade if resources else None,
            field="spec.resources.facade",
        ),
        "securityContext": _container_security(),
        "volumeMounts": _mounts(),
        "lifecycle": _pre_stop(),
        **_termination_message(),
    }
    # The conversation service listens on loopback only, for the facade; the
    # health service listens on the pod's address, for the kubelet, and is
    # answered by the same event loop, so a wedged runtime fails its probe.
    # No readiness probe: the facade's /readyz asks the runtime already.
    health = {"grpc": {"port": RUNTIME_HEALTH_PORT}, "timeoutSeconds": 5}
    runtime = {
        "name": "runtime",
        "image": images.runtime,
        "command": ["omnia"],
        "args": ["runtime", "--config", config_file, "--listen", RUNTIME_ADDRESS,
                 "--health", f"0.0.0.0:{RUNTIME_HEALTH_PORT}", "--termination-log", TERMINATION_LOG],
        "ports": [{"name": "health", "containerPort": RUNTIME_HEALTH_PORT, "protocol": "TCP"}],
        "env": _env(secrets, "runtime") + tracing_env(agent, tracing=traces, container="runtime"),
        # Start-up (imports, up to 10 s of tool discovery) gets a minute
        # before the liveness probe may restart the container. The pod is
        # not Ready before this probe passes: every second, not to delay it.
        "startupProbe": {**health, "periodSeconds": 1, "failureThreshold": 60},
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        "resources": merge_resources(
            defaults.runtime_resources,
            resources.runtime if resources else None,
            field="spec.resources.runtime",
        ),
        "securityContext": _container_security(),
        "volumeMounts": _mounts(),
        "lifecycle": _pre_stop(),
        **_termination_message(),
    }
    for container in (facade, runtime):
        if not container["env"]:
            del container["env"]
    spec: dict[str, Any] = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec |= {
        "selector": {"matchLabels": labels.selector_labels(name)},
        "revisionHistoryLimit": 5,
        # New pods must be ready before old ones stop taking connections.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": labels.agent_labels(name),
                "annotations": {
                    labels.CONFIG_HASH: config_hash,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                } | ({labels.PROMPT_VERSIONS: json.dumps(dict(sorted(prompt_versions.items())),
                                                         separators=(",", ":"))}
                     if prompt_versions is not None else {}),
            },
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": (
                    PRE_STOP_SECONDS + int(config.facade.drain_timeout_seconds) + LINGER_SECONDS + 15
                ),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": POD_USER,
                    "runAsGroup": POD_USER,
                    "fsGroup": POD_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": key,
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels.selector_labels(name)},
                    }
                    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                ],
                "containers": [facade, runtime],
                "volumes": [
                    {"name": "config", "configMap": {"name": labels.config_map_name(name)}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                ],
            },
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(agent, name),
        "spec": spec,
    }


def build_hpa(agent: AgentRuntime) -> dict[str, Any]:
    """An autoscaling/v2 HPA: memory and cpu as Resource metrics, custom ones as Pods metrics."""
    autoscaling = _autoscaling(agent)
    metrics = []
    for index, metric in enumerate(_metrics(agent)):
        where = f"spec.autoscaling.metrics[{index}]"
        if metric.type == "custom":
            metrics.append(
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric.name},
                        "target": {"type": "AverageValue", "averageValue": _average_value(metric, where)},
                    },
                }
            )
        else:
            percent = _percent(metric.target)
            target = (
                {"type": "Utilization", "averageUtilization": percent}
                if percent is not None
                else {"type": "AverageValue", "averageValue": str(metric.target)}
            )
            metrics.append({"type": "Resource", "resource": {"name": metric.type, "target": target}})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(agent, agent.metadata.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": agent.metadata.name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": metrics,
            "behavior": _behavior(agent),
        },
    }


def build_scaled_object(
    agent: AgentRuntime, *, activator: ActivatorService | None = None, prometheus_url: str | None = None
) -> dict[str, Any]:
    """A KEDA ScaledObject: cpu and memory triggers, custom metrics from the activator or Prometheus.

    ``active_connections`` comes from the activator's external scaler when
    there is an activator: one ``external-push`` trigger, which also wakes the
    agent the moment the activator holds a connection for it. Any other
    custom metric (and ``active_connections`` without an activator) is a
    ``prometheus`` trigger, only when the operator was given a Prometheus.

    ``minReplicas: 0`` is scale to zero; KEDA can only wake a Deployment from
    zero pods on a metric that exists without pods. With an activator that is
    its trigger, so it must be there; without one, a Prometheus trigger (which
    wakes the agent only once something else makes the metric non-zero).
    """
    autoscaling = _autoscaling(agent)
    name = agent.metadata.name
    namespace = agent.metadata.namespace or "default"
    triggers: list[dict[str, Any]] = []
    for index, metric in enumerate(_metrics(agent)):
        where = f"spec.autoscaling.metrics[{index}]"
        if metric.type != "custom":
            percent = _percent(metric.target)
            triggers.append(
                {
                    "type": metric.type,
                    "metricType": "Utilization" if percent is not None else "AverageValue",
                    "metadata": {"value": str(percent) if percent is not None else str(metric.target)},
                }
            )
        elif metric.name == ACTIVE_CONNECTIONS and activator is not None:
            if any(t["type"] == "external-push" for t in triggers):
                raise BuildError(f"{where}: {ACTIVE_CONNECTIONS} is listed twice")
            triggers.append(
                {
                    "type": "external-push",
                    "name": metric.name,
                    "metricType": "AverageValue",
                    "metadata": {
                        "scalerAddress": activator.scaler_address,
                        "agent": name,
                        "namespace": namespace,
                        "metricName": metric.name,
                        "targetValue": _average_value(metric, where),
                    },
                }
            )
        elif prometheus_url:
            triggers.append(
                {
                    "type": "prometheus",
                    "name": metric.name,
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": prometheus_query(metric.name, namespace=namespace, agent=name),
                        "threshold": _average_value(metric, where),
                    },
                }
            )
        else:
            served = f"; the activator serves only {ACTIVE_CONNECTIONS}" if activator is not None else \
                f" or, for {ACTIVE_CONNECTIONS}, an activator (--activator-service)"
            raise BuildError(
                f"{where}: the custom metric {metric.name!r} needs a Prometheus, which the operator was not given "
                f"(--prometheus-url, the chart's operator.prometheusURL){served}"
            )
    if autoscaling.min_replicas == 0:
        if activator is not None and not any(t["type"] == "external-push" for t in triggers):
            raise BuildError(
                "spec.autoscaling.minReplicas: scaling to zero wakes the agent through the activator, whose external "
                f"scaler follows {ACTIVE_CONNECTIONS}: add {{type: custom, name: {ACTIVE_CONNECTIONS}, target: N}} "
                "to spec.autoscaling.metrics"
            )
        if activator is None and not any(t["type"] == "prometheus" for t in triggers):
            raise BuildError(
                "spec.autoscaling.minReplicas: scaling to zero needs a custom metric that exists without pods: "
                f"{ACTIVE_CONNECTIONS} from the activator (--activator-service) or one from Prometheus "
                "(--prometheus-url); cpu and memory cannot wake a Deployment that has no pods"
            )
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicaCount": autoscaling.min_replicas,
        "maxReplicaCount": autoscaling.max_replicas,
        # KEDA writes this into the HPA it makes for the ScaledObject.
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(agent)}},
        "triggers": triggers,
    }
    if autoscaling.scale_to_zero_after is not None:
        # KEDA counts whole seconds; rounding up keeps a sub-second delay from becoming none.
        spec["cooldownPeriod"] = math.ceil(parse_duration(autoscaling.scale_to_zero_after).total_seconds())
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _metadata(agent, name), "spec": spec}


def prometheus_query(metric: str, *, namespace: str, agent: str) -> str:
    """The PromQL KEDA asks for an agent's total of ``metric``: a sum over its pods' series.

    The pods are selected by the ``agent`` label the facade puts on its
    connection gauges, an exact match: a pattern over pod names would need
    regular-expression escaping, which PromQL strings do not share with
    Python's ``re.escape`` (``\\-`` is no PromQL escape), and would lean on how
    Deployments name their pods. ``namespace`` is the label
    Prometheus gives every target it discovers in Kubernetes.
    """
    return f"sum({metric}{{namespace={_promql_string(namespace)},agent={_promql_string(agent)}}})"


def _promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (Go's escapes: backslash and quote)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_pdb(agent: AgentRuntime) -> dict[str, Any]:
    """Voluntary disruptions (node drains) keep at least one pod serving."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(agent, agent.metadata.name),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels.selector_labels(agent.metadata.name)}},
    }


def build_network_policy(
    agent: AgentRuntime, *, config: AgentConfig, registry: ToolRegistry | None, defaults: Defaults
) -> dict[str, Any]:
    """Ingress to the facade port from the peers admitted; egress only to what the agent talks to.

    Ingress: the peers of ``networkPolicy.ingressFrom`` or, when it names
    none, the installation's ingress namespaces; always the scrape
    namespaces (Prometheus reads ``/metrics`` on the same port) and the
    activator's namespace (it proxies held connections to the pods and reads
    their ``/metrics`` for KEDA), each namespace once. With no peer
    at all the policy admits no ingress: a rule without ``from`` would admit
    everyone. The runtime's health port is not admitted: only the kubelet
    probes it, from the pod's own node, whose traffic NetworkPolicy allows.

    Egress: DNS; the session store's port (its URL is in a Secret the
    operator does not read, so any address); the provider's endpoint (a
    hosted provider without baseURL: HTTPS anywhere); every tool handler's
    URL; the trace collector. A URL naming an in-cluster Service
    (``name.namespace.svc``) is admitted to that namespace only, a bare
    Service name to the agent's namespace, an IP address to that address;
    other host names have no fixed address, so only their port is limited.
    """
    spec = agent.spec.network_policy
    named = [peer.model_dump(mode="json", by_alias=True, exclude_defaults=True) for peer in spec.ingress_from]
    peers = named or [_namespace_peer(name) for name in defaults.ingress_namespaces]
    peers += [_namespace_peer(name) for name in defaults.scrape_namespaces]
    if defaults.activator is not None:
        peers.append(_namespace_peer(defaults.activator.namespace))
    peers = [peer for index, peer in enumerate(peers) if peer not in peers[:index]]
    ingress = [{"from": peers, "ports": [{"protocol": "TCP", "port": agent.spec.facade.port}]}] if peers else []
    egress = [{"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}]
    exported = tracing(agent, defaults=defaults.tracing)
    egress += _egress_rules(_destinations(config, registry, trace_collector=exported.endpoint if exported else None))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(agent, agent.metadata.name),
        "spec": {
            "podSelector": {"matchLabels": labels.selector_labels(agent.metadata.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def build_prompt_snapshot(pack: PromptPack, *, prompt: PromptConfig, content_hash: str) -> dict[str, Any]:
    """One version of a PromptPack, frozen: an immutable ConfigMap owned by the pack."""
    name = snapshot_name(pack.metadata.name, prompt.version, content_hash)
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {
            labels.MANAGED_BY: labels.OPERATOR,
            labels.PROMPT_PACK: pack.metadata.name,
            labels.COMPONENT: "prompt-snapshot",
        },
        "annotations": {labels.PROMPT_VERSION: prompt.version, labels.CONTENT_HASH: content_hash},
    }
    if pack.metadata.namespace:
        metadata["namespace"] = pack.metadata.namespace
    owner = owner_reference(pack)
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {labels.SNAPSHOT_KEY: prompt.model_dump_json(by_alias=True, indent=2)},
    }


def snapshot_name(pack: str, version: str, content_hash: str) -> str:
    """``<pack>-<version>-<hash>``, made a valid object name (semver allows + and capitals)."""
    version_part = re.sub(r"[^a-z0-9.-]", "-", version.lower())
    name = f"{pack}-{version_part}-{content_hash[:10]}"
    if len(name) > 253:
        name = f"{pack[: 253 - len(content_hash[:10]) - 1]}-{content_hash[:10]}"
    return name


def read_snapshot(data: Mapping[str, str]) -> PromptConfig:
    return PromptConfig.model_validate(json.loads(data[labels.SNAPSHOT_KEY]))


# --- resources --------------------------------------------------------------


def merge_resources(
    defaults: Mapping[str, Mapping[str, str]],
    given: ResourceRequirements | None,
    *,
    field: str,
) -> dict[str, dict[str, str]]:
    """The operator's defaults, overridden per resource by what the spec gives.

    A request above the default limit raises that limit to the request (a
    team asking for 2Gi should not be rejected for the default 1Gi limit); a
    request above a limit the spec itself sets is an error in the spec.
    """
    requests = {k: str(v) for k, v in defaults.get("requests", {}).items()}
    limits = {k: str(v) for k, v in defaults.get("limits", {}).items()}
    given_limits = {k: str(v) for k, v in (given.limits if given else {}).items()}
    requests |= {k: str(v) for k, v in (given.requests if given else {}).items()}
    limits |= given_limits
    for name, request in requests.items():
        limit = limits.get(name)
        if limit is None or quantity(request) <= quantity(limit):
            continue
        if name in given_limits:
            raise BuildError(f"{field}.requests.{name}: {request} exceeds the limit {limit}")
        limits[name] = request
    return {"requests": requests, "limits": limits}


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10**3,
            "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(text: str | int) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1.5Gi``, ``2e3``) as a number."""
    value = str(text).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)", value)
    if match is None:
        raise BuildError(f"invalid quantity {value!r}")
    number, suffix = match.groups()
    try:
        return Decimal(number) * Decimal(_BINARY.get(suffix) or _DECIMAL[suffix])
    except InvalidOperation:
        raise BuildError(f"invalid quantity {value!r}") from None


# --- helpers ----------------------------------------------------------------


def owner_reference(resource: Resource) -> dict[str, Any] | None:
    """The controller reference to ``resource``; None before it has a uid (``omnia render``)."""
    uid = resource.metadata.uid
    if uid is None:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": resource.kind,
        "name": resource.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(agent: AgentRuntime, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if agent.metadata.namespace:
        metadata["namespace"] = agent.metadata.namespace
    metadata["labels"] = labels.agent_labels(agent.metadata.name)
    owner = owner_reference(agent)
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return metadata


def _env(secrets: Sequence[SecretEnv], container: str) -> list[dict[str, Any]]:
    return [
        {"name": item.variable, "valueFrom": {"secretKeyRef": {"name": item.secret, "key": item.key}}}
        for item in secrets
        if item.container == container
    ]


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pre_stop() -> dict[str, Any]:
    """Keep serving a moment after the pod is marked for deletion, before SIGTERM.

    Endpoints leave Services (kube-proxy, ingress controllers) a little after
    the pod is marked terminating; a facade that stopped listening at once
    would refuse the connections still routed to it. Both containers wait
    the same time, so the runtime is there for the whole of the facade's drain.
    """
    return {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}


def _termination_message() -> dict[str, str]:
    """The file a container writes why it stopped; without one, the end of its log (a crash's traceback)."""
    return {"terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "FallbackToLogsOnError"}


def _mounts() -> list[dict[str, Any]]:
    return [
        {"name": "config", "mountPath": labels.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def _autoscaling(agent: AgentRuntime):
    if agent.spec.autoscaling is None:
        raise BuildError("spec.autoscaling: not set")
    return agent.spec.autoscaling


def _behavior(agent: AgentRuntime) -> dict[str, Any]:
    """The HPA's scale-down window; scaling up keeps Kubernetes' defaults (at once)."""
    window = _autoscaling(agent).scale_down_stabilization_seconds
    return {"scaleDown": {"stabilizationWindowSeconds": window}}


def _metrics(agent: AgentRuntime) -> list[ScalingMetric]:
    metrics = _autoscaling(agent).metrics
    return list(metrics) or [ScalingMetric(type="memory", target=DEFAULT_MEMORY_TARGET)]


def _percent(target: int | str) -> int | None:
    """A cpu/memory target as a utilisation percentage (``70%`` or a bare 70), or None for a quantity."""
    if isinstance(target, int):
        return target
    if target.endswith("%"):
        return int(target[:-1])
    return None


def _average_value(metric: ScalingMetric, where: str) -> str:
    target = metric.target
    if isinstance(target, str) and target.endswith("%"):
        raise BuildError(
            f"{where}.target: a custom metric's target is an average per pod such as 100, not a percentage"
        )
    return str(target)


@dataclass(frozen=True)
class Destination:
    """Somewhere an agent's pods connect to: a TCP port, and the peer it is on if that is known."""

    port: int
    peer: Mapping[str, Any] | None = None
    """A NetworkPolicyPeer; None for any address."""


def _destinations(config: AgentConfig, registry: ToolRegistry | None, *, trace_collector: str | None) -> list[Destination]:
    found = []
    store_port = SESSION_STORE_PORTS.get(config.session.type)
    if store_port is not None:
        found.append(Destination(store_port))
    provider = config.provider
    if provider.base_url is None and provider.type in HOSTED_PROVIDERS:
        found.append(Destination(HTTPS_PORT))
    urls = [provider.base_url]
    for handler in registry.spec.handlers if registry else ():
        block = getattr(handler, handler.type)
        urls += [getattr(block, attribute, None) for attribute in ("url", "spec_url", "base_url")]
    urls.append(trace_collector)
    for url in urls:
        destination = _url_destination(url)
        if destination is not None:
            found.append(destination)
    return found


def _egress_rules(destinations: Sequence[Destination]) -> list[dict[str, Any]]:
    """One rule per peer (any address first), with its ports in the order first met."""
    grouped: dict[str, tuple[Mapping[str, Any] | None, list[int]]] = {}
    for destination in sorted(destinations, key=lambda d: d.peer is not None):
        key = json.dumps(destination.peer, sort_keys=True)
        _, ports = grouped.setdefault(key, (destination.peer, []))
        if destination.port not in ports:
            ports.append(destination.port)
    rules = []
    for peer, ports in grouped.values():
        rule: dict[str, Any] = {} if peer is None else {"to": [dict(peer)]}
        rule["ports"] = [{"protocol": "TCP", "port": port} for port in ports]
        rules.append(rule)
    return rules


def _url_destination(url: str | None) -> Destination | None:
    port = _url_port(url)
    if url is None or port is None:
        return None
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback:
            return None
        cidr = f"{address}/{address.max_prefixlen}"
        return Destination(port, {"ipBlock": {"cidr": cidr}})
    parts = host.split(".")
    if len(parts) == 1:
        return Destination(port, {"podSelector": {}})
    if len(parts) >= 3 and parts[2] == "svc":
        return Destination(port, _namespace_peer(parts[1]))
    return Destination(port)


def _namespace_peer(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _url_port(url: str | None) -> int | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if port is not None:
        return port
    return {"http": 80, "https": HTTPS_PORT}.get(parts.scheme)

