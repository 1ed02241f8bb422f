"""Structured logs for the long-running processes: JSON for machines, lines for people.

Standard-library loggers are kept (grpc, uvicorn and kopf use them) and
rendered by structlog; ``extra={...}`` fields, the context bound with
``structlog.contextvars`` (the runtime binds ``session_id`` for a turn) and
the current span's ``trace_id``/``span_id`` become keys of the entry, so logs
join with traces and metrics.

The format follows where the lines go. To a terminal (``omnia run
--verbose`` in a shell) each entry is one readable line, coloured unless
``NO_COLOR`` is set; anywhere else (a pod, a pipe, a file) it is one JSON
object per line, and a JSON line never carries terminal colour codes: the
colour variants some libraries attach (uvicorn's ``color_message``) are
dropped and escape sequences are removed from every text value.
``OMNIA_LOG_FORMAT=json`` or ``console`` overrides the choice.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Literal, TextIO

import structlog

from omnia import telemetry

Format = Literal["json", "console"]
FORMATS: tuple[Format, ...] = ("json", "console")

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_COLOUR_VARIANTS = ("color_message",)
_OWN_HANDLERS = frozenset({"uvicorn"})
"""Libraries whose loggers bring handlers of their own, which would write around ours."""


def choose_format(stream: TextIO, *, env: Mapping[str, str] = os.environ) -> Format:
    """``OMNIA_LOG_FORMAT`` when set, else console for a terminal and JSON for anything else."""
    chosen = env.get("OMNIA_LOG_FORMAT", "").strip().lower()
    if chosen:
        if chosen not in FORMATS:
            raise ValueError(f"OMNIA_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {chosen!r}")
        return chosen  # type: ignore[return-value]
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(
    *,
    level: str = "info",
    component: str,
    stream: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Send every log record of this process to ``stream`` (standard error by default)."""
    stream = sys.stderr if stream is None else stream
    console = choose_format(stream, env=env) == "console"
    if console:
        timestamper = structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)
        renderer = structlog.dev.ConsoleRenderer(colors=not env.get("NO_COLOR"), sort_keys=False)
        finishing = [renderer]
    else:
        timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
        finishing = [structlog.processors.format_exc_info, _plain_text, structlog.processors.JSONRenderer()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            telemetry.add_trace_ids,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_colour_variants,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_component(component),
            *finishing,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Every record goes through the root's handler at the root's level: undo
    # what a library's own logging set-up did (uvicorn's handlers, levels and
    # propagate=False; a dictConfig that disabled existing loggers).
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.disabled = False
            if name.split(".")[0] in _OWN_HANDLERS:
                logger.handlers.clear()
                logger.propagate = True
                logger.setLevel(logging.NOTSET)


def _add_component(component: str):
    def processor(logger, method, event_dict):
        event_dict.setdefault("component", component)
        return event_dict

    return processor


def _drop_colour_variants(logger, method, event_dict):
    for key in _COLOUR_VARIANTS:
        event_dict.pop(key, None)
    return event_dict


def _plain_text(logger, method, event_dict):
    """Removes terminal escape sequences from text values (a message may quote coloured output)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "\x1b" in value:
            event_dict[key] = _ANSI_ESCAPE.sub("", value)
    return event_dict
