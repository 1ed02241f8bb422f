"""The Helm chart, rendered by a real helm: lint, values, RBAC, security and consistency with the code.

What the chart must agree with lives elsewhere in the repo — the generated
CRDs, the operator's RBAC in deploy/rbac/, the operator's command line and
default image, the labels of the Services it creates — so these tests compare
against those sources rather than against copies of them.
"""

from __future__ import annotations

import subprocess
import tomllib
from typing import Any

import pytest
import yaml

import omnia
from omnia.api.v1alpha1 import parse_manifest
from omnia.operator import builders
from tests.packaging import charts
from tests.packaging.charts import CHART, REPO, find, one, rule_set

CLUSTER_ROLE = REPO / "deploy" / "rbac" / "cluster_role.yaml"
LEADER_ELECTION = REPO / "deploy" / "rbac" / "leader_election.yaml"
SESSION_STORES = REPO / "deploy" / "rbac" / "session_stores.yaml"
ACTIVATOR_RBAC = REPO / "deploy" / "rbac" / "activator.yaml"
SUPPORT_AGENT = REPO / "examples" / "support-agent" / "agentruntime.yaml"
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
# The names deploy/rbac/session_stores.yaml grants, as a release would configure them.
DEFAULT_STORES = {"sessionStore": {"redis": {"secretRef": {"name": "omnia-session-redis", "key": "url"}},
                                   "postgres": {"secretRef": {"name": "omnia-session-postgres", "key": "dsn"}}}}

# Every option that changes what is rendered, at once.
EVERYTHING = {
    "image": {"repository": "registry.example.com/omnia", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "watchNamespaces": ["team-a"],
    "operator": {
        "workers": 8,
        "logLevel": "debug",
        "agentImage": "registry.example.com/omnia-agent:0.1.0",
        "prometheusURL": "http://prometheus.monitoring.svc:9090",
        "agentNetworkPolicy": {"ingressNamespaces": ["traefik", "gateways"], "scrapeNamespaces": []},
        "port": 9000,
        "metricsPort": 9100,
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    },
    "activator": {"enabled": True, "maxHeld": 50, "maxHeldPerAgent": 10, "wakeTimeoutSeconds": 30, "drainTimeoutSeconds": 5,
                  "resources": {"requests": {"cpu": "10m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}},
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"example.com/tier": "control"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
    "serviceAccount": {"name": "omnia", "annotations": {"example.com/role": "operator"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"},
    "sessionStore": {"redis": {"secretRef": {"name": "omnia-session-redis", "key": "url"}}},
    "tracing": {"otlp": {"endpoint": "http://otel-collector.observability.svc:4317",
                         "headersSecretRef": {"name": "otlp", "key": "headers"}}, "samplingRatio": 0.25},
}


def of(objects: list[dict[str, Any]], kind: str, component: str = "operator") -> dict[str, Any]:
    """The one object of ``kind`` of the operator (or of the activator), whatever the release calls it."""
    (found,) = [obj for obj in find(objects, kind)
                if obj["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return found


def container(objects: list[dict[str, Any]], component: str = "operator") -> dict[str, Any]:
    deployment = of(objects, "Deployment", component)
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container(objects)["env"]}


# --- lint and versions ----------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param(NAMESPACED, id="listed-namespaces"),
        pytest.param(EVERYTHING, id="every-option"),
        pytest.param({"replicaCount": 3}, id="leader-elected"),
        pytest.param({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"},
                      "userRoles": {"create": False}, "service": {"enabled": False}}, id="bring-your-own"),
    ],
)
def test_chart_lints_clean_in_strict_mode(helm: charts.Helm, values: dict[str, Any]) -> None:
    result = helm.lint(values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_and_app_version_are_the_package_version() -> None:
    """One version for the package, the image tag and the chart: they are released together."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == chart["version"] == project["version"] == omnia.__version__


def test_default_image_is_the_one_the_operator_gives_agent_pods(helm: charts.Helm) -> None:
    """Operator and agents run the same image (three entry points), tagged with the appVersion."""
    objects = helm.template()
    assert container(objects)["image"] == builders.DEFAULT_IMAGE
    assert env(objects)["OMNIA_IMAGE"] == builders.DEFAULT_IMAGE


def test_image_and_agent_image_can_be_set_apart(helm: charts.Helm) -> None:
    objects = helm.template(EVERYTHING)
    assert container(objects)["image"] == "registry.example.com/omnia:0.1.0-rc1"
    assert container(objects)["imagePullPolicy"] == "Always"
    assert env(objects)["OMNIA_IMAGE"] == "registry.example.com/omnia-agent:0.1.0"
    assert env(objects)["HTTPS_PROXY"] == "http://proxy:3128"


def test_chart_crds_are_the_generated_ones() -> None:
    """helm installs crds/ verbatim, so it must hold exactly what scripts/gen-crds generated."""
    generated = {path.name: path.read_text() for path in (REPO / "deploy" / "crds").glob("*.yaml")}
    in_chart = {path.name: path.read_text() for path in (CHART / "crds").glob("*.yaml")}
    assert in_chart == generated, "run scripts/sync-chart-crds"
    check = subprocess.run([str(REPO / "scripts" / "sync-chart-crds"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# --- the operator's RBAC ----------------------------------------------------------


def reference_rules() -> set[tuple[str, str, str, tuple[str, ...]]]:
    assert CLUSTER_ROLE.is_file(), f"{CLUSTER_ROLE.relative_to(REPO)} is the source of the operator's rules"
    return rule_set(yaml.safe_load(CLUSTER_ROLE.read_text())["rules"])


def test_cluster_wide_operator_gets_exactly_the_rules_of_deploy_rbac(helm: charts.Helm) -> None:
    objects = helm.template()
    role = one(objects, "ClusterRole", "omnia-operator")
    assert rule_set(role["rules"]) == reference_rules()
    binding = one(objects, "ClusterRoleBinding", "omnia-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "omnia-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "omnia-operator",
                                    "namespace": "omnia-system"}]
    assert not find(objects, "Role") and not find(objects, "RoleBinding")


def test_namespaced_operator_gets_the_same_rules_only_in_its_namespaces(helm: charts.Helm) -> None:
    """Listing namespaces takes every cluster-wide right away: a Role and RoleBinding in each instead."""
    objects = helm.template(NAMESPACED)
    roles = find(objects, "Role", "omnia-operator")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rule_set(role["rules"]) == reference_rules()
    bindings = find(objects, "RoleBinding", "omnia-operator")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "omnia-operator"}
        assert binding["subjects"][0]["namespace"] == "omnia-system"
    assert sorted(role["metadata"]["name"] for role in find(objects, "ClusterRole")) == [
        "omnia-activator", "omnia-editor", "omnia-viewer"]
    assert [binding["metadata"]["name"] for binding in find(objects, "ClusterRoleBinding")] == ["omnia-activator"], \
        "only the activator reads cluster-wide (deploy/rbac/activator.yaml)"


def test_release_omnia_has_the_names_of_deploy_rbac(helm: charts.Helm) -> None:
    """So that docs and plain manifests name the same ServiceAccount and roles as the chart.

    deploy/rbac/ holds every right of every configuration; the Lease's only
    comes with several replicas, the operator's Role beside the activator only
    with listed namespaces.
    """
    reference = {
        (doc["kind"], doc["metadata"]["name"])
        for path in (REPO / "deploy" / "rbac").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "RoleBinding"
    }
    rendered = {(obj["kind"], obj["metadata"]["name"]) for values in ({}, NAMESPACED)
                for obj in helm.template({"replicaCount": 2, **DEFAULT_STORES, **values})}
    assert reference <= rendered


@pytest.mark.parametrize("values", [pytest.param({}, id="cluster-wide"), pytest.param(NAMESPACED, id="namespaced")])
def test_several_replicas_get_exactly_the_lease_rights_of_deploy_rbac_in_the_release_namespace(
    helm: charts.Helm, values: dict[str, Any]
) -> None:
    (reference,) = [doc for doc in yaml.safe_load_all(LEADER_ELECTION.read_text()) if doc["kind"] == "Role"]
    objects = helm.template({**values, "replicaCount": 2})
    role = one(objects, "Role", "omnia-operator-leader-election")
    assert role["metadata"]["namespace"] == "omnia-system"
    assert rule_set(role["rules"]) == rule_set(reference["rules"])
    binding = one(objects, "RoleBinding", "omnia-operator-leader-election")
    assert binding["roleRef"]["name"] == "omnia-operator-leader-election"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "omnia-operator", "namespace": "omnia-system"}]
    assert not find(helm.template(values), "Role", "omnia-operator-leader-election"), "one replica needs no Lease"


@pytest.mark.parametrize("values", [pytest.param({}, id="cluster-wide"), pytest.param(NAMESPACED, id="namespaced")])
def test_default_session_stores_get_exactly_the_rights_of_deploy_rbac_on_those_secrets_only(
    helm: charts.Helm, values: dict[str, Any]
) -> None:
    """Reading the default stores' Secrets: list and watch narrowed to their names, in the release namespace."""
    (reference,) = [doc for doc in yaml.safe_load_all(SESSION_STORES.read_text()) if doc["kind"] == "Role"]
    objects = helm.template({**values, **DEFAULT_STORES})
    role = one(objects, "Role", "omnia-operator-session-stores")
    assert role["metadata"]["namespace"] == "omnia-system"
    assert rule_set(role["rules"]) == rule_set(reference["rules"])
    binding = one(objects, "RoleBinding", "omnia-operator-session-stores")
    assert binding["roleRef"]["name"] == "omnia-operator-session-stores"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "omnia-operator", "namespace": "omnia-system"}]
    only_redis = helm.template({**values, "sessionStore": {"redis": DEFAULT_STORES["sessionStore"]["redis"]}})
    assert {grant[3] for grant in rule_set(one(only_redis, "Role", "omnia-operator-session-stores")["rules"])} == {
        ("omnia-session-redis",)}
    assert not find(helm.template(values), "Role", "omnia-operator-session-stores"), "no default store, no right"


def test_default_session_stores_reach_the_operators_command_line(helm: charts.Helm) -> None:
    args = container(helm.template(DEFAULT_STORES, namespace="platform"))["args"]
    assert [arg for arg in args if arg.startswith("--default-session-secret")] == [
        "--default-session-secret=redis=platform/omnia-session-redis:url",
        "--default-session-secret=postgres=platform/omnia-session-postgres:dsn",
    ]
    assert not [arg for arg in container(helm.template())["args"] if arg.startswith("--default-session-secret")]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, ["--trace-sampling-ratio=1"], id="no-collector"),
        pytest.param({"tracing": {"otlp": {"endpoint": "http://collector:4317"}, "samplingRatio": 0.1}},
                     ["--otlp-endpoint=http://collector:4317", "--trace-sampling-ratio=0.1"], id="collector"),
        pytest.param({"tracing": {"otlp": {"endpoint": "https://vendor.example:443",
                                           "headersSecretRef": {"name": "otlp", "key": "api"}}}},
                     ["--otlp-endpoint=https://vendor.example:443", "--otlp-headers-secret=otlp:api",
                      "--trace-sampling-ratio=1"], id="collector-with-headers"),
        pytest.param({"tracing": {"otlp": {"headersSecretRef": {"name": "otlp"}}}}, ["--trace-sampling-ratio=1"],
                     id="headers-without-collector-are-not-sent-anywhere"),
    ],
)
def test_tracing_values_reach_the_operators_command_line(
    helm: charts.Helm, values: dict[str, Any], expected: list[str]
) -> None:
    """The chart's tracing values become the operator's options; the headers only by Secret name and key."""
    args = container(helm.template(values))["args"]
    assert [arg for arg in args if arg.startswith(("--otlp", "--trace"))] == expected


def test_without_rbac_the_chart_creates_no_operator_rights(helm: charts.Helm) -> None:
    objects = helm.template({"rbac": {"create": False}})
    assert [role["metadata"]["name"] for role in find(objects, "ClusterRole")] == ["omnia-viewer", "omnia-editor"]
    assert not find(objects, "ClusterRoleBinding") and not find(objects, "Role")
    assert of(objects, "ServiceAccount", "activator"), "the activator's identity, still; its rights are yours to bind"


def test_existing_service_account_must_be_named(helm: charts.Helm) -> None:
    result = helm.template_text({"serviceAccount": {"create": False}}, check=False)
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


# --- user-facing roles ------------------------------------------------------------


def test_user_roles_aggregate_into_the_built_in_roles(helm: charts.Helm) -> None:
    objects = helm.template()
    viewer = one(objects, "ClusterRole", "omnia-viewer")
    editor = one(objects, "ClusterRole", "omnia-editor")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    kinds = ["agentruntimes", "promptpacks", "providers", "toolregistries"]
    viewer_grants = rule_set(viewer["rules"])
    editor_grants = rule_set(editor["rules"])
    for kind in kinds:
        for verb in ("get", "list", "watch"):
            assert ("omnia.altairalabs.ai", kind, verb, ()) in viewer_grants
        for verb in ("create", "update", "patch", "delete"):
            assert ("omnia.altairalabs.ai", kind, verb, ()) in editor_grants
    assert {verb for _, _, verb, _ in viewer_grants} == {"get", "list", "watch"}
    # Status is the operator's to write; users only read it.
    assert not {grant for grant in editor_grants if grant[1].endswith("/status") and grant[2] not in
                ("get", "list", "watch")}


def test_user_roles_can_be_left_to_another_release(helm: charts.Helm) -> None:
    objects = helm.template({"userRoles": {"create": False}})
    assert {role["metadata"]["name"] for role in find(objects, "ClusterRole")} == {"omnia-operator", "omnia-activator"}


# --- the operator's Deployment ------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, ["--all-namespaces"], id="all-namespaces"),
        pytest.param(NAMESPACED, ["--namespace=team-a", "--namespace=team-b"], id="listed"),
    ],
)
def test_operator_serves_the_watched_namespaces(
    helm: charts.Helm, values: dict[str, Any], expected: list[str]
) -> None:
    args = container(helm.template(values))["args"]
    assert args[0] == "operator"
    assert [arg for arg in args if arg.startswith(("--namespace", "--all-namespaces"))] == expected


def test_operator_options_reach_its_command_line(helm: charts.Helm) -> None:
    operator = container(helm.template(EVERYTHING))
    assert operator["args"] == [
        "operator", "--namespace=team-a", "--liveness=0.0.0.0:9000", "--metrics=0.0.0.0:9100", "--workers=8",
        "--prometheus-url=http://prometheus.monitoring.svc:9090", "--activator-service=omnia-system/omnia-activator",
        "--ingress-namespace=traefik", "--ingress-namespace=gateways", "--scrape-namespace=",
        "--default-session-secret=redis=omnia-system/omnia-session-redis:url",
        "--otlp-endpoint=http://otel-collector.observability.svc:4317", "--otlp-headers-secret=otlp:headers",
        "--trace-sampling-ratio=0.25",
    ]
    assert operator["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"},
                                 {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert env(helm.template(EVERYTHING))["OMNIA_LOG_LEVEL"] == "debug"


def test_operator_pod_meets_the_restricted_pod_security_standard(helm: charts.Helm) -> None:
    objects = helm.template()
    pod = of(objects, "Deployment")["spec"]["template"]["spec"]
    operator = container(objects)
    security = operator["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    # The read-only root needs one writable place, where the image puts HOME and TMPDIR.
    assert {"name": "tmp", "mountPath": "/tmp"} in operator["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_operator_has_requests_limits_and_probes(helm: charts.Helm) -> None:
    """Requests and limits everywhere, so ResourceQuotas and LimitRanges can bound it."""
    operator = container(helm.template())
    assert set(operator["resources"]) == {"requests", "limits"}
    assert set(operator["resources"]["requests"]) == set(operator["resources"]["limits"]) == {"cpu", "memory"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_one_replica_is_replaced_with_recreate_and_elects_no_leader(helm: charts.Helm) -> None:
    """Without leader election two operators must never overlap, not even during an upgrade."""
    objects = helm.template()
    deployment = of(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container(objects)["args"]
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert of(helm.template({"replicaCount": 0}), "Deployment")["spec"]["replicas"] == 0


def test_several_replicas_elect_a_leader_in_their_namespace_and_roll(helm: charts.Helm) -> None:
    """Only the Lease holder reconciles, so replicas may overlap: rolling updates, spread over nodes."""
    objects = helm.template({"replicaCount": 2})
    deployment = of(objects, "Deployment")
    operator = container(objects)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--leader-elect" in operator["args"]
    (pod_namespace,) = [item for item in operator["env"] if item["name"] == "POD_NAMESPACE"]
    assert pod_namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    (preferred,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"] == \
        deployment["spec"]["selector"]["matchLabels"]


def test_an_affinity_of_ones_own_replaces_the_spreading_preference(helm: charts.Helm) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["control"]}]}]}}}
    deployment = of(helm.template({"replicaCount": 2, "affinity": affinity}), "Deployment")
    assert deployment["spec"]["template"]["spec"]["affinity"] == affinity


def test_options_reach_the_pod(helm: charts.Helm) -> None:
    objects = helm.template(EVERYTHING)
    template = of(objects, "Deployment")["spec"]["template"]
    pod = template["spec"]
    assert template["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert template["metadata"]["labels"]["example.com/tier"] == "control"
    assert pod["serviceAccountName"] == "omnia"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert one(objects, "ServiceAccount", "omnia")["metadata"]["annotations"] == {"example.com/role": "operator"}


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"replicas": 1}, id="unknown-key"),
        pytest.param({"operator": {"logLevel": "verbose"}}, id="bad-log-level"),
        pytest.param({"watchNamespaces": ["Team_A"]}, id="bad-namespace-name"),
        pytest.param({"serviceMonitor": {"interval": "often"}}, id="bad-interval"),
        pytest.param({"sessionStore": {"memory": {"secretRef": {"name": "m"}}}}, id="no-default-for-memory"),
        pytest.param({"sessionStore": {"redis": {"secretRef": {"name": "Redis_URL"}}}}, id="bad-secret-name"),
        pytest.param({"sessionStore": {"redis": {"secretRef": {"name": "redis", "key": ""}}}}, id="empty-key"),
        pytest.param({"tracing": {"samplingRatio": 1.5}}, id="sampling-ratio-above-one"),
        pytest.param({"tracing": {"otlp": {"endpoint": "otel-collector:4317"}}}, id="endpoint-without-scheme"),
        pytest.param({"tracing": {"otlp": {"headersSecretRef": {"name": "otlp", "key": ""}}}}, id="empty-headers-key"),
        pytest.param({"tracing": {"otlp": {"headers": "api-key=secret"}}}, id="inline-headers"),
    ],
)
def test_values_schema_refuses_mistakes(helm: charts.Helm, values: dict[str, Any]) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr


# --- Services and monitoring ----------------------------------------------------------


def test_service_selects_the_operator_pod(helm: charts.Helm) -> None:
    objects = helm.template()
    service = one(objects, "Service", "omnia-operator")
    pod_labels = of(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
                                        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    container_ports = {port["name"] for port in container(objects)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports


def test_service_monitor_is_off_by_default(helm: charts.Helm) -> None:
    assert not find(helm.template(), "ServiceMonitor")


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        pytest.param({}, {"any": True}, id="all-namespaces"),
        pytest.param(NAMESPACED, {"matchNames": ["team-a", "team-b"]}, id="listed"),
    ],
)
def test_service_monitor_scrapes_the_services_the_operator_creates(
    helm: charts.Helm, values: dict[str, Any], namespaces: dict[str, Any]
) -> None:
    """Its selector and port must match what builders.build_service puts on every agent's Service."""
    monitor = one(helm.template({**values, "serviceMonitor": {"enabled": True}}), "ServiceMonitor", "omnia-agents")
    agent_service = builders.build_service(parse_manifest(yaml.safe_load(SUPPORT_AGENT.read_text())))
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"] == namespaces
    assert monitor["spec"]["selector"]["matchLabels"].items() <= agent_service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in agent_service["spec"]["ports"]}


def test_service_monitor_of_the_operator_scrapes_its_metrics_port(helm: charts.Helm) -> None:
    """It selects the operator's Service, in the release namespace only, by the port that targets /metrics."""
    objects = helm.template({"serviceMonitor": {"enabled": True}}, namespace="platform")
    monitor = one(objects, "ServiceMonitor", "omnia-operator")
    service = one(objects, "Service", "omnia-operator")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["platform"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}["metrics"] == "metrics"


def test_without_the_operator_service_only_the_agents_are_scraped(helm: charts.Helm) -> None:
    objects = helm.template({"service": {"enabled": False}, "serviceMonitor": {"enabled": True}})
    assert [obj["metadata"]["name"] for obj in find(objects, "ServiceMonitor")] == ["omnia-agents"]


def test_service_monitors_carry_the_labels_prometheus_selects(helm: charts.Helm) -> None:
    monitors = find(helm.template(EVERYTHING), "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"


# --- names and notes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "operator_name"),
    [
        pytest.param("omnia", "omnia-operator", id="release-omnia"),
        pytest.param("agents", "agents-omnia-operator", id="other-release"),
    ],
)
def test_names_follow_the_release(helm: charts.Helm, release: str, operator_name: str) -> None:
    objects = helm.template(release=release)
    assert of(objects, "Deployment")["metadata"]["name"] == operator_name
    assert of(objects, "ServiceAccount")["metadata"]["name"] == operator_name


def test_every_namespaced_object_is_in_the_release_namespace_or_a_watched_one(helm: charts.Helm) -> None:
    objects = helm.template(NAMESPACED, namespace="platform")
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"] == "omnia-operator":
            assert namespace in ("team-a", "team-b")
        elif obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert namespace == "platform", obj["kind"]



def test_agents_network_policy_defaults_reach_the_operator(helm: charts.Helm) -> None:
    """The ingress controller's and Prometheus' namespaces are admitted by default; no trace collector is."""
    args = container(helm.template())["args"]
    assert [arg for arg in args if arg.startswith(("--ingress-namespace", "--scrape-namespace"))] == [
        "--ingress-namespace=ingress-nginx", "--scrape-namespace=monitoring"]


# --- the activator ---------------------------------------------------------------------


def test_the_activator_is_deployed_by_default_and_named_to_the_operator(helm: charts.Helm) -> None:
    """Its Service is what --activator-service names, in the release namespace, with the ports the operator
    writes into agents' EndpointSlices (http) and KEDA's triggers (scaler)."""
    objects = helm.template(namespace="platform")
    service = of(objects, "Service", "activator")
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("omnia-activator", "platform")
    assert "--activator-service=platform/omnia-activator" in container(objects)["args"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": builders.ACTIVATOR_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "scaler", "port": builders.ACTIVATOR_SCALER_PORT, "targetPort": "scaler", "protocol": "TCP"}]
    activator = container(objects, "activator")
    assert {port["name"]: port["containerPort"] for port in activator["ports"]} == {
        "http": builders.ACTIVATOR_HTTP_PORT, "scaler": builders.ACTIVATOR_SCALER_PORT}
    pod_labels = of(objects, "Deployment", "activator")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    operator_labels = of(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= operator_labels.items()
    assert builders.ActivatorService.parse("platform/omnia-activator").scaler_address == \
        "omnia-activator.platform.svc:9090"


def test_the_activator_runs_the_one_image_with_its_options(helm: charts.Helm) -> None:
    default = container(helm.template(), "activator")
    assert default["image"] == builders.DEFAULT_IMAGE
    assert default["args"] == ["activator", "--port=8080", "--scaler-port=9090", "--max-held=1000",
                               "--max-held-per-agent=100", "--wake-timeout=60", "--drain-timeout=25"]
    given = container(helm.template(EVERYTHING), "activator")
    assert given["image"] == "registry.example.com/omnia:0.1.0-rc1"
    assert given["args"][-4:] == ["--max-held=50", "--max-held-per-agent=10", "--wake-timeout=30",
                                  "--drain-timeout=5"]
    assert given["resources"] == EVERYTHING["activator"]["resources"]
    pod = of(helm.template(EVERYTHING), "Deployment", "activator")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["terminationGracePeriodSeconds"] == 15, "relayed connections drain before the pod goes"


def test_activator_pod_meets_the_restricted_pod_security_standard(helm: charts.Helm) -> None:
    objects = helm.template()
    pod = of(objects, "Deployment", "activator")["spec"]["template"]["spec"]
    activator = container(objects, "activator")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert activator["securityContext"]["allowPrivilegeEscalation"] is False
    assert activator["securityContext"]["readOnlyRootFilesystem"] is True
    assert activator["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in activator["volumeMounts"]
    assert set(activator["resources"]["requests"]) == set(activator["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["serviceAccountName"] == of(objects, "ServiceAccount", "activator")["metadata"]["name"]
    assert activator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert activator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.parametrize("values", [pytest.param({}, id="cluster-wide"), pytest.param(NAMESPACED, id="namespaced")])
def test_activator_gets_exactly_the_read_rights_of_deploy_rbac(helm: charts.Helm, values: dict[str, Any]) -> None:
    """Listing and watching EndpointSlices and listing AgentRuntimes anywhere, and nothing else; the operator reads the
    activator's EndpointSlices through its ClusterRole, or a Role there when it is bound only where it serves."""
    reference = {doc["kind"]: doc for doc in yaml.safe_load_all(ACTIVATOR_RBAC.read_text())}
    objects = helm.template(values)
    role = one(objects, "ClusterRole", "omnia-activator")
    assert rule_set(role["rules"]) == rule_set(reference["ClusterRole"]["rules"])
    assert rule_set(role["rules"]) == {("discovery.k8s.io", "endpointslices", "list", ()),
                                       ("discovery.k8s.io", "endpointslices", "watch", ()),
                                       ("omnia.altairalabs.ai", "agentruntimes", "list", ())}
    binding = one(objects, "ClusterRoleBinding", "omnia-activator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "omnia-activator", "namespace": "omnia-system"}]
    operator_role = find(objects, "Role", "omnia-operator-activator")
    if values:
        (operator_role,) = operator_role
        assert operator_role["metadata"]["namespace"] == "omnia-system"
        assert rule_set(operator_role["rules"]) == rule_set(reference["Role"]["rules"])
        operator_binding = one(objects, "RoleBinding", "omnia-operator-activator")
        assert operator_binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "omnia-operator", "namespace": "omnia-system"}]
    else:
        assert not operator_role, "the operator's ClusterRole covers the release namespace already"
        assert ("discovery.k8s.io", "endpointslices", "watch", ()) in reference_rules()


def test_without_the_activator_nothing_of_it_is_rendered_and_the_operator_is_not_told(helm: charts.Helm) -> None:
    objects = helm.template({"activator": {"enabled": False}, **NAMESPACED})
    assert not [obj for obj in objects if "activator" in obj["metadata"]["name"]]
    assert not [arg for arg in container(objects)["args"] if arg.startswith("--activator-service")]


def test_prometheus_is_opt_in(helm: charts.Helm) -> None:
    """No Prometheus is assumed: without operator.prometheusURL the operator gets no --prometheus-url."""
    assert not [arg for arg in container(helm.template())["args"] if arg.startswith("--prometheus-url")]


@pytest.mark.parametrize("values", [
    pytest.param({"activator": {"maxHeld": 0}}, id="no-connection-held"),
    pytest.param({"activator": {"wakeTimeoutSeconds": "1m"}}, id="timeout-not-seconds"),
    pytest.param({"activator": {"replicas": 2}}, id="unknown-key"),
])
def test_values_schema_refuses_activator_mistakes(helm: charts.Helm, values: dict[str, Any]) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr
