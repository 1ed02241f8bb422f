"""Structured logs: one JSON object per line, joined to sessions and traces."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from omnia import logs


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def test_log_lines_carry_component_session_and_trace_ids(capsys, restore_root_logger):
    logs.configure(level="info", component="runtime")
    tracer = TracerProvider().get_tracer("t")
    structlog.contextvars.bind_contextvars(session_id="s-123")
    with tracer.start_as_current_span("invoke_agent x") as span:
        logging.getLogger("omnia.test").info("turn started", extra={"turn": 3})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "turn started" and line["level"] == "info"
    assert (line["component"], line["session_id"], line["turn"]) == ("runtime", "s-123", 3)
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


def test_log_lines_outside_a_span_have_no_trace_ids(capsys, restore_root_logger):
    logs.configure(level="info", component="facade")
    logging.getLogger("omnia.test").warning("plain")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "trace_id" not in line and line["component"] == "facade"
