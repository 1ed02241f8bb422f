"""Structured logs: one JSON object per line, joined to sessions and traces."""

from __future__ import annotations

import io
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


class _Terminal(io.StringIO):
    """What ``logs.configure`` sees of a terminal: a stream that says it is one."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        pytest.param(_Terminal(), {}, "console", id="terminal"),
        pytest.param(io.StringIO(), {}, "json", id="pipe-or-file"),
        pytest.param(_Terminal(), {"OMNIA_LOG_FORMAT": "json"}, "json", id="json-asked-in-a-terminal"),
        pytest.param(io.StringIO(), {"OMNIA_LOG_FORMAT": "Console"}, "console", id="console-asked-in-a-pipe"),
    ],
)
def test_the_format_follows_where_the_lines_go_unless_asked(stream, env, expected):
    assert logs.choose_format(stream, env=env) == expected


def test_an_unknown_format_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="json, console"):
        logs.choose_format(io.StringIO(), env={"OMNIA_LOG_FORMAT": "xml"})


def test_in_a_terminal_a_turn_is_one_readable_line(restore_root_logger):
    """``omnia run --verbose`` in a shell: no JSON to read, the turn's facts on one line."""
    terminal = _Terminal()
    logs.configure(level="info", component="runtime", stream=terminal, env={"NO_COLOR": "1"})
    logging.getLogger("omnia.agent.loop").info(
        "turn done", extra={"session_id": "s-1", "input_tokens": 12, "output_tokens": 30, "latency_ms": 840}
    )
    (line,) = terminal.getvalue().splitlines()
    assert not line.startswith("{") and "\x1b" not in line
    assert "turn done" in line
    for field in ("session_id=s-1", "input_tokens=12", "output_tokens=30", "latency_ms=840", "component=runtime"):
        assert field in line


def test_json_lines_carry_no_terminal_colour_codes(restore_root_logger):
    """uvicorn attaches a coloured copy of some messages; a JSON line keeps neither it nor any escape."""
    pipe = io.StringIO()
    # As uvicorn leaves its loggers after a server ran in this process with its own logging set-up.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn").propagate = False
    logs.configure(level="info", component="facade", stream=pipe, env={})
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
    )
    logging.getLogger("omnia.test").info("quoted \x1b[31mred\x1b[0m output", extra={"detail": "\x1b[1mbold\x1b[0m"})
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2 and all("\\u001b" not in line and "\x1b" not in line for line in lines)
    started, quoted = (json.loads(line) for line in lines)
    assert started["event"] == "Started server process [42]" and "color_message" not in started
    assert (quoted["event"], quoted["detail"]) == ("quoted red output", "bold")
