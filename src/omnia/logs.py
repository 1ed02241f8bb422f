"""Structured JSON logs for the long-running processes.

Standard-library loggers are kept (grpc, uvicorn and kopf use them) and
rendered by structlog as one JSON object per line; ``extra={...}`` fields,
the context bound with ``structlog.contextvars`` (the runtime binds
``session_id`` for a turn) and the current span's ``trace_id``/``span_id``
become top-level keys, so logs join with traces and metrics.
"""

from __future__ import annotations

import logging
import sys

import structlog

from omnia import telemetry


def configure(*, level: str = "info", component: str) -> None:
    renderer = structlog.processors.JSONRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            telemetry.add_trace_ids,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_component(component),
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _add_component(component: str):
    def processor(logger, method, event_dict):
        event_dict.setdefault("component", component)
        return event_dict

    return processor
