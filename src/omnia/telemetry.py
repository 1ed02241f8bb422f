"""Traces: OpenTelemetry with the GenAI semantic conventions.

The agent loop opens an ``invoke_agent`` span per turn, a ``chat`` span per
model call and an ``execute_tool`` span per tool call (attribute names from
the OpenTelemetry GenAI conventions: ``gen_ai.*``). A turn's span joins the
trace of the client's request: the facade passes the W3C ``traceparent`` to
the runtime as gRPC metadata.

Exporting is configured by the standard OpenTelemetry environment variables:
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
set, spans go out over OTLP/gRPC in batches; without it no tracer provider is
installed and tracing costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "omnia"

# gen_ai.provider.name values: the conventions' well-known names where there
# is one, the engine's name otherwise.
PROVIDER_NAMES = {
    "claude": "anthropic",
    "openai": "openai",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
    "vllm": "vllm",
    "mock": "mock",
    "local": "llama.cpp",
}

_PROPAGATOR = TraceContextTextMapPropagator()


def provider_name(provider_type: str) -> str:
    return PROVIDER_NAMES.get(provider_type, provider_type)


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent named by a W3C ``traceparent``; ``None`` if absent or malformed."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def configure(*, service_name: str, env: Mapping[str, str]) -> trace.TracerProvider | None:
    """Install an OTLP-exporting tracer provider when the environment asks for one."""
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def add_trace_ids(logger, method, event_dict):
    """structlog processor: the current span's ids, so logs join their traces."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict
