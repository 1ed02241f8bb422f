"""Traces leave agent processes configured only as the operator configures a pod.

The agent is rendered by the operator's builders (``omnia render``'s path);
the facade and runtime get exactly the environment of their containers,
resolved as the kubelet resolves it (downward API, Secret references,
``$(VAR)`` expansion); an OTLP/gRPC receiver on loopback collects what they
export.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from websockets.sync.client import connect

from omnia import manifests
from omnia.api.v1alpha1 import SecretKeySelector
from omnia.config import AgentConfig
from omnia.operator import builders, labels
from omnia.operator import render as rendering

from .processes import AgentProcesses, free_port, wait_until

NAMESPACE = "team-a"
POD = "helper-7d9f8b6c5-x2x4q"
SECRETS = {("otlp", "headers"): "x-api-key=test-token,x-tenant=team-a"}
MANIFESTS = [
    {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack",
     "metadata": {"name": "prompts", "namespace": NAMESPACE},
     "spec": {"version": "1.0.0", "systemPrompt": "You are helpful."}},
    {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider",
     "metadata": {"name": "mock", "namespace": NAMESPACE},
     "spec": {"type": "mock", "model": "mock-1"}},
    {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
     "metadata": {"name": "helper", "namespace": NAMESPACE},
     "spec": {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"}}},
]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: keeps every export and the metadata it came with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exports: list[tuple[dict[str, str], trace_service_pb2.ExportTraceServiceRequest]] = []

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        with self.lock:
            self.exports.append((dict(context.invocation_metadata()), request))
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, str], dict[str, Any], Any]]:
        """(metadata, resource attributes, span) for every span received so far."""
        with self.lock:
            exports = list(self.exports)
        return [
            (metadata, _attributes(resource_spans.resource.attributes), span)
            for metadata, request in exports
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


@pytest.fixture
def receiver():
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    servicer.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield servicer
    finally:
        server.stop(grace=None)


def _attributes(items) -> dict[str, Any]:
    return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in items}


def kubelet_env(container: Mapping[str, Any], *, pod: Mapping[str, str],
                secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """A container's environment as the kubelet gives it: values, fieldRefs, secretKeyRefs, $(VAR) expanded."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = pod[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def rendered_pod(tmp_path: Path, *, endpoint: str, tracing: dict[str, Any] | None = None
                 ) -> tuple[AgentConfig, dict[str, dict[str, Any]]]:
    """The agent's config and containers as the operator builds them, with the chart's tracing values."""
    documents = [dict(document) for document in MANIFESTS]
    if tracing is not None:
        documents[-1] = {**documents[-1], "spec": {**documents[-1]["spec"], "tracing": tracing}}
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all(documents))
    defaults = builders.Defaults(tracing=builders.TracingDefaults(
        endpoint=endpoint, headers=SecretKeySelector(name="otlp", key="headers"), sampling_ratio=1.0))
    objects = rendering.render(manifests.load([tmp_path / "manifests.yaml"]), defaults=defaults)
    config_map = next(obj for obj in objects
                      if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == labels.config_map_name("helper"))
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    assert "x-api-key" not in json.dumps(objects), "header values stay in the Secret"
    config = AgentConfig.from_json(config_map["data"][labels.CONFIG_KEY])
    return config, {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def run_one_turn(agent: AgentProcesses) -> None:
    """Start the agent, run one turn over WebSocket, stop the agent (which flushes its last batch of spans)."""
    try:
        agent.start()
        with connect(agent.ws_url) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
            ws.send(json.dumps({"type": "message", "content": "hello"}))
            while json.loads(ws.recv(timeout=30))["type"] not in ("done", "error"):
                pass
    finally:
        agent.stop()


@pytest.fixture
def no_otel_environment(monkeypatch):
    """Only what the operator's builder sets may configure the processes."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def test_an_operator_made_pods_turn_reaches_the_collector_as_invoke_agent_then_chat(tmp_path, receiver, no_otel_environment):
    """One turn gives an invoke_agent span and, inside it, a chat span, in one trace, from the runtime
    container named in its resource, sent with the headers from the Secret."""
    config, containers = rendered_pod(tmp_path, endpoint=receiver.endpoint)
    pod = {"metadata.name": POD, "metadata.namespace": NAMESPACE}
    envs = {name: kubelet_env(container, pod=pod, secrets=SECRETS) for name, container in containers.items()}
    assert all(env["OTEL_EXPORTER_OTLP_ENDPOINT"] == receiver.endpoint for env in envs.values())

    agent = AgentProcesses(config, tmp_path, container_env=envs)
    run_one_turn(agent)

    # Stopping flushes the last batch: what a rolled pod traced still arrives.
    wait_until(lambda: {"invoke_agent", "chat"} <= {span.name.split(" ")[0] for _, _, span in receiver.spans()},
               timeout=10, what="invoke_agent and chat spans")

    received = receiver.spans()
    (invoke,) = [entry for entry in received if entry[2].name.startswith("invoke_agent")]
    (chat,) = [entry for entry in received if entry[2].name.startswith("chat")]
    assert chat[2].trace_id == invoke[2].trace_id
    assert chat[2].parent_span_id == invoke[2].span_id
    assert invoke[2].name == "invoke_agent helper"
    for metadata, resource, _ in (invoke, chat):
        assert resource["service.name"] == "helper"
        assert resource["service.namespace"] == NAMESPACE
        assert resource["k8s.namespace.name"] == NAMESPACE
        assert resource["k8s.deployment.name"] == "helper"
        assert resource["k8s.pod.name"] == POD
        assert resource["k8s.container.name"] == "runtime"
        assert (metadata["x-api-key"], metadata["x-tenant"]) == ("test-token", "team-a")
    assert "Traceback" not in agent.log("facade")


def test_an_agent_sampling_nothing_exports_nothing(tmp_path, receiver, no_otel_environment):
    """spec.tracing.samplingRatio: 0 over the installation's 1 reaches the processes: no span leaves."""
    config, containers = rendered_pod(tmp_path, endpoint=receiver.endpoint, tracing={"samplingRatio": 0})
    pod = {"metadata.name": POD, "metadata.namespace": NAMESPACE}
    envs = {name: kubelet_env(container, pod=pod, secrets=SECRETS) for name, container in containers.items()}
    assert {env["OTEL_TRACES_SAMPLER_ARG"] for env in envs.values()} == {"0"}
    agent = AgentProcesses(config, tmp_path, container_env=envs)
    run_one_turn(agent)
    assert "Traceback" not in agent.log("runtime") + agent.log("facade")
    assert receiver.spans() == []
