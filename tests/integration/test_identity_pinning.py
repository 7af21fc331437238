"""A server that swaps an account's identity key (to vouch devices of its own) is caught: contacts
pinned the old key on first sight and surface the change instead of trusting the new one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from client.crypto.errors import DecryptFailure
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.vouch import vouch_sign
from client.errors import IdentityChangedError
from client.session import ReceivedMessage, Session, UndecryptableMessage

from .conftest import restart

pytestmark = pytest.mark.django_db(transaction=True)


def test_swapped_identity_key_is_refused_and_reported(
    register: Callable[..., Session], names: Callable[[str], str]
) -> None:
    from accounts.models import User
    from devices.models import Device

    alice = register(names("alice"))
    bob = register(names("bob"))
    conversation = alice.create_conversation([bob.username], kind="direct")
    alice.send_text(conversation.conversation_id, "before the swap")
    assert isinstance(bob.history(conversation.conversation_id)[0], ReceivedMessage)  # bob pins alice's key

    # The server replaces alice's identity key and her device's vouch with ones it made itself,
    # so the directory is internally consistent, just not alice's.
    forged_identity = IdentityKeyPair.generate()
    device = Device.objects.get(id=alice.device_id)
    forged_vouch = vouch_sign(
        forged_identity,
        DeviceKeyPair.from_private_dict(alice.secrets.device.to_private_dict()),
        alice.username,
    )
    User.objects.filter(username=alice.username).update(identity_key=forged_identity.public_key)
    Device.objects.filter(id=device.id).update(vouch_signature=forged_vouch)

    bob_later = restart(bob)
    with pytest.raises(IdentityChangedError):
        bob_later.directory(alice.username)
    with pytest.raises(IdentityChangedError):
        bob_later.safety_number(alice.username)
    with pytest.raises(IdentityChangedError):
        bob_later.create_conversation([alice.username], kind="group")
    [result] = bob_later.history(conversation.conversation_id)
    assert isinstance(result, UndecryptableMessage)
    assert result.reason == DecryptFailure.IDENTITY_CHANGED
