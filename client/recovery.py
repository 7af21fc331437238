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

from client import protocol as proto
from client.session import Rng, Session, Transport


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
    # The same first device as `Session.register`, sent to the reset endpoint instead.
    return Session._first_device(
        transport,
        proto.reset_identity_request,
        server_url=server_url,
        username=username,
        password=password,
        device_name=device_name,
        rng=rng,
    )
