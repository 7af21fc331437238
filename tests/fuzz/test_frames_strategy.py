"""The frame strategy the realtime gateway's fuzz uses draws every kind of bad frame."""

from __future__ import annotations

import json

from hypothesis import given, settings

from tests.fuzz.frames import ws_frames


def _kind(frame: str | bytes) -> str:
    if isinstance(frame, bytes):
        return "binary"
    if len(frame) > 131072:
        return "huge"
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        return "malformed"
    return "object" if isinstance(value, dict) else "not an object"


def test_every_kind_is_drawn() -> None:
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(frame=ws_frames())
    def draw(frame: str | bytes) -> None:
        seen.add(_kind(frame))

    draw()
    assert seen == {"binary", "huge", "malformed", "object", "not an object"}
