"""Loss and recovery (docs/protocol.md 4.8): every device of an account lost.

One device lost while another is left needs nothing new: revoke the lost one from the one left
(`Session.revoke_device`) and link a replacement (`Session.approve_link`), which re-wraps the
whole history for it. With every device lost there is nobody to re-wrap anything and the identity
key is gone too: `identity_reset` makes a new identity key and first device, authenticated by the
account password alone. The account keeps its conversations; its new device asks for their keys
(key requests) and contacts' devices answer once a person verified the new identity key there
(`Session.mark_verified(username, identity_key=...)`).
"""

from __future__ import annotations

import os
import time

from client import protocol as proto
from client.crypto.device_list import ListedDevice, device_list_entry_hash, device_list_next
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.vouch import vouch_sign
from client.session import DeviceSecrets, Rng, Session, Transport


def identity_reset(
    transport: Transport,
    *,
    server_url: str,
    username: str,
    password: str,
    device_name: str,
    rng: Rng = os.urandom,
) -> Session:
    """Replace the account's identity key and every device with a fresh identity key and this new
    device (a new signed device list starting at version 1). Every old device is revoked."""
    identity = IdentityKeyPair.generate(rng)
    device = DeviceKeyPair.generate(rng)
    genesis = device_list_next(
        identity=identity,
        username=username,
        head=None,
        change="created",
        subject=ListedDevice(device.device_id, device.x25519_public_key, device.ed25519_public_key, device_name),
        actor_device_id=device.device_id,
        timestamp_ms=int(time.time() * 1000),
    )
    _, body = transport.execute(
        proto.reset_identity_request(
            username=username,
            password=password,
            identity_key=identity.public_key,
            device_id=device.device_id,
            device_name=device_name,
            x25519_public_key=device.x25519_public_key,
            ed25519_public_key=device.ed25519_public_key,
            vouch_signature=vouch_sign(identity, device, username),
            device_list=genesis,
        )
    )
    secrets = DeviceSecrets(
        server_url=server_url,
        username=username,
        device=device,
        device_name=device_name,
        identity=identity,
        token=body["token"],
        pins={username: identity.public_key},
        device_lists={username: (1, device_list_entry_hash(username=username, entry=genesis))},
    )
    return Session(secrets, transport, rng=rng)
