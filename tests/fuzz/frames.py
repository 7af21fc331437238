"""Hypothesis strategies for fuzzing the WebSocket frame parser (protocol.md 6.2), for the realtime
gateway's tests: `@given(frame=ws_frames())` and send each one on an authenticated connection;
the answer must be an `error` frame or a clean close, never a crash.

A drawn frame is `str` (a text message) or `bytes` (a binary message, which the protocol refuses).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

FRAME_TYPES = ["hello", "send", "ack", "read", "fetch", "typing", "presence", "ping"]
MEMBERS = ["type", "id", "v", "token", "conversation_id", "envelope", "seq", "after", "limit", "state", "usernames"]

# Any JSON value, including deep nesting, huge numbers and odd strings.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@st.composite
def _plausible_frame(draw: st.DrawFn) -> str:
    """A JSON object with a known `type` and protocol member names holding values of any type."""
    frame: dict[str, Any] = {"type": draw(st.sampled_from(FRAME_TYPES) | json_values)}
    for member in draw(st.lists(st.sampled_from(MEMBERS), max_size=6, unique=True)):
        frame[member] = draw(json_values)
    return json.dumps(frame)


def ws_frames(*, max_frame_bytes: int = 131072) -> st.SearchStrategy[str | bytes]:
    """Malformed JSON, wrong types, unknown types, binary frames and frames just over and far
    over `max_frame_bytes` (`E2EE_WS_MAX_FRAME_BYTES`)."""
    huge = st.sampled_from([max_frame_bytes + 1, 4 * max_frame_bytes]).map(
        lambda n: json.dumps({"type": "ping", "id": "x" * n})
    )
    return st.one_of(
        _plausible_frame(),
        json_values.map(json.dumps),  # valid JSON, mostly not an object
        st.text(max_size=200),  # mostly not JSON at all
        st.sampled_from(["", "{", "[" * 10000, '{"type": "ping"', '{"type": NaN}', "\ud800", "null"]),
        st.binary(max_size=200),
        huge,
    )
