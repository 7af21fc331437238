"""How a message payload (protocol.md 2.3) is shown to a person: the one rule every view uses."""

from __future__ import annotations

from typing import Any


def payload_text(payload: dict[str, Any] | None, failure: object = None) -> str:
    """The text of a `text` payload; a marker for an undecryptable message (`payload` None, with
    its failure reason) or for a type this client does not know (shown, never dropped)."""
    if payload is None:
        return f"[undecryptable: {failure}]"
    if payload.get("type") == "text" and isinstance(payload.get("body"), str):
        return str(payload["body"])
    if payload.get("type") == "attachment" and isinstance(payload.get("name"), str):
        size = payload.get("size")
        return f"[attachment {payload['name']!r}, {size if isinstance(size, int) else '?'} bytes]"
    return f"[unsupported message type {payload.get('type')!r}]"
