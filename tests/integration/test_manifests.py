"""Epoch manifests (docs/protocol.md 2.18) through a real server: every place that starts an epoch
uploads a manifest signed by the creating device that names exactly the devices the key was
wrapped for, with the device-list version and hash of each member."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from client.crypto.manifest import epoch_manifest_verify
from client.session import Session

pytestmark = pytest.mark.django_db(transaction=True)


def _check_every_epoch(conversation_id: uuid.UUID, by_device: dict[uuid.UUID, Session]) -> int:
    from conversations.models import ChatKeyEpoch, WrappedKey

    epochs = ChatKeyEpoch.objects.filter(conversation_id=conversation_id).order_by("number")
    for epoch in epochs:
        creator = by_device[epoch.created_by_id]
        manifest = epoch_manifest_verify(
            data=bytes(epoch.manifest),
            signature=bytes(epoch.manifest_signature),
            conversation_id=epoch.conversation_id,
            epoch=epoch.number,
            creator_ed25519_public_key=creator.secrets.device.ed25519_public_key,
        )
        wrapped_at_creation = set(
            WrappedKey.objects.filter(epoch=epoch, wrapping_device_id=epoch.created_by_id).values_list(
                "recipient_device_id", flat=True
            )
        )
        assert manifest.creator_device_id == creator.device_id
        assert set(manifest.devices()) == wrapped_at_creation
        for member in manifest.members:
            assert (member.device_list_version, member.device_list_hash) == creator.secrets.device_lists[
                member.username
            ]
    return len(epochs)


def test_create_rotate_add_and_remove_each_upload_a_manifest_of_exactly_the_wrapped_devices(
    register: Callable[[str, str], Session], names: Callable[[str], str]
) -> None:
    alice, bob, carol = (register(names(n), "laptop") for n in ("alice", "bob", "carol"))
    by_device: dict[uuid.UUID, Session] = {s.device_id: s for s in (alice, bob, carol)}
    shared = alice.create_conversation([bob.username]).conversation_id
    closed = alice.create_conversation([bob.username], share_history=False).conversation_id

    bob.rotate_epoch(shared)  # epoch 2, by bob
    alice.add_member(closed, carol.username)  # epoch 2 for all three, carol included
    bob.remove_member(closed, alice.username)  # epoch 3 without alice

    assert _check_every_epoch(shared, by_device) == 2
    assert _check_every_epoch(closed, by_device) == 3
    # And every member reads every epoch it holds a key of (the manifests verify on the client).
    assert carol.chat_key(carol.conversation(closed, refresh=True), 3)
    assert bob.chat_key(bob.conversation(shared, refresh=True), 2)
