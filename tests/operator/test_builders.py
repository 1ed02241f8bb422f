"""The manifests an AgentRuntime owns, built by pure functions from typed specs."""

from __future__ import annotations

import re

import promql_parser
import pytest

from omnia.config import AgentConfig, PromptConfig, PromptRollout
from omnia.operator import builders, hashing, labels
from omnia.operator.sessionstores import DefaultStore
from omnia.rendering import render_agent_config, tool_configs
from tests.operator import manifests
from tests.operator.manifests import model

DEFAULTS = builders.Defaults(image="registry.example/omnia:1")
ACTIVATOR = builders.ActivatorService(namespace="omnia-system", name="omnia-activator")
WITH_ACTIVATOR = builders.Defaults(image="registry.example/omnia:1", activator=ACTIVATOR)


def config_for(agent, provider=None, registry=None) -> AgentConfig:
    return render_agent_config(
        agent, prompts=PromptRollout(stable=PromptConfig(version="1.0.0")), provider=provider,
        tools=tool_configs(registry),
    )


FIRST = object()


def objects_for(agent, provider=None, registry=None, *, replicas=FIRST, defaults=DEFAULTS):
    """The objects as the first reconcile builds them (or with ``replicas`` as given)."""
    config = config_for(agent, provider, registry)
    tracing = builders.tracing(agent, defaults=defaults.tracing)
    secrets = builders.secret_env(agent, provider=provider, registry=registry, tracing=tracing)
    return builders.build_agent_objects(
        agent, config=config, config_hash="0123456789abcdef", secrets=secrets, registry=registry,
        defaults=defaults,
        replicas=builders.desired_replicas(agent, deployment_exists=False) if replicas is FIRST else replicas,
    )


def by_kind(objects) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects.objects}


def test_spec_example_gets_exactly_the_hpa_of_the_spec():
    """memory 70% is a Resource metric at 70% utilisation, active_connections 100 a Pods metric averaging 100."""
    hpa = builders.build_hpa(model(manifests.example("agentruntime.yaml")))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "support-agent"},
        "minReplicas": 2,
        "maxReplicas": 20,
        "metrics": [
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}},
            {"type": "Pods", "pods": {"metric": {"name": "active_connections"},
                                      "target": {"type": "AverageValue", "averageValue": "100"}}},
        ],
        # Kubernetes' own default window, written out.
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    }


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        pytest.param({"type": "cpu", "target": 80}, {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}, id="bare-number-is-percent"),
        pytest.param({"type": "memory", "target": "512Mi"}, {"type": "Resource", "resource": {
            "name": "memory", "target": {"type": "AverageValue", "averageValue": "512Mi"}}}, id="quantity-is-average"),
        pytest.param({"type": "custom", "name": "queue_depth", "target": "1.5"}, {"type": "Pods", "pods": {
            "metric": {"name": "queue_depth"}, "target": {"type": "AverageValue", "averageValue": "1.5"}}},
            id="custom-quantity"),
    ],
)
def test_hpa_metric_targets(metric, expected):
    agent = model(manifests.agent(autoscaling={"enabled": True, "metrics": [metric]}))
    assert builders.build_hpa(agent)["spec"]["metrics"] == [expected]


def test_hpa_without_metrics_follows_memory_at_70_percent():
    agent = model(manifests.agent(autoscaling={"enabled": True}))
    assert builders.build_hpa(agent)["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]


def test_the_scale_down_window_goes_to_the_hpa_and_to_the_hpa_keda_makes():
    """Why: a test (or an operator in a hurry) shortens the window; both engines must honour it."""
    autoscaling = {"enabled": True, "scaleDownStabilizationSeconds": 20,
                   "metrics": [{"type": "custom", "name": "active_connections", "target": 2}]}
    hpa = builders.build_hpa(model(manifests.agent(autoscaling=autoscaling)))
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 20}}
    scaled = builders.build_scaled_object(model(manifests.agent(autoscaling={**autoscaling, "engine": "keda"})),
                                          activator=builders.ActivatorService(namespace="omnia-system",
                                                                              name="omnia-activator"))
    assert scaled["spec"]["advanced"] == {
        "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}}}


def test_custom_metric_with_a_percentage_is_an_error_naming_the_field():
    agent = model(manifests.agent(autoscaling={"enabled": True, "metrics": [
        {"type": "memory", "target": "70%"}, {"type": "custom", "name": "active_connections", "target": "50%"}]}))
    with pytest.raises(builders.BuildError, match=r"^spec\.autoscaling\.metrics\[1\]\.target: "):
        builders.build_hpa(agent)


def test_agent_pod_is_locked_down():
    """Non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, no API token, /tmp writable."""
    deployment = by_kind(objects_for(model(manifests.agent())))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "agent-config"}},
                              {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/omnia", "/tmp"}
        assert set(container["resources"]) == {"requests", "limits"}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"} == set(container["resources"]["limits"])
        assert container["image"] == "registry.example/omnia:1"


def test_containers_run_the_facade_and_the_runtime_on_the_mounted_config():
    deployment = by_kind(objects_for(model(manifests.agent(facade={"port": 9000}))))["Deployment"]
    facade, runtime = deployment["spec"]["template"]["spec"]["containers"]
    assert facade["args"] == ["facade", "--config", "/etc/omnia/agent.json", "--runtime", "127.0.0.1:9090",
                              "--port", "9000", "--linger", "5", "--termination-log", "/dev/termination-log"]
    assert runtime["args"] == ["runtime", "--config", "/etc/omnia/agent.json", "--listen", "127.0.0.1:9090",
                               "--health", "0.0.0.0:9091", "--termination-log", "/dev/termination-log"]
    assert facade["ports"] == [{"name": "ws", "containerPort": 9000, "protocol": "TCP"}]
    assert facade["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ws"}
    assert facade["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ws"}


def test_a_new_pod_is_probed_ready_every_second_but_dropped_only_after_ten_failures():
    """A waking agent's first client waits for the pod to be Ready: a 5 s readiness period cost up to 5 s of
    that wait on the real node, and the runtime's 2 s startup period up to 2 more (the pod is not Ready
    before its containers have started). Dropping a pod still takes ten seconds of failures."""
    deployment = by_kind(objects_for(model(manifests.agent())))["Deployment"]
    facade, runtime = deployment["spec"]["template"]["spec"]["containers"]
    readiness = facade["readinessProbe"]
    assert (readiness["periodSeconds"], readiness["failureThreshold"]) == (1, 10)
    assert runtime["startupProbe"]["periodSeconds"] == 1


def test_the_runtime_is_probed_on_grpc_health_and_both_containers_leave_a_termination_message():
    """SPEC §9: the kubelet restarts a wedged runtime (grpc.health.v1 on the pod's address, after a startup
    probe), and a container that cannot start says why in its pod status, or shows the end of its log."""
    deployment = by_kind(objects_for(model(manifests.agent())))["Deployment"]
    facade, runtime = deployment["spec"]["template"]["spec"]["containers"]
    assert runtime["ports"] == [{"name": "health", "containerPort": 9091, "protocol": "TCP"}]
    assert runtime["startupProbe"] == {"grpc": {"port": 9091}, "timeoutSeconds": 5, "periodSeconds": 1,
                                       "failureThreshold": 60}
    assert runtime["livenessProbe"] == {"grpc": {"port": 9091}, "timeoutSeconds": 5, "periodSeconds": 10,
                                        "failureThreshold": 3}
    assert "readinessProbe" not in runtime
    for container in (facade, runtime):
        assert (container["terminationMessagePath"], container["terminationMessagePolicy"]) == (
            "/dev/termination-log", "FallbackToLogsOnError")


@pytest.mark.parametrize("port", [9090, 9091])
def test_a_facade_port_the_runtime_takes_is_an_invalid_spec(port):
    with pytest.raises(builders.BuildError, match=f"spec.facade.port: {port} is taken inside the pod"):
        objects_for(model(manifests.agent(facade={"port": port})))


def test_facade_limits_against_hostile_clients_reach_the_runtime_config():
    """The connection limits of spec.facade are rendered into the facade's config,
    and left out they keep the documented defaults."""
    limits = {
        "maxOutputBufferBytes": 65536,
        "sendTimeoutSeconds": 5,
        "requestHeaderTimeoutSeconds": 3,
        "turnTimeoutSeconds": 45,
        "maxPendingConnections": 100,
        "maxPendingConnectionsPerAddress": 0,
        "maxConnectionsPerPrincipal": 7,
    }
    facade = config_for(model(manifests.agent(facade=limits))).facade
    assert (
        facade.max_output_buffer_bytes, facade.send_timeout_seconds, facade.request_header_timeout_seconds,
        facade.max_pending_connections, facade.max_pending_connections_per_address, facade.turn_timeout_seconds,
        facade.max_connections_per_principal,
    ) == (65536, 5, 3, 100, 0, 45, 7)
    defaults = config_for(model(manifests.agent())).facade
    assert (
        defaults.max_output_buffer_bytes, defaults.send_timeout_seconds, defaults.request_header_timeout_seconds,
        defaults.max_pending_connections, defaults.max_pending_connections_per_address,
        defaults.turn_timeout_seconds, defaults.max_connections_per_principal,
    ) == (256 * 1024, 30, 10, 512, 64, 300, 0)


def test_service_exposes_the_facade_port_named_ws():
    service = builders.build_service(model(manifests.agent(facade={"port": 9000})))
    assert service["spec"]["ports"] == [{"name": "ws", "port": 9000, "targetPort": "ws", "protocol": "TCP"}]
    assert service["spec"]["selector"] == labels.selector_labels("agent")


def test_credentials_reach_the_pods_as_secret_key_refs_and_never_the_configmap():
    """The provider key, the session store URL and client API keys: env from secretKeyRef, names in agent.json."""
    agent = model(manifests.agent(
        session={"type": "redis", "secretRef": {"name": "redis", "key": "url"}},
        facade={"auth": {"type": "apiKey", "secretRef": {"name": "clients", "key": "keys"}}},
    ))
    provider = model(manifests.provider(type="claude", credentials={"secretRef": {"name": "anthropic", "key": "api-key"}}))
    objects = by_kind(objects_for(agent, provider))
    facade, runtime = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert facade["env"] == [{"name": "OMNIA_API_KEYS", "valueFrom": {"secretKeyRef": {"name": "clients", "key": "keys"}}}]
    assert runtime["env"] == [
        {"name": "OMNIA_PROVIDER_API_KEY", "valueFrom": {"secretKeyRef": {"name": "anthropic", "key": "api-key"}}},
        {"name": "OMNIA_SESSION_URL", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "url"}}},
    ]
    config = AgentConfig.from_json(objects["ConfigMap"]["data"]["agent.json"])
    assert config.provider.api_key_env == "OMNIA_PROVIDER_API_KEY"
    assert config.session.url_env == "OMNIA_SESSION_URL"
    assert config.facade.auth.api_keys_env == "OMNIA_API_KEYS"


def test_tool_header_secrets_reach_the_runtime_under_the_tools_variable_names():
    registry = model(manifests.registry("tools", {
        "name": "orders", "type": "http",
        "http": {"url": "https://orders.example/{{ id }}", "headers": [
            {"name": "Authorization", "secretRef": {"name": "orders-api", "key": "token"}}]}}))
    agent = model(manifests.agent(toolRegistryRef={"name": "tools"}))
    runtime = by_kind(objects_for(agent, registry=registry))["Deployment"]["spec"]["template"]["spec"]["containers"][1]
    assert runtime["env"] == [{"name": "OMNIA_TOOL_ORDERS_AUTHORIZATION",
                               "valueFrom": {"secretKeyRef": {"name": "orders-api", "key": "token"}}}]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(None, {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                     id="defaults"),
        pytest.param({"requests": {"memory": "512Mi"}},
                     {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                     id="request-overrides-one-resource"),
        pytest.param({"requests": {"memory": "2Gi"}},
                     {"requests": {"cpu": "100m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
                     id="request-above-default-limit-raises-the-limit"),
        pytest.param({"limits": {"cpu": "500m"}},
                     {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "1Gi"}},
                     id="limit-overrides"),
    ],
)
def test_runtime_resources_are_the_defaults_overridden_per_resource(given, expected):
    agent = model(manifests.agent(resources={"runtime": given} if given else None))
    runtime = by_kind(objects_for(agent))["Deployment"]["spec"]["template"]["spec"]["containers"][1]
    assert runtime["resources"] == expected


def test_request_above_an_explicit_limit_is_an_error_naming_the_field():
    agent = model(manifests.agent(resources={"facade": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}))
    with pytest.raises(builders.BuildError, match=r"^spec\.resources\.facade\.requests\.cpu: 2 exceeds the limit 1"):
        objects_for(agent)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("2", "2"), ("1Gi", str(2**30)), ("1.5Mi", str(int(1.5 * 2**20))), ("2e3", "2000"), ("3k", "3000")],
)
def test_quantities(text, value):
    assert builders.quantity(text) == builders.quantity(value)


@pytest.mark.parametrize(
    ("spec", "exists", "expected"),
    [
        pytest.param({"replicas": 3}, True, 3, id="no-autoscaling-applies-replicas"),
        pytest.param({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 2}}, False, 2,
                     id="autoscaled-starts-at-min"),
        pytest.param({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 2}}, True, None,
                     id="autoscaled-then-left-to-the-autoscaler"),
        pytest.param({"autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0, "metrics": [
            {"type": "custom", "name": "active_connections", "target": 10}]}}, False, 0, id="keda-starts-at-zero"),
    ],
)
def test_replicas_are_never_fought_over_with_the_autoscaler(spec, exists, expected):
    agent = model(manifests.agent(**spec))
    assert builders.desired_replicas(agent, deployment_exists=exists) == expected
    deployment = by_kind(objects_for(agent, replicas=expected, defaults=WITH_ACTIVATOR))["Deployment"]
    assert deployment["spec"].get("replicas") == expected


@pytest.mark.parametrize(
    ("spec", "kinds"),
    [
        pytest.param({}, {"ServiceAccount", "ConfigMap", "Service", "Deployment", "NetworkPolicy"}, id="one-replica"),
        pytest.param({"replicas": 2}, {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
                                       "NetworkPolicy"}, id="pdb-above-one-replica"),
        pytest.param({"autoscaling": {"enabled": True, "minReplicas": 1}},
                     {"ServiceAccount", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy"},
                     id="hpa-min-one-no-pdb"),
        pytest.param({"networkPolicy": {"enabled": False}},
                     {"ServiceAccount", "ConfigMap", "Service", "Deployment"}, id="network-policy-opted-out"),
        pytest.param({"autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 2, "maxReplicas": 4}},
                     {"ServiceAccount", "ConfigMap", "Service", "Deployment", "ScaledObject", "PodDisruptionBudget",
                      "NetworkPolicy"}, id="keda"),
    ],
)
def test_optional_objects_follow_the_spec_and_the_rest_are_listed_absent(spec, kinds):
    objects = objects_for(model(manifests.agent(**spec)))
    assert {obj["kind"] for obj in objects.objects} == kinds
    optional = {kind.kind for kind in builders.OPTIONAL_KINDS}
    assert {kind.kind for kind in objects.absent} == optional - kinds


def test_objects_are_owned_by_the_agent_and_labelled():
    objects = objects_for(model(manifests.agent(replicas=2)))
    for obj in objects.objects:
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "omnia-operator"
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime", "name": "agent",
            "uid": "uid-agent", "controller": True, "blockOwnerDeletion": True}]


def test_without_a_uid_there_is_no_owner_reference():
    """``omnia render`` works on manifests that were never stored."""
    body = manifests.agent()
    del body["metadata"]["uid"]
    assert all("ownerReferences" not in obj["metadata"] for obj in objects_for(model(body)).objects)


def test_pod_template_carries_the_config_hash():
    deployment = by_kind(objects_for(model(manifests.agent())))["Deployment"]
    assert deployment["spec"]["template"]["metadata"]["annotations"][labels.CONFIG_HASH] == "0123456789abcdef"


def test_images_come_from_the_spec_or_the_operator_default():
    agent = model(manifests.agent(images={"runtime": "example/runtime:2"}))
    assert builders.pod_images(agent, default="omnia:1") == builders.PodImages(facade="omnia:1", runtime="example/runtime:2")


def namespace_peer(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": port} for port in ports]


KEY = {"secretRef": {"name": "llm", "key": "apiKey"}}
DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def test_network_policy_admits_the_facade_port_and_the_egress_the_agent_needs():
    """DNS and the session store's port anywhere; an in-cluster provider and MCP server only in their namespaces."""
    agent = model(manifests.agent(facade={"port": 8081}, session={"type": "postgres"}, toolRegistryRef={"name": "tools"}))
    provider = model(manifests.provider(type="vllm", baseURL="http://vllm.models.svc:8000/v1"))
    registry = model(manifests.registry("tools", {"name": "kb", "type": "mcp", "mcp": {"url": "http://kb:9000/mcp"}}))
    policy = builders.build_network_policy(agent, config=config_for(agent, provider, registry), registry=registry,
                                           defaults=DEFAULTS)
    assert policy["spec"]["podSelector"] == {"matchLabels": labels.selector_labels("agent")}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"from": [namespace_peer("ingress-nginx"), namespace_peer("monitoring")],
                                          "ports": tcp(8081)}]
    assert policy["spec"]["egress"] == [
        DNS,
        {"ports": tcp(5432)},
        {"to": [namespace_peer("models")], "ports": tcp(8000)},
        {"to": [{"podSelector": {}}], "ports": tcp(9000)},
    ]


def test_network_policy_ingress_comes_from_the_peers_the_agent_names():
    """Named peers replace the installation's ingress namespaces; Prometheus' namespace is still admitted."""
    peers = [{"namespaceSelector": {"matchLabels": {"team": "web"}}},
             {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["client"]}]}}]
    agent = model(manifests.agent(networkPolicy={"ingressFrom": peers}))
    policy = builders.build_network_policy(agent, config=config_for(agent), registry=None, defaults=DEFAULTS)
    assert policy["spec"]["ingress"] == [{"from": [*peers, namespace_peer("monitoring")], "ports": tcp(8080)}]


def test_network_policy_without_any_peer_admits_no_ingress():
    """A rule without 'from' would admit every source; no peers means no ingress rule at all."""
    agent = model(manifests.agent())
    defaults = builders.Defaults(ingress_namespaces=(), scrape_namespaces=())
    policy = builders.build_network_policy(agent, config=config_for(agent), registry=None, defaults=defaults)
    assert policy["spec"]["ingress"] == []


@pytest.mark.parametrize(("provider", "trace_collector", "egress"), [
    pytest.param({"type": "mock"}, None, [DNS], id="mock-talks-to-nothing"),
    pytest.param({"type": "claude", "credentials": KEY}, None, [DNS, {"ports": tcp(443)}], id="hosted-api-is-https-anywhere"),
    pytest.param({"type": "openai", "baseURL": "http://10.1.2.3:8000/v1", "credentials": KEY}, None,
                 [DNS, {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": tcp(8000)}], id="an-address"),
    pytest.param({"type": "ollama", "baseURL": "http://ollama.ai.svc.cluster.local:11434"},
                 "http://otel-collector.observability.svc:4317",
                 [DNS, {"to": [namespace_peer("ai")], "ports": tcp(11434)},
                  {"to": [namespace_peer("observability")], "ports": tcp(4317)}], id="trace-collector"),
    pytest.param({"type": "vllm", "baseURL": "https://llm.example.com:8443/v1"}, "https://otlp.example.com",
                 [DNS, {"ports": tcp(8443, 443)}], id="external-hosts-by-port"),
])
def test_network_policy_egress_follows_the_provider_and_the_trace_collector(provider, trace_collector, egress):
    agent = model(manifests.agent())
    config = config_for(agent, model(manifests.provider(**provider)))
    defaults = builders.Defaults(tracing=builders.TracingDefaults(endpoint=trace_collector))
    policy = builders.build_network_policy(agent, config=config, registry=None, defaults=defaults)
    assert policy["spec"]["egress"] == egress


def test_network_policy_egress_follows_the_agents_own_trace_collector():
    """``spec.tracing.endpoint`` overrides the installation's collector, and so does the policy's egress."""
    agent = model(manifests.agent(tracing={"endpoint": "http://tempo.traces.svc:4317"}))
    defaults = builders.Defaults(tracing=builders.TracingDefaults(endpoint="http://otel.observability.svc:4317"))
    policy = builders.build_network_policy(agent, config=config_for(agent), registry=None, defaults=defaults)
    assert {"to": [namespace_peer("traces")], "ports": tcp(4317)} in policy["spec"]["egress"]
    assert not any(rule.get("to") == [namespace_peer("observability")] for rule in policy["spec"]["egress"])


def test_keda_scaled_object_scales_to_zero_on_a_prometheus_trigger():
    agent = model(manifests.agent(autoscaling={"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 5,
                                               "metrics": [{"type": "memory", "target": "70%"},
                                                           {"type": "custom", "name": "active_connections", "target": 100}]}))
    scaled = builders.build_scaled_object(agent, prometheus_url="http://prometheus:9090")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 5)
    memory, prometheus = scaled["spec"]["triggers"]
    assert memory == {"type": "memory", "metricType": "Utilization", "metadata": {"value": "70"}}
    assert prometheus["type"] == "prometheus" and prometheus["metricType"] == "AverageValue"
    assert prometheus["metadata"] == {
        "serverAddress": "http://prometheus:9090",
        "query": 'sum(active_connections{namespace="team-a",agent="agent"})',
        "threshold": "100",
    }


@pytest.mark.parametrize("name", [
    pytest.param("support-agent", id="hyphen"),
    pytest.param("support.agent.v2", id="dots"),
    pytest.param("a-b.c-d", id="both"),
])
def test_keda_query_selects_the_agent_by_label_and_is_valid_promql(name):
    """Kubernetes names carry '-' and '.'; the query must parse as PromQL for every one of them.

    A regular expression over pod names escaped with re.escape wrote '\\-',
    which PromQL rejects; an exact label match needs no escaping at all.
    """
    agent = model(manifests.agent(name, autoscaling={
        "enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 5,
        "metrics": [{"type": "custom", "name": "active_connections", "target": 100}]}))
    query = builders.build_scaled_object(agent, prometheus_url="http://p:9090")["spec"]["triggers"][0]["metadata"]["query"]
    assert query == f'sum(active_connections{{namespace="team-a",agent="{name}"}})'
    assert "\\" not in query
    parsed = promql_parser.parse(query)
    assert isinstance(parsed, promql_parser.AggregateExpr) and parsed.expr.name == "active_connections"
    assert {(m.name, m.value) for m in parsed.expr.matchers.matchers} >= {("namespace", "team-a"), ("agent", name)}


@pytest.mark.parametrize("value, literal", [
    pytest.param('a"b', '"a\\"b"', id="quote"),
    pytest.param("a\\b", '"a\\\\b"', id="backslash"),
])
def test_prometheus_query_escapes_promql_strings(value, literal):
    """Names reach the query only after Kubernetes validated them, but the literal is still quoted properly."""
    query = builders.prometheus_query("m", namespace=value, agent="x")
    assert query == f'sum(m{{namespace={literal},agent="x"}})'
    parsed = promql_parser.parse(query)
    assert ("namespace", value) in {(m.name, m.value) for m in parsed.expr.matchers.matchers}


def test_scale_to_zero_without_a_custom_metric_is_an_error():
    """cpu and memory need pods to measure: nothing could wake the agent."""
    agent = model(manifests.agent(autoscaling={"enabled": True, "engine": "keda", "minReplicas": 0}))
    with pytest.raises(builders.BuildError, match=r"^spec\.autoscaling\.minReplicas: scaling to zero needs"):
        builders.build_scaled_object(agent, prometheus_url="http://prometheus:9090")


def keda_agent(*metrics, min_replicas=0, name="agent"):
    return model(manifests.agent(name, autoscaling={"enabled": True, "engine": "keda", "minReplicas": min_replicas,
                                                    "maxReplicas": 5, "metrics": list(metrics)}))


CONNECTIONS = {"type": "custom", "name": "active_connections", "target": 20}


def test_with_the_activator_active_connections_is_one_external_push_trigger():
    """The activator's external scaler serves active_connections (and pushes the wake): no Prometheus needed."""
    agent = keda_agent({"type": "memory", "target": "70%"}, CONNECTIONS, name="support-agent")
    scaled = builders.build_scaled_object(agent, activator=ACTIVATOR)
    memory, pushed = scaled["spec"]["triggers"]
    assert memory["type"] == "memory"
    assert pushed == {
        "type": "external-push",
        "name": "active_connections",
        "metricType": "AverageValue",
        "metadata": {"scalerAddress": "omnia-activator.omnia-system.svc:9090", "agent": "support-agent",
                     "namespace": "team-a", "metricName": "active_connections", "targetValue": "20"},
    }
    assert all(isinstance(value, str) for value in pushed["metadata"].values())  # KEDA's metadata is strings


@pytest.mark.parametrize(("after", "cooldown"), [
    pytest.param("30s", 30, id="seconds"),
    pytest.param("1h30m", 5400, id="compound"),
    pytest.param("1500ms", 2, id="rounded-up"),
])
def test_scale_to_zero_after_is_kedas_cooldown_period_in_whole_seconds(after, cooldown):
    """KEDA counts the delay before scaling to zero in seconds; a fraction rounds up, never down to none."""
    agent = model(manifests.agent(autoscaling={"enabled": True, "engine": "keda", "minReplicas": 0,
                                               "maxReplicas": 5, "scaleToZeroAfter": after,
                                               "metrics": [CONNECTIONS]}))
    assert builders.build_scaled_object(agent, activator=ACTIVATOR)["spec"]["cooldownPeriod"] == cooldown


def test_without_scale_to_zero_after_keda_keeps_its_default_cooldown():
    scaled = builders.build_scaled_object(keda_agent(CONNECTIONS), activator=ACTIVATOR)
    assert "cooldownPeriod" not in scaled["spec"]


def test_with_the_activator_and_a_prometheus_other_custom_metrics_go_to_prometheus():
    agent = keda_agent(CONNECTIONS, {"type": "custom", "name": "queue_depth", "target": 5})
    scaled = builders.build_scaled_object(agent, activator=ACTIVATOR, prometheus_url="http://prometheus:9090")
    assert [(t["type"], t["name"]) for t in scaled["spec"]["triggers"]] == [
        ("external-push", "active_connections"), ("prometheus", "queue_depth")]


def test_without_the_activator_active_connections_goes_to_prometheus_as_before():
    agent = keda_agent(CONNECTIONS)
    scaled = builders.build_scaled_object(agent, prometheus_url="http://prometheus:9090")
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["prometheus"]


@pytest.mark.parametrize(("metrics", "min_replicas", "activator", "message"), [
    pytest.param([CONNECTIONS], 1, None,
                 r"^spec\.autoscaling\.metrics\[0\]: the custom metric 'active_connections' needs a Prometheus.*"
                 r"--prometheus-url.* an activator \(--activator-service\)", id="no-prometheus-no-activator"),
    pytest.param([CONNECTIONS, {"type": "custom", "name": "queue_depth", "target": 5}], 1, ACTIVATOR,
                 r"^spec\.autoscaling\.metrics\[1\]: the custom metric 'queue_depth' needs a Prometheus.*"
                 r"the activator serves only active_connections", id="other-metric-without-prometheus"),
    pytest.param([{"type": "memory", "target": "70%"}], 0, None,
                 r"^spec\.autoscaling\.minReplicas: scaling to zero needs a custom metric .*--activator-service.*"
                 r"--prometheus-url", id="zero-without-either"),
    pytest.param([{"type": "memory", "target": "70%"}], 0, ACTIVATOR,
                 r"^spec\.autoscaling\.minReplicas: scaling to zero wakes the agent through the activator.*"
                 r"name: active_connections", id="zero-with-the-activator-but-no-active-connections"),
    pytest.param([CONNECTIONS, CONNECTIONS], 0, ACTIVATOR,
                 r"^spec\.autoscaling\.metrics\[1\]: active_connections is listed twice", id="twice"),
])
def test_scaled_objects_that_could_not_work_are_errors_naming_the_field_and_the_fix(
    metrics, min_replicas, activator, message
):
    """Prometheus is opt-in: a trigger that would query a Prometheus nobody named is refused, not guessed."""
    with pytest.raises(builders.BuildError, match=message):
        builders.build_scaled_object(keda_agent(*metrics, min_replicas=min_replicas), activator=activator)


@pytest.mark.parametrize(("text", "parsed"), [
    pytest.param("omnia-system/omnia-activator", ACTIVATOR, id="namespace-and-name"),
    pytest.param("omnia-system", None, id="no-slash"),
    pytest.param("omnia-system/a/b", None, id="two-slashes"),
    pytest.param("/omnia-activator", None, id="no-namespace"),
    pytest.param("omnia-system/Omnia", None, id="not-a-dns-label"),
])
def test_activator_service_is_namespace_slash_name(text, parsed):
    if parsed is None:
        with pytest.raises(ValueError, match="is not NAMESPACE/NAME"):
            builders.ActivatorService.parse(text)
    else:
        assert builders.ActivatorService.parse(text) == parsed
        assert str(parsed) == text


def test_network_policy_admits_the_activators_namespace_once():
    """The activator proxies held connections to the pods and reads their /metrics, on the facade port."""
    agent = model(manifests.agent())
    policy = builders.build_network_policy(agent, config=config_for(agent), registry=None, defaults=WITH_ACTIVATOR)
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [namespace_peer("ingress-nginx"), namespace_peer("monitoring"),
                            namespace_peer("omnia-system")]
    assert rule["ports"] == tcp(8080)
    same = builders.Defaults(activator=builders.ActivatorService(namespace="monitoring", name="omnia-activator"))
    policy = builders.build_network_policy(agent, config=config_for(agent), registry=None, defaults=same)
    assert policy["spec"]["ingress"][0]["from"] == [namespace_peer("ingress-nginx"), namespace_peer("monitoring")]


def test_the_service_port_is_named_as_the_activators_slice_port():
    service = builders.build_service(model(manifests.agent()))
    assert [port["name"] for port in service["spec"]["ports"]] == [builders.SERVICE_PORT_NAME]


def test_pdb_keeps_one_pod():
    pdb = builders.build_pdb(model(manifests.agent(replicas=3)))
    assert (pdb["apiVersion"], pdb["spec"]) == ("policy/v1", {"minAvailable": 1, "selector": {"matchLabels": labels.selector_labels("agent")}})


def test_service_account_mounts_no_token():
    assert builders.build_service_account(model(manifests.agent()))["automountServiceAccountToken"] is False


def test_prompt_snapshot_is_an_immutable_configmap_owned_by_its_pack():
    pack = model(manifests.pack(version="1.2.0"))
    prompt = PromptConfig(version="1.2.0", system_prompt="You are helpful.")
    snapshot = builders.build_prompt_snapshot(pack, prompt=prompt, content_hash=hashing.content_hash(prompt))
    assert snapshot["immutable"] is True
    assert snapshot["metadata"]["ownerReferences"][0]["kind"] == "PromptPack"
    assert snapshot["metadata"]["labels"][labels.PROMPT_PACK] == "prompts"
    assert snapshot["metadata"]["annotations"][labels.PROMPT_VERSION] == "1.2.0"
    assert builders.read_snapshot(snapshot["data"]) == prompt


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0-RC.1+Build.5", "10.20.30-alpha"])
def test_snapshot_names_are_valid_object_names_for_any_semver(version):
    name = builders.snapshot_name("prompts", version, "0123456789abcdef")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253


def test_endpoint_is_the_in_cluster_websocket_url():
    assert builders.endpoint(model(manifests.agent(facade={"port": 9000}))) == "ws://agent.team-a.svc:9000/ws"


# --- the default session store ------------------------------------------------------------

REDIS = DefaultStore(type="redis", namespace="omnia-system", name="omnia-session-redis", key="url")


def test_the_default_session_store_reaches_the_runtime_from_the_secret_beside_the_agent():
    """No secretRef: the runtime reads the same variable, filled from the mirror the operator owns."""
    agent = model(manifests.agent(session={"type": "redis"}))
    objects = by_kind(objects_for(agent))
    facade, runtime = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert runtime["env"] == [
        {"name": "OMNIA_SESSION_URL", "valueFrom": {"secretKeyRef": {"name": "agent-session-store", "key": "url"}}}]
    assert "env" not in facade
    config = AgentConfig.from_json(objects["ConfigMap"]["data"]["agent.json"])
    assert (config.session.type, config.session.url_env) == ("redis", "OMNIA_SESSION_URL")


def test_the_mirror_is_owned_by_the_agent_and_says_where_its_value_comes_from():
    agent = model(manifests.agent(session={"type": "redis"}))
    secret = builders.build_session_store_secret(agent, store=REDIS, source_version="42", value="redis://r:6379/0")
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    metadata = secret["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("agent-session-store", manifests.NAMESPACE)
    assert metadata["labels"] == labels.agent_labels("agent")
    assert [(o["kind"], o["name"], o["controller"]) for o in metadata["ownerReferences"]] == [
        ("AgentRuntime", "agent", True)]
    assert metadata["annotations"] == {labels.SESSION_STORE_SOURCE: "omnia-system/omnia-session-redis:url",
                                       labels.SESSION_STORE_VERSION: "42"}
    assert secret["data"] == {"url": "cmVkaXM6Ly9yOjYzNzkvMA=="}


def test_the_mirror_without_a_value_has_no_data_and_no_version():
    """``omnia render`` cannot read the cluster's Secret: it prints the mirror's shape only."""
    agent = model(manifests.agent(session={"type": "redis"}))
    secret = builders.build_session_store_secret(agent, store=REDIS, source_version=None, value=None)
    assert "data" not in secret
    assert secret["metadata"]["annotations"] == {labels.SESSION_STORE_SOURCE: "omnia-system/omnia-session-redis:url"}
