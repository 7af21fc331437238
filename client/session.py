"""A logged-in device: the SDK's main entry point.

`Session` is the synchronous shell around the sans-I/O core (`client.core`): the core holds every
rule about trust and keys and says what it lacks; `Session.fetch` gets that over the transport and
the core is called again. It keeps the device's secrets (persisted by `client.store.keystore`),
the contacts' pinned identity keys and, in memory only, the ChatKeys it has unwrapped.

Its operations live in one module per subdomain, each a set of functions of a session that are
also its methods: `client.linking` (linking and revoking devices), `client.trust` (directories,
device lists, safety numbers), `client.keyring` (conversations' ChatKey epochs, rotation,
membership), `client.messages` (sending, receiving, attachments, history), like
`client.recovery` and `client.key_requests`. This module keeps accounts, push targets and the
cached conversations.

Trust rules (docs/protocol.md §2): a device is trusted only if it is on its account's signed device
list (2.9), verified from version 1 under the pinned identity key and never older than the newest
version seen, and its vouch verifies; keys are wrapped only for trusted devices (a device the
server adds or hides is refused and reported), wrapped keys are accepted only from trusted devices
of members, and messages only from trusted senders.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from client import keyring, linking, messages, trust
from client import protocol as proto
from client.core.machine import Core
from client.core.model import DeviceSecrets, MessageResult, ReceivedMessage, TrustedDirectory, UndecryptableMessage
from client.core.needs import ConversationNeeded, DeviceListNeeded, DirectoryNeeded, Fetches, Need, NeedError
from client.crypto.device_list import DeviceListError, ListedDevice, device_list_entry_hash, device_list_next
from client.crypto.encoding import b64d
from client.crypto.fingerprint import device_fingerprint
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.vouch import vouch_sign
from client.errors import SdkError
from client.linking import LinkResult, RevocationResult
from client.protocol import ApiError

__all__ = [
    "DeviceSecrets",
    "LinkResult",
    "MessageResult",
    "ReceivedMessage",
    "RevocationResult",
    "Session",
    "TrustedDirectory",
    "UndecryptableMessage",
]

T = TypeVar("T")
Rng = Callable[[int], bytes]


class Transport(Protocol):
    token: str | None

    def execute(self, request: proto.Request) -> tuple[int, Any]: ...


class Session:
    def __init__(self, secrets: DeviceSecrets, transport: Transport, *, rng: Rng = os.urandom) -> None:
        self.secrets = secrets
        self.transport = transport
        self.transport.token = secrets.token
        self.rng = rng
        # Every rule about trust and keys, and what this device knows (sans I/O): this class
        # fetches what the core says it lacks (`fetch`) and calls it again.
        self.core = Core(secrets)

    # -- the core's shell: fetch what it lacks -----------------------------------------------------

    def fetch(self, need: Need, fetches: Fetches) -> None:
        """Fetch what the core lacks and hand it over (blocking HTTP); a failure is recorded in
        `fetches`, for the core to raise where the data would have been used."""
        try:
            if isinstance(need, ConversationNeeded):
                self.conversation(need.conversation_id, refresh=True)
            elif isinstance(need, DirectoryNeeded):
                self.directory(need.username, refresh=True)
            elif isinstance(need, DeviceListNeeded):
                self.device_list(need.username)
            else:
                _, body = self.transport.execute(proto.keys_request(need.conversation_id))
                records = [proto.WrappedKeyRecord.parse(raw) for raw in body["keys"]]
                self.core.keys.learn(need.conversation_id, records)
        except (ApiError, SdkError, DeviceListError) as exc:
            fetches.record(need, exc)
        else:
            fetches.record(need)

    def resolve(self, step: Callable[[Fetches], T]) -> T:
        """Run one step of the core, fetching whatever it lacks, until it has an answer."""
        fetches = Fetches()
        while True:
            try:
                return step(fetches)
            except NeedError as missing:
                self.fetch(missing.need, fetches)

    @property
    def list_stale_grace_ms(self) -> int:
        """How long after a device-list change a sender may still name the version before it (2.19)."""
        return self.core.trust.list_stale_grace_ms

    @list_stale_grace_ms.setter
    def list_stale_grace_ms(self, value: int) -> None:
        self.core.trust.list_stale_grace_ms = value

    @property
    def _chat_keys(self) -> dict[tuple[uuid.UUID, int], bytes]:
        """The ChatKeys unwrapped so far (memory only; tests copy them to play a colluding device)."""
        return self.core.keys.chat_keys

    @_chat_keys.setter
    def _chat_keys(self, value: dict[tuple[uuid.UUID, int], bytes]) -> None:
        self.core.keys.chat_keys = value

    # -- accounts and devices ------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        transport: Transport,
        *,
        server_url: str,
        username: str,
        password: str,
        device_name: str,
        rng: Rng = os.urandom,
    ) -> Session:
        """Create an account: a fresh identity key and a first device it vouches for."""
        return cls._first_device(
            transport,
            proto.register_request,
            server_url=server_url,
            username=username,
            password=password,
            device_name=device_name,
            rng=rng,
        )

    @classmethod
    def _first_device(
        cls,
        transport: Transport,
        build_request: Callable[..., proto.Request],
        *,
        server_url: str,
        username: str,
        password: str,
        device_name: str,
        rng: Rng,
    ) -> Session:
        """A fresh identity key and a first device it vouches for, announced by a genesis device
        list (version 1); `build_request` sends them (`register_request`, or
        `reset_identity_request` for `client.recovery.identity_reset`)."""
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
        request = build_request(
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
        _, body = transport.execute(request)
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
        return cls(secrets, transport, rng=rng)

    @classmethod
    def login(
        cls,
        transport: Transport,
        *,
        server_url: str,
        username: str,
        password: str,
        device_name: str,
        rng: Rng = os.urandom,
    ) -> Session:
        """Log in from a new device. It stays pending until an active device approves its link
        code (`request_link` here, `approve_link` there, then `complete_link` here)."""
        device = DeviceKeyPair.generate(rng)
        request = proto.login_request(
            username=username,
            password=password,
            device_id=device.device_id,
            device_name=device_name,
            x25519_public_key=device.x25519_public_key,
            ed25519_public_key=device.ed25519_public_key,
        )
        _, body = transport.execute(request)
        secrets = DeviceSecrets(
            server_url=server_url,
            username=username,
            device=device,
            device_name=device_name,
            identity=None,
            token=body["token"],
        )
        return cls(secrets, transport, rng=rng)

    @property
    def username(self) -> str:
        return self.secrets.username

    @property
    def device_id(self) -> uuid.UUID:
        return self.secrets.device.device_id

    @property
    def fingerprint(self) -> str:
        d = self.secrets.device
        return device_fingerprint(d.x25519_public_key, d.ed25519_public_key)

    def me(self) -> dict[str, Any]:
        _, body = self.transport.execute(proto.me_request())
        self.core.trust.pin(self.username, b64d(body["identity_key"], length=32))
        return dict(body)

    def own_devices(self) -> list[proto.PublicDevice]:
        _, body = self.transport.execute(proto.own_devices_request())
        return [proto.PublicDevice.parse(d) for d in body["devices"]]

    def logout(self) -> None:
        self.transport.execute(proto.logout_request())
        self.secrets.token = None
        self.transport.token = None

    # -- push notifications (docs/protocol.md 4.6) -------------------------------------------------

    def push_target_set(self, *, kind: str, url: str, keys: dict[str, str] | None = None) -> proto.PushTarget:
        """Register (or replace) where the server wakes this device when it is not connected:
        `webhook` (a relay's URL; keep the returned `secret` to verify each wake-up) or `webpush`
        (a browser's PushSubscription endpoint and `keys`). Wake-ups carry no content."""
        _, body = self.transport.execute(proto.push_target_set_request(kind=kind, url=url, keys=keys))
        return proto.PushTarget.parse(body)

    def push_target(self) -> proto.PushTarget | None:
        """This device's push target (never its secret), or None."""
        try:
            _, body = self.transport.execute(proto.push_target_get_request())
        except proto.ApiError as exc:
            if exc.code == "push_target_not_found":
                return None
            raise
        return proto.PushTarget.parse(body)

    def push_target_delete(self) -> bool:
        """Stop waking this device; False when it had no target."""
        try:
            self.transport.execute(proto.push_target_delete_request())
        except proto.ApiError as exc:
            if exc.code == "push_target_not_found":
                return False
            raise
        return True

    def mute(self, conversation_id: uuid.UUID, *, muted: bool = True) -> None:
        """Stop (or, with muted=False, resume) waking this device for one conversation; its
        messages are stored and delivered as usual."""
        self.transport.execute(proto.conversation_mute_request(conversation_id, muted=muted))

    # -- linking and revoking devices (docs/protocol.md 2.10-2.12, 4.7): client.linking ----------

    request_link = linking.link_request
    complete_link = linking.link_complete
    approve_link = linking.link_approve
    revoke_device = linking.device_revoke
    sign_operator_revocations = linking.operator_revocations_sign
    devices_verified = linking.devices_verified
    device_log = linking.device_log

    # -- trust (2.8-2.9, 4.8): client.trust ------------------------------------------------------

    device_list = trust.device_list
    directory = trust.directory
    forget_directory = trust.forget_directory
    safety_number = trust.safety_number_shown
    mark_verified = trust.identity_mark_verified
    identity_offered = trust.identity_offered
    safety_number_offered = trust.safety_number_offered
    trusted_device = trust.trusted_device

    # -- conversations ---------------------------------------------------------------------------

    def conversations(self) -> list[proto.Conversation]:
        _, body = self.transport.execute(proto.conversation_list_request())
        result = [proto.Conversation.parse(c) for c in body["conversations"]]
        for conversation in result:
            self.core.learn_conversation(conversation)
        return result

    def conversation(self, conversation_id: uuid.UUID, *, refresh: bool = False) -> proto.Conversation:
        cached = self.core.conversations.get(conversation_id)
        if cached is not None and not refresh:
            return cached
        _, body = self.transport.execute(proto.conversation_get_request(conversation_id))
        conversation = proto.Conversation.parse(body)
        self.core.learn_conversation(conversation)
        return conversation

    # -- ChatKey epochs and rotation (2.14, 2.18): client.keyring ----------------------------------

    create_conversation = keyring.conversation_create
    rotate_epoch = keyring.epoch_rotate
    epoch_info = keyring.epoch_info
    epoch_stale_recipients = keyring.epoch_stale_recipients
    conversation_for_send = keyring.conversation_for_send
    rotate_excluding = keyring.epochs_rotate_excluding

    # -- membership changes (2.15, 4.3): client.keyring -------------------------------------------

    members_changed = keyring.members_changed
    add_member = keyring.member_add
    remove_member = keyring.member_remove
    leave = keyring.conversation_leave

    # -- keys held: client.keyring over client.core.keyring --------------------------------------

    key_refused = keyring.key_refused
    forget_key_failure = keyring.key_failure_forget
    chat_key = keyring.chat_key

    # -- messages (2.3, 4.4): client.messages over the core's one seal and open ------------------------

    send_text = messages.text_send
    seal_send = messages.message_seal
    lists_seen = messages.lists_seen
    send_payload = messages.payload_send
    decrypt = messages.message_decrypt
    receive_step = messages.message_receive_step
    receive = messages.message_receive
    envelopes = messages.envelopes_fetch
    history = messages.history_read

    # -- attachments (2.7, 4.5): client.messages ------------------------------------------------------

    upload_file = messages.file_upload
    send_file = messages.file_send
    save_attachment = messages.attachment_save
