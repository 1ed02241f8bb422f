"""Any text a client sends gives a frame or a typed protocol error, never anything else.

Property-based: hypothesis generates arbitrary text, arbitrary JSON, and
objects shaped like each client frame with fields of every type, since a
parser that raises anything but ``ProtocolError`` turns a client's input into
``INTERNAL`` (or worse, a dropped connection).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnia.protocol.errors import ErrorCode, ProtocolError
from omnia.protocol.frames import parse_client_frame

MAX_BYTES = 64 * 1024
FRAME_TYPES = ("message", "tool_result", "approval", "cancel", "ping")
FIELDS = ("type", "id", "content", "metadata", "tool_call_id", "call_id", "is_error", "approved", "reason")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

frame_like = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(FRAME_TYPES) | st.text(max_size=12) | st.integers(),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6),
)

fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_refuses(text: str) -> None:
    try:
        parse_client_frame(text, max_bytes=MAX_BYTES)
    except ProtocolError as error:
        assert error.code in (ErrorCode.INVALID_MESSAGE, ErrorCode.MESSAGE_TOO_LARGE), error.code
        assert error.code != ErrorCode.INTERNAL


@fuzz
@given(st.text(max_size=300))
def test_arbitrary_text_is_a_frame_or_a_protocol_error(text):
    parses_or_refuses(text)


@fuzz
@given(json_values)
def test_arbitrary_json_is_a_frame_or_a_protocol_error(value):
    parses_or_refuses(json.dumps(value))


@fuzz
@given(frame_like)
def test_frame_shaped_objects_with_fields_of_any_type_are_a_frame_or_a_protocol_error(frame):
    parses_or_refuses(json.dumps(frame))


@fuzz
@given(st.integers(min_value=1, max_value=50_000), st.sampled_from(["[", "{\"a\":", "[{\"type\":"]))
def test_deep_nesting_is_refused_as_invalid(depth, opener):
    parses_or_refuses(opener * depth)
