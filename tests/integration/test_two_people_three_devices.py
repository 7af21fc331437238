"""Alice with two devices and Bob with one: direct and group conversations, messages both ways,
and every device decrypts every message (issue 2's core scenario)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from client.session import ReceivedMessage, Session

from .conftest import restart

pytestmark = pytest.mark.django_db(transaction=True)


def _texts(session: Session, conversation_id: object) -> list[tuple[int, str, str]]:
    results = session.history(conversation_id)  # type: ignore[arg-type]
    failures = [r for r in results if not isinstance(r, ReceivedMessage)]
    assert failures == []
    return [(r.seq, r.sender_username, r.text) for r in results if isinstance(r, ReceivedMessage)]


def test_every_device_decrypts_every_message_in_direct_and_group(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    alice_laptop = register(names("alice"), "laptop")
    alice_phone = link(alice_laptop, "phone")
    bob = register(names("bob"), "phone")
    carol = register(names("carol"), "tablet")

    direct = alice_laptop.create_conversation([bob.username], kind="direct")
    group = bob.create_conversation([alice_laptop.username, carol.username], kind="group")

    sent_direct = [
        (alice_laptop, "direct 1 from alice's laptop"),
        (bob, "direct 2 from bob"),
        (alice_phone, "direct 3 from alice's phone"),
        (bob, "direct 4 from bob again"),
    ]
    sent_group = [
        (bob, "group 1 from bob"),
        (alice_phone, "group 2 from alice's phone"),
        (carol, "group 3 from carol"),
        (alice_laptop, "group 4 from alice's laptop"),
    ]
    for sender, text in sent_direct:
        sender.send_text(direct.conversation_id, text)
    for sender, text in sent_group:
        sender.send_text(group.conversation_id, text)

    expected_direct = [(i + 1, s.username, t) for i, (s, t) in enumerate(sent_direct)]
    expected_group = [(i + 1, s.username, t) for i, (s, t) in enumerate(sent_group)]
    for device in (alice_laptop, alice_phone, bob):
        assert _texts(restart(device), direct.conversation_id) == expected_direct
    for device in (alice_laptop, alice_phone, bob, carol):
        assert _texts(restart(device), group.conversation_id) == expected_group


def test_non_member_device_cannot_read_the_conversation(
    register: Callable[..., Session], names: Callable[[str], str]
) -> None:
    from client.protocol import ApiError

    alice = register(names("alice"))
    bob = register(names("bob"))
    mallory = register(names("mallory"))
    direct = alice.create_conversation([bob.username], kind="direct")
    alice.send_text(direct.conversation_id, "not for mallory")

    with pytest.raises(ApiError) as excinfo:
        mallory.envelopes(direct.conversation_id)
    assert (excinfo.value.status, excinfo.value.code) == (404, "conversation_not_found")


def test_both_sides_compute_the_same_safety_number(
    register: Callable[..., Session], names: Callable[[str], str]
) -> None:
    alice = register(names("alice"))
    bob = register(names("bob"))
    carol = register(names("carol"))

    number = alice.safety_number(bob.username)
    assert number == bob.safety_number(alice.username)
    assert len(number.replace(" ", "")) == 60
    assert number != alice.safety_number(carol.username)


def test_new_epoch_is_readable_by_every_member_and_old_messages_stay_readable(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    alice = register(names("alice"))
    alice_phone = link(alice, "phone")
    bob = register(names("bob"))
    conversation = alice.create_conversation([bob.username], kind="group")
    alice.send_text(conversation.conversation_id, "in epoch one")

    assert bob.rotate_epoch(conversation.conversation_id) == 2
    alice_phone.send_text(conversation.conversation_id, "in epoch two")

    for device in (alice, alice_phone, bob):
        results = restart(device).history(conversation.conversation_id)
        assert [(r.epoch, r.text) for r in results if isinstance(r, ReceivedMessage)] == [
            (1, "in epoch one"),
            (2, "in epoch two"),
        ]
