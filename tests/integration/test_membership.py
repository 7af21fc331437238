"""Membership changes through real SDK devices (docs/protocol.md 2.15): a removed member reads
nothing that follows, even handed the ciphertext; a newcomer reads the history when the
conversation shares it and only from its join on when not; after a member leaves, the others
start a new epoch before their next message, told live by a `conversation_members` frame."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from client import frames as fr
from client.crypto.errors import DecryptFailure
from client.protocol import ApiError
from client.realtime import Backoff, RealtimeClient
from client.session import ReceivedMessage, Session, UndecryptableMessage
from client.store.messages import MessageStore
from client.transport.http import HttpTransport
from tests.integration.test_revocation import ColludingTransport, _reason

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_removed_member_cannot_decrypt_what_follows_even_with_the_ciphertext(
    register: Callable[..., Session], names: Callable[[str], str], server_url: str
) -> None:
    from conversations.models import WrappedKey

    alice, bob, carol = register(names("alice")), register(names("bob")), register(names("carol"))
    cid = alice.create_conversation([bob.username, carol.username]).conversation_id
    carol.send_text(cid, "hi all")
    last_before = bob.send_text(cid, "hi carol").seq
    assert all(isinstance(r, ReceivedMessage) for r in carol.history(cid))

    conversation = alice.remove_member(cid, carol.username)

    assert conversation is not None and conversation.members == sorted([alice.username, bob.username])
    assert conversation.current_epoch == 2
    bob.send_text(cid, "carol is gone")
    alice.send_text(cid, "yes")
    with pytest.raises(ApiError) as refused:
        carol.history(cid)
    assert (refused.value.status, refused.value.code) == (404, "conversation_not_found")
    helper = HttpTransport(server_url, token=alice.secrets.token)
    colluding = Session(carol.secrets, ColludingTransport(helper, carol.device_id))
    colluding._chat_keys = dict(carol._chat_keys)
    after = [e for e in alice.envelopes(cid) if e.seq > last_before]
    assert len(after) == 2
    for envelope in after:
        assert _reason(colluding, envelope) in (DecryptFailure.MISSING_KEY, DecryptFailure.UNKNOWN_EPOCH)
    assert not WrappedKey.objects.filter(recipient_device_id=carol.device_id, epoch__number=2).exists()
    helper.close()


def test_a_newcomer_reads_the_whole_history_when_it_is_shared(
    register: Callable[..., Session], names: Callable[[str], str]
) -> None:
    alice, bob, carol = register(names("alice")), register(names("bob")), register(names("carol"))
    cid = alice.create_conversation([bob.username]).conversation_id
    alice.send_text(cid, "one")
    bob.rotate_epoch(cid)
    bob.send_text(cid, "two")

    conversation = alice.add_member(cid, carol.username)

    assert conversation.current_epoch == 2 and carol.username in conversation.members
    alice.send_text(cid, "three")
    read = carol.history(cid)
    assert [r.text for r in read if isinstance(r, ReceivedMessage)] == ["one", "two", "three"]


def test_a_newcomer_reads_only_from_its_join_when_history_is_not_shared(
    register: Callable[..., Session], names: Callable[[str], str]
) -> None:
    alice, bob, carol = register(names("alice")), register(names("bob")), register(names("carol"))
    created = alice.create_conversation([bob.username], share_history=False)
    assert created.share_history is False
    cid = created.conversation_id
    alice.send_text(cid, "before carol")
    bob.send_text(cid, "still before")

    conversation = bob.add_member(cid, carol.username)

    assert conversation.current_epoch == 2  # a new epoch, so the current one's messages stay closed
    alice.send_text(cid, "welcome carol")
    read = carol.history(cid)
    assert [type(r) for r in read] == [UndecryptableMessage, UndecryptableMessage, ReceivedMessage]
    assert {r.reason for r in read if isinstance(r, UndecryptableMessage)} == {DecryptFailure.MISSING_KEY}
    assert read[2].text == "welcome carol"  # type: ignore[union-attr]


@pytest.mark.slow
def test_after_a_member_leaves_the_others_rotate_before_their_next_message(
    daphne_url: str, names: Callable[[str], str], tmp_path: Path
) -> None:
    from tests.integration.conftest import PASSWORD

    def make(name: str) -> Session:
        return Session.register(
            HttpTransport(daphne_url), server_url=daphne_url, username=names(name), password=PASSWORD, device_name="d"
        )

    alice, bob, carol = make("alice"), make("bob"), make("carol")
    cid = alice.create_conversation([bob.username, carol.username]).conversation_id
    assert bob.send_text(cid, "before").epoch == 1
    (tmp_path / "bob").mkdir()

    async def scenario() -> tuple[fr.ConversationMembers, int]:
        bob_rt = RealtimeClient(bob, MessageStore.open_in(tmp_path / "bob"), backoff=Backoff(initial=0.05, cap=0.5))
        told: asyncio.Queue[fr.ConversationMembers] = asyncio.Queue()
        bob_rt.on_members(told.put)
        await bob_rt.start()
        await bob_rt.wait_caught_up(20)
        await asyncio.to_thread(carol.leave, cid)  # carol cannot rotate for the others
        frame = await asyncio.wait_for(told.get(), 20)
        seq = await (await bob_rt.send_text(cid, "after carol left")).wait(20)
        await bob_rt.close()
        bob_rt.store.close()
        return frame, seq

    frame, seq = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert (frame.change, frame.username, frame.by) == ("left", carol.username, carol.username)
    assert frame.members == sorted([alice.username, bob.username])
    [envelope] = [e for e in alice.envelopes(cid) if e.seq == seq]
    assert envelope.epoch == 2  # bob started epoch 2 without carol before sending
    assert alice.decrypt(envelope).text == "after carol left"
    for session in (alice, bob, carol):
        session.transport.close()  # type: ignore[attr-defined]
