"""AgentRuntime: one deployed agent, the object everything else hangs off."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, WithJsonSchema

from omnia.api.v1alpha1.common import (
    API_VERSION,
    ApiModel,
    Conditions,
    Duration,
    LocalObjectReference,
    ObjectMeta,
    Quantity,
    Resource,
    Rule,
    SecretKeySelector,
    StatusModel,
    conditions_field,
    defaults_of,
    observed_generation_field,
)

# A percentage (70%) or a quantity (500m, 1.5, 256Mi) as autoscalers accept them;
# [.] rather than an escaped dot, so the pattern reads the same inside a CEL string.
TARGET_PATTERN = r"^([1-9][0-9]*%|([0-9]+([.][0-9]+)?|[.][0-9]+)([KMGTPE]i|[mkMGTPE])?)$"

MetricTarget = Annotated[
    int | Annotated[str, StringConstraints(max_length=32)],
    # maxLength bounds the cost the API server estimates for the CEL pattern check.
    WithJsonSchema({"x-kubernetes-int-or-string": True, "maxLength": 32}),
]

SessionType = Literal["memory", "redis", "postgres"]


class SessionSpec(ApiModel):
    """Where conversation state is kept."""

    type: SessionType = Field(
        default="memory",
        description="Session store: memory (per pod, lost on restart), redis or postgres (shared by all replicas).",
    )
    secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the store's connection URL (redis://… or postgresql://…). "
        "Omitted for redis or postgres uses the store configured when Omnia was installed.",
    )
    ttl: Duration = Field(default="24h", description="How long an idle session is kept, e.g. 24h.")
    max_turns: int = Field(default=1000, ge=1, description="Maximum number of turns kept per session.")
    max_bytes: int = Field(
        default=4194304, ge=1024,
        description="Maximum size of one session's history, in bytes.",
    )


class BudgetLimit(ApiModel):
    """The most that may be spent in one period; a field left out is not limited."""

    tokens: int | None = Field(
        default=None, ge=0, description="Input plus output tokens of all turns in the period."
    )
    cost_usd: float | None = Field(
        default=None, ge=0, alias="costUSD",
        description="Cost in US dollars of all turns in the period, from the Provider's pricing.",
    )


class SharedBudget(ApiModel):
    """A budget every AgentRuntime of the namespace that names it counts against."""

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The budget's name in the namespace; agents naming the same one spend it together.",
    )
    daily: BudgetLimit | None = Field(default=None, description="Limit per UTC day.")
    monthly: BudgetLimit | None = Field(default=None, description="Limit per UTC calendar month.")


class BudgetSpec(ApiModel):
    """Token and cost limits, checked before every turn across all replicas."""

    daily: BudgetLimit | None = Field(default=None, description="This agent's limit per UTC day.")
    monthly: BudgetLimit | None = Field(
        default=None, description="This agent's limit per UTC calendar month."
    )
    shared: SharedBudget | None = Field(
        default=None,
        description="A namespace budget this agent also counts against, shared with every agent naming it.",
    )


AuthType = Literal["none", "apiKey", "jwt"]


class JwtAuth(ApiModel):
    """Validation settings for JWT bearer tokens (OIDC)."""

    issuer: str = Field(min_length=1, description="Expected iss claim.")
    audience: str | None = Field(default=None, description="Expected aud claim; omitted skips the check.")
    jwks_url: str | None = Field(
        default=None,
        alias="jwksURL",
        description="URL of the issuer's JSON Web Key Set; omitted uses OIDC discovery on the issuer.",
    )


class FacadeAuth(ApiModel):
    """How WebSocket clients authenticate."""

    validation_rules = (
        Rule(
            cel="self.type != 'apiKey' || has(self.secretRef)",
            message="auth type apiKey needs secretRef",
            check=lambda auth: auth.type != "apiKey" or auth.secret_ref is not None,
        ),
        Rule(
            cel="self.type != 'jwt' || has(self.jwt)",
            message="auth type jwt needs the jwt block",
            check=lambda auth: auth.type != "jwt" or auth.jwt is not None,
        ),
    )

    type: AuthType = Field(
        default="none",
        description="none, apiKey (keys from a Secret) or jwt. With apiKey or jwt, a session belongs to the "
        "key or the token subject (sub) that started it, and no one else can resume it.",
    )
    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the accepted API keys, one per line (type apiKey)."
    )
    jwt: JwtAuth | None = Field(default=None, description="Token validation settings (type jwt).")


class FacadeProtocols(ApiModel):
    """The open protocols the facade serves beside its WebSocket protocol (see docs/protocols.md).

    Each has the same authentication, limits, metrics and traces as the WebSocket.
    """

    openai: bool = Field(
        default=True,
        description="OpenAI-compatible chat: POST /v1/chat/completions and GET /v1/models.",
    )
    mcp: bool = Field(
        default=True, description="An MCP server at /mcp (streamable HTTP) with one tool, ask."
    )
    a2a: bool = Field(
        default=True,
        alias="a2a",  # the camel-case rule would write "a2A"
        description="A2A: the agent card at /.well-known/agent-card.json and the JSON-RPC endpoint at /a2a.",
    )


class FacadeSpec(ApiModel):
    """The client-facing server of each agent pod."""

    port: int = Field(default=8080, ge=1, le=65535, description="Port of the WebSocket and HTTP server.")
    auth: FacadeAuth = Field(
        default_factory=FacadeAuth,
        json_schema_extra={"default": defaults_of(FacadeAuth)},
        description="Client authentication."
    )
    protocols: FacadeProtocols = Field(
        default_factory=FacadeProtocols,
        json_schema_extra={"default": defaults_of(FacadeProtocols)},
        description="The open protocols served beside the WebSocket protocol; all on unless turned off here.",
    )
    max_connections: int = Field(
        default=1000, ge=1,
        description="Maximum concurrent WebSocket connections per pod.",
    )
    max_connections_per_principal: int = Field(
        default=0, ge=0,
        description=(
            "Connections (WebSockets, and the open protocols' conversations in flight) one principal, an API key "
            "or a JWT subject, may hold on one pod; more get CAPACITY_EXCEEDED. 0 disables the bound; with auth "
            "none there is no principal and it does not apply."
        ),
    )
    max_message_bytes: int = Field(
        default=65536, ge=1, description="Largest accepted client message, in bytes; larger ones get MESSAGE_TOO_LARGE."
    )
    messages_per_second: float = Field(
        default=10, gt=0, description="Sustained messages per second allowed per connection; beyond it RATE_LIMITED."
    )
    message_burst: int = Field(default=20, ge=1, description="Messages a connection may send in a burst.")
    drain_timeout_seconds: int = Field(
        default=30, ge=0, description="On shutdown, how long in-flight turns may take to finish."
    )
    turn_timeout_seconds: int = Field(
        default=300, ge=1,
        description="A turn that runs longer than this is cancelled by the facade, as if the client had sent cancel.",
    )
    max_output_buffer_bytes: int = Field(
        default=262144, ge=4096,
        description="Bytes waiting to be sent to one client above which the server stops reading from it.",
    )
    send_timeout_seconds: int = Field(
        default=30, ge=1,
        description="A client that takes no output for this long is closed: a WebSocket with code 1008, an HTTP response (an open protocol's stream) dropped.",
    )
    request_header_timeout_seconds: int = Field(
        default=10, ge=1,
        description="Time for a request's headers and body to arrive; slower requests get 408 and are closed.",
    )
    max_request_header_bytes: int = Field(
        default=65536, ge=8192, le=16777216,
        description="Size of a request's line and headers above which it gets 431 and is closed.",
    )
    max_pending_connections: int = Field(
        default=512, ge=0,
        description="Connections not yet upgraded to WebSocket (plain HTTP included); 0 disables the cap.",
    )
    max_pending_connections_per_address: int = Field(
        default=64, ge=0,
        description="Connections not yet upgraded from one client address; more get 503. 0 disables the cap.",
    )


AutoscalingEngine = Literal["hpa", "keda"]
MetricType = Literal["memory", "cpu", "custom"]


class ScalingMetric(ApiModel):
    """A metric the autoscaler follows."""

    validation_rules = (
        Rule(
            cel="self.type != 'custom' || has(self.name)",
            message="a custom metric needs a name",
            check=lambda metric: metric.type != "custom" or metric.name is not None,
        ),
        Rule(
            cel=f"type(self.target) == int ? self.target > 0 : self.target.matches('{TARGET_PATTERN}')",
            message="target must be a positive integer, a percentage such as 70% or a quantity such as 500Mi",
            check=lambda metric: (
                metric.target > 0
                if isinstance(metric.target, int)
                else re.fullmatch(TARGET_PATTERN, metric.target) is not None
            ),
        ),
    )

    type: MetricType = Field(description="memory or cpu (resource utilisation), or custom (a per-pod metric).")
    name: str | None = Field(
        default=None, description="Name of the custom metric, e.g. active_connections (type custom)."
    )
    target: MetricTarget = Field(
        description="Target value: a percentage of the requests for memory and cpu (70%), "
        "an average per pod for custom metrics (100).",
    )


class AutoscalingSpec(ApiModel):
    """Horizontal autoscaling of the agent's pods."""

    validation_rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda autoscaling: autoscaling.min_replicas <= autoscaling.max_replicas,
        ),
        Rule(
            cel="self.minReplicas > 0 || self.engine == 'keda'",
            message="minReplicas 0 (scale to zero) needs engine keda",
            check=lambda autoscaling: autoscaling.min_replicas > 0 or autoscaling.engine == "keda",
        ),
        Rule(
            cel="!has(self.scaleToZeroAfter) || self.minReplicas == 0",
            message="scaleToZeroAfter needs minReplicas 0",
            check=lambda autoscaling: autoscaling.scale_to_zero_after is None or autoscaling.min_replicas == 0,
        ),
    )

    enabled: bool = Field(
        default=False,
        description="Scale between minReplicas and maxReplicas instead of using replicas.",
    )
    engine: AutoscalingEngine = Field(
        default="hpa", description="hpa (HorizontalPodAutoscaler) or keda (ScaledObject, allows scale to zero)."
    )
    min_replicas: int = Field(
        default=1, ge=0,
        description="Fewest pods; 0 (scale to zero) needs engine keda.",
    )
    max_replicas: int = Field(default=10, ge=1, description="Most pods.")
    scale_to_zero_after: Duration | None = Field(
        default=None,
        description="With minReplicas 0: how long the agent stays up after its last connection before it "
        "scales to zero (KEDA's cooldownPeriod), e.g. 30s or 10m; unset: KEDA's default, 5m.",
    )
    metrics: list[ScalingMetric] = Field(
        default_factory=list,
        max_length=10,
        description="Metrics to follow; empty follows memory at 70%.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600,
        description="Seconds the metrics must have asked for fewer pods before pods are removed "
        "(the autoscaler scales down to the highest count asked for in that window).",
    )


class ResourceRequirements(ApiModel):
    """Compute resources of one container, as in Kubernetes."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Minimum resources, e.g. cpu: 100m.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Maximum resources, e.g. memory: 512Mi.",
    )


class ContainerResources(ApiModel):
    """Compute resources of the two containers of an agent pod; omitted values use the operator's defaults."""

    facade: ResourceRequirements | None = Field(
        default=None,
        description="Resources of the facade container.",
    )
    runtime: ResourceRequirements | None = Field(
        default=None,
        description="Resources of the runtime container.",
    )


class Images(ApiModel):
    """Container images of an agent pod; omitted values use the images Omnia was installed with."""

    facade: str | None = Field(default=None, description="Image of the facade container.")
    runtime: str | None = Field(
        default=None, description="Image of the runtime container; any image implementing omnia.runtime.v1."
    )


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector, as in Kubernetes' LabelSelector."""

    key: str = Field(min_length=1, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list, description="Values for In and NotIn; empty for Exists and DoesNotExist."
    )


class LabelSelector(ApiModel):
    """Kubernetes' LabelSelector: all of matchLabels and matchExpressions must hold; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all match.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Expressions that must all hold."
    )


class NetworkPolicyPeer(ApiModel):
    """Pods that may connect to the agent, as in a NetworkPolicy's ingress ``from``.

    namespaceSelector alone admits every pod of the selected namespaces;
    podSelector alone, the selected pods of the agent's own namespace; both,
    the selected pods of the selected namespaces.
    """

    validation_rules = (
        Rule(
            cel="has(self.namespaceSelector) || has(self.podSelector)",
            message="a peer needs a namespaceSelector, a podSelector or both",
            check=lambda peer: peer.namespace_selector is not None or peer.pod_selector is not None,
        ),
    )

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may connect (by the namespaces' labels)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Pods that may connect (by their labels), in the selected namespaces or the agent's."
    )


class NetworkPolicySpec(ApiModel):
    """The NetworkPolicy the operator creates for the agent, unless disabled."""

    enabled: bool = Field(
        default=True,
        description="Create a NetworkPolicy admitting only the traffic the agent needs; false opts out.",
    )
    ingress_from: list[NetworkPolicyPeer] = Field(
        default_factory=list,
        description="Who may connect to the facade port. Empty: the namespaces Omnia was installed to "
        "admit (its ingress controller's). Prometheus' namespaces are always admitted, for /metrics.",
    )


class TracingSpec(ApiModel):
    """Where the agent's pods send their traces; omitted values use the operator's (the chart's ``tracing``)."""

    enabled: bool = Field(
        default=True,
        description="Export traces; false turns them off for this agent even when the installation sets a collector.",
    )
    endpoint: str | None = Field(
        default=None,
        min_length=1,
        description="OTLP/gRPC endpoint of the collector, e.g. http://otel-collector.observability.svc:4317. "
        "Omitted: the operator's.",
    )
    headers_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="A Secret key holding the OTLP headers (key1=value1,key2=value2), e.g. a collector's "
        "API key. Omitted: the operator's, but only while the agent uses the operator's endpoint.",
    )
    sampling_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of new traces recorded (parent-based: a sampled caller's trace is always followed). "
        "Omitted: the operator's.",
    )


class AgentRuntimeSpec(ApiModel):
    """The desired state of an AgentRuntime."""

    replicas: int = Field(default=1, ge=0, description="Number of pods when autoscaling is disabled.")
    prompt_pack_ref: LocalObjectReference = Field(description="The PromptPack with the agent's prompts.")
    provider_ref: LocalObjectReference | None = Field(
        default=None, description="The Provider the agent calls; omitted uses the embedded local model."
    )
    tool_registry_ref: LocalObjectReference | None = Field(
        default=None, description="The ToolRegistry with the tools the agent may call."
    )
    session: SessionSpec = Field(
        default_factory=SessionSpec,
        json_schema_extra={"default": defaults_of(SessionSpec)},
        description="Where conversation state is kept: in memory per pod, or in Redis or PostgreSQL "
        "so that any replica can resume a session."
    )
    budget: BudgetSpec | None = Field(
        default=None,
        description="Token and cost budgets per day and month, of this agent and shared in the namespace. "
        "A turn is refused with BUDGET_EXCEEDED once a limit is reached; counted in the session store, "
        "so replicas share the totals when it is redis or postgres.",
    )
    facade: FacadeSpec = Field(
        default_factory=FacadeSpec,
        json_schema_extra={"default": defaults_of(FacadeSpec)},
        description="The client-facing WebSocket server of each pod: port, authentication and limits."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Horizontal autoscaling of the agent's pods, by a HorizontalPodAutoscaler or KEDA. "
        "When enabled, the autoscaler owns the pod count and replicas is only the starting point.",
    )
    resources: ContainerResources | None = Field(
        default=None,
        description="Compute resources of the facade and runtime containers; "
        "omitted values use the operator's defaults.",
    )
    images: Images | None = Field(
        default=None,
        description="Container images of the facade and runtime; "
        "omitted values use the images Omnia was installed with.",
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        json_schema_extra={"default": defaults_of(NetworkPolicySpec)},
        description="The NetworkPolicy the operator creates for the agent (on unless disabled): "
        "ingress to the facade port from the peers named, egress only to what the agent needs.",
    )
    tracing: TracingSpec | None = Field(
        default=None,
        description="OpenTelemetry traces of the agent's pods: collector, headers and sampling.",
    )
    max_tool_iterations: int = Field(
        default=8, ge=1, le=100, description="Most model calls in one turn, to stop runaway tool loops."
    )


class BudgetStanding(StatusModel):
    """What one budget has spent in its current period, as the operator last read the counters."""

    scope: Literal["agent", "shared"] = Field(
        description="agent: this agent's own budget (spec.budget.daily/monthly); "
        "shared: the namespace budget it names (spec.budget.shared)."
    )
    name: str = Field(description="The agent's name for scope agent, the shared budget's name for scope shared.")
    period: Literal["day", "month"] = Field(description="The UTC day or calendar month the totals are of.")
    tokens: int = Field(default=0, ge=0, description="Tokens spent in the period (input plus output).")
    cost_usd: float = Field(default=0.0, ge=0, alias="costUSD", description="US dollars spent in the period.")
    tokens_limit: int | None = Field(default=None, ge=0, description="The tokens limit; absent when not limited.")
    cost_usd_limit: float | None = Field(
        default=None, ge=0, alias="costUSDLimit", description="The costUSD limit; absent when not limited."
    )
    percent_used: int = Field(
        ge=0,
        description="Spent as a percentage of the limit, the higher of tokens and costUSD, rounded down; "
        "100 or more: turns are refused with BUDGET_EXCEEDED until the period resets.",
    )
    resets_at: datetime.datetime = Field(description="When the period ends and its totals start from zero (UTC).")


AgentRuntimePhase = Literal["Pending", "Progressing", "Running", "Degraded", "Failed"]


class AgentRuntimeStatus(StatusModel):
    """The observed state of an AgentRuntime."""

    phase: AgentRuntimePhase | None = Field(
        default=None, description="Summary: Pending, Progressing (rolling out), Running, Degraded or Failed."
    )
    replicas: int | None = Field(default=None, ge=0, description="Pods of the agent, ready or not.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods that are ready.")
    updated_replicas: int | None = Field(
        default=None, ge=0,
        description="Pods running the current configuration.",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the pods, for the scale subresource.",
    )
    active_prompt_versions: list[str] = Field(
        default_factory=list, description="Prompt versions new sessions get: the stable one, and a canary if any."
    )
    endpoint: str | None = Field(
        default=None,
        description="In-cluster URL of the agent's WebSocket endpoint.",
    )
    config_hash: str | None = Field(
        default=None, description="Hash of everything the pods depend on, stamped on the pod template."
    )
    budgets: list[BudgetStanding] | None = Field(
        default=None,
        description="Spending of each budget in spec.budget, per scope and period, as the operator last read "
        "the counters in the session store (periodically and after each reconcile; redis and postgres only). Absent without budgets.",
    )
    budget_percent_used: int | None = Field(
        default=None, ge=0,
        description="The highest percentUsed of budgets, for kubectl get; absent without budgets.",
    )
    conditions: Conditions = conditions_field(
        "Current conditions: ProviderReady, PromptPackReady, ToolsReady, Available, Progressing, Ready, "
        "and BudgetExceeded for an agent with budgets."
    )
    observed_generation: int | None = observed_generation_field()


class AgentRuntime(Resource):
    """An AgentRuntime is one deployed agent: pods serving clients over WebSocket.

    It brings together prompts (a PromptPack), a model (a Provider) and tools (a ToolRegistry).
    """

    plural = "agentruntimes"
    singular = "agentruntime"

    api_version: Literal["omnia.altairalabs.ai/v1alpha1"] = Field(
        default=API_VERSION, description="API version: omnia.altairalabs.ai/v1alpha1."
    )
    kind: Literal["AgentRuntime"] = Field(default="AgentRuntime", description="Kind: AgentRuntime.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: AgentRuntimeSpec = Field(description="Desired state of the AgentRuntime.")
    status: AgentRuntimeStatus = Field(
        default_factory=AgentRuntimeStatus, description="Observed state of the AgentRuntime."
    )
