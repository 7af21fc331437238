"""The history policy hook of key requests (protocol.md 4.8)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from client import protocol as proto
from client.key_requests import history_shared


def test_a_conversation_without_a_policy_shares_history() -> None:
    conversation = proto.Conversation(uuid.uuid4(), "group", ["alice", "bob"], 1, 0, "2026-11-26T01:00:00Z")
    assert history_shared(conversation)


def test_the_share_history_field_decides_when_present() -> None:
    assert not history_shared(SimpleNamespace(share_history=False))
    assert history_shared(SimpleNamespace(share_history=True))
