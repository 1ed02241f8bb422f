"""Traces: OpenTelemetry with the GenAI semantic conventions.

The agent loop opens an ``invoke_agent`` span per turn, a ``chat`` span per
model call and an ``execute_tool`` span per tool call (attribute names from
the OpenTelemetry GenAI conventions: ``gen_ai.*``). A turn's span joins the
trace of the client's request: the facade passes the W3C ``traceparent`` to
the runtime as gRPC metadata.

Exporting is configured by the standard OpenTelemetry environment variables:
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
set, spans go out over OTLP/gRPC in batches; without it no tracer provider is
installed and tracing costs next to nothing. The operator sets the same
variables in agent pods (``omnia.operator.builders.tracing_env``), so a pod and
``omnia run`` under a collector's environment behave alike.

Every variable is read from the mapping given to :func:`tracer_provider`, not
from the SDK's own look-ups in ``os.environ``: headers, sampler and resource
all come from one place, and the tests can give a whole environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.re import parse_env_headers

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


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
"""The ``OTEL_TRACES_SAMPLER`` values this process understands, as the specification names them."""


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the SDK cannot use; the message names the variable."""


def configure(*, service_name: str, env: Mapping[str, str]) -> trace.TracerProvider | None:
    """Install an OTLP-exporting tracer provider when the environment asks for one."""
    provider = tracer_provider(service_name=service_name, env=env)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


def tracer_provider(*, service_name: str, env: Mapping[str, str]):
    """The tracer provider ``env`` describes, exporting over OTLP/gRPC; ``None`` without an endpoint.

    ``service_name`` is the default of ``OTEL_SERVICE_NAME``. Raises
    :class:`TracingConfigError` for an unknown sampler or a ratio outside [0, 1].
    """
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    headers = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
    insecure = env.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        headers=parse_env_headers(headers, liberal=True) if headers else None,
        insecure=insecure.strip().lower() == "true" if insecure else None,
    )
    provider = TracerProvider(resource=resource(service_name=service_name, env=env), sampler=sampler(env))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def resource(*, service_name: str, env: Mapping[str, str]):
    """``OTEL_RESOURCE_ATTRIBUTES`` (``key=value`` pairs, values percent-encoded) and ``OTEL_SERVICE_NAME``."""
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, str] = {}
    for item in (env.get("OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
        key, equals, value = item.partition("=")
        if equals and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    attributes["service.name"] = env.get("OTEL_SERVICE_NAME") or service_name
    return Resource.create(attributes)


def sampler(env: Mapping[str, str]):
    """``OTEL_TRACES_SAMPLER`` with ``OTEL_TRACES_SAMPLER_ARG``; the SDK's default, parent-based always-on, without."""
    name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    if name not in SAMPLERS:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER: {name!r} is not one of {', '.join(SAMPLERS)}")
    argument = (env.get("OTEL_TRACES_SAMPLER_ARG") or "1.0").strip()
    try:
        ratio = float(argument)
    except ValueError:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG: {argument!r} is not a number") from None
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG: {ratio} is not between 0 and 1")
    from opentelemetry.sdk.trace import sampling

    root = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF}.get(
        name.removeprefix("parentbased_")
    ) or sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def add_trace_ids(logger, method, event_dict):
    """structlog processor: the current span's ids, so logs join their traces."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict
