from __future__ import annotations

from typing import Any

import pytest

from common.testing import forbid_writes
from conversations.models import Conversation
from messaging.selectors import message_history_page
from messaging.services import envelope_send
from tests.builders import Dev, envelope_content, make_conversation, make_dev

pytestmark = pytest.mark.django_db


def _fill(dev: Dev, conversation: Conversation, count: int) -> None:
    for _ in range(count):
        envelope_send(device=dev.device, sender_device_id=dev.device.id, content=envelope_content(conversation))


def test_history_pages_through_everything_in_order(alice: Dev) -> None:
    conversation = make_conversation(alice)
    _fill(alice, conversation, 12)
    other = make_conversation(alice)
    _fill(alice, other, 3)  # must not leak into the first conversation's pages

    seen: list[int] = []
    after, pages = 0, 0
    while True:
        page = message_history_page(conversation=conversation, after=after, limit=5)
        pages += 1
        seen += [m.seq for m in page.messages]
        assert all(m.conversation_id == conversation.pk for m in page.messages)
        after = page.next_after
        if not page.has_more:
            break
    assert seen == list(range(1, 13))
    assert pages == 3
    assert after == 12


@pytest.mark.parametrize(
    ("after", "limit", "seqs", "has_more", "next_after"),
    [
        (0, 100, [1, 2, 3, 4, 5], False, 5),
        (0, 5, [1, 2, 3, 4, 5], False, 5),  # exactly the rest: no more
        (0, 4, [1, 2, 3, 4], True, 4),
        (2, 2, [3, 4], True, 4),
        (4, 1, [5], False, 5),
        (5, 10, [], False, 5),  # nothing after the cursor: next_after stays
        (99, 10, [], False, 99),
    ],
)
def test_history_page_bounds(
    alice: Dev, after: int, limit: int, seqs: list[int], has_more: bool, next_after: int
) -> None:
    conversation = make_conversation(alice)
    _fill(alice, conversation, 5)
    page = message_history_page(conversation=conversation, after=after, limit=limit)
    assert ([m.seq for m in page.messages], page.has_more, page.next_after) == (seqs, has_more, next_after)


def test_history_page_is_one_read_only_query(alice: Dev, django_assert_num_queries: Any) -> None:
    bob = make_dev()
    conversation = make_conversation(alice, bob.user)
    for _ in range(5):
        _fill(alice, conversation, 1)
        _fill(bob, conversation, 1)

    with forbid_writes(), django_assert_num_queries(1):
        page = message_history_page(conversation=conversation, after=0, limit=100)
        senders = [m.sender_device.user.username for m in page.messages]

    assert senders == [alice.user.username, bob.user.username] * 5
