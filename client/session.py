"""A logged-in device: the SDK's main entry point.

`Session` ties the pure crypto core to the protocol layer and a transport. It keeps the device's
secrets (persisted by `client.store.keystore`), the contacts' pinned identity keys, and, in memory
only, the ChatKeys it has unwrapped.

Trust rules (docs/protocol.md §2): a device is trusted only if it is on its account's signed device
list (2.9), verified from version 1 under the pinned identity key and never older than the newest
version seen, and its vouch verifies; keys are wrapped only for trusted devices (a device the
server adds or hides is refused and reported), wrapped keys are accepted only from trusted devices
of members, and messages only from trusted senders.
"""

from __future__ import annotations

import hmac
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from client import protocol as proto
from client.attachments import (
    AttachmentInfo,
    BlobTransport,
    Progress,
    download_decrypt_to,
    encrypted_file_chunks,
    guess_mime,
)
from client.crypto.attachment import AttachmentEncryptor, attachment_ciphertext_length, attachment_key_generate
from client.crypto.device_list import (
    DeviceListEntry,
    DeviceListError,
    ListedDevice,
    VerifiedDeviceList,
    device_list_entry_hash,
    device_list_next,
    device_list_verify,
)
from client.crypto.encoding import b64d, b64e
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.fingerprint import device_fingerprint, device_fingerprint_bytes
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.linking import (
    LinkCode,
    identity_key_unwrap,
    identity_key_wrap,
    link_approval_mac,
    link_approval_message,
    link_approval_verify,
    link_code_decode,
    link_code_encode,
    link_keys,
)
from client.crypto.lists_seen import ListSeen, lists_seen_decode, lists_seen_encode
from client.crypto.manifest import EpochManifest, ManifestError, epoch_manifest_build, epoch_manifest_verify
from client.crypto.message import (
    message_encrypt,
    message_header,
    message_open,
    message_signature_verify,
)
from client.crypto.safety import format_safety_number, safety_number
from client.crypto.vouch import vouch_message, vouch_sign, vouch_verify
from client.crypto.wrap import chatkey_generate, chatkey_unwrap, chatkey_wrap
from client.errors import (
    AttachmentError,
    DeviceListInvalidError,
    DeviceNotFoundError,
    EpochManifestError,
    FingerprintMismatchError,
    HiddenDevicesError,
    IdentityChangedError,
    LinkApprovalInvalidError,
    LinkExpiredError,
    NoIdentityKeyError,
    SdkError,
    ServerUnreachableError,
    StaleEpochError,
    UntrustedDevicesError,
)
from client.payloads import payload_text
from client.protocol import ApiError

Rng = Callable[[int], bytes]

DEVICE_LIST_PAGE = 1000  # entries per device-list page (the server's page size)
_MANIFEST_FAILURES = (DecryptFailure.EPOCH_MANIFEST_INVALID, DecryptFailure.EPOCH_MANIFEST_UNVOUCHED)


# Default of `Session.list_stale_grace_ms` (protocol.md 2.19).
LIST_STALE_GRACE_MS = 10 * 60 * 1000


class Transport(Protocol):
    token: str | None

    def execute(self, request: proto.Request) -> tuple[int, Any]: ...


@dataclass
class DeviceSecrets:
    """Everything a device must keep across restarts; stored only encrypted (client.store.keystore)."""

    server_url: str
    username: str
    device: DeviceKeyPair
    device_name: str
    identity: IdentityKeyPair | None
    token: str | None
    pins: dict[str, bytes] = field(default_factory=dict)  # username -> identity key, first sight
    verified: dict[str, bytes] = field(default_factory=dict)  # username -> identity key compared by a person
    # username -> (version, hash) of the newest signed device list verified: never go back (2.9)
    device_lists: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    link_secret: bytes | None = None  # the one-time secret of this device's link code, until approved
    # username -> device id -> ed25519 key of every device ever listed on a verified device list of
    # that account, kept across an identity reset (protocol.md 2.16): what they signed stays readable
    known_devices: dict[str, dict[uuid.UUID, bytes]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "username": self.username,
            "device": self.device.to_private_dict(),
            "device_name": self.device_name,
            "identity": self.identity.to_private_dict() if self.identity else None,
            "token": self.token,
            "pins": {u: b64e(k) for u, k in self.pins.items()},
            "verified": {u: b64e(k) for u, k in self.verified.items()},
            "device_lists": {u: [v, b64e(h)] for u, (v, h) in self.device_lists.items()},
            "link_secret": b64e(self.link_secret) if self.link_secret else None,
            "known_devices": {
                u: {str(d): b64e(k) for d, k in devices.items()} for u, devices in self.known_devices.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceSecrets:
        return cls(
            server_url=data["server_url"],
            username=data["username"],
            device=DeviceKeyPair.from_private_dict(data["device"]),
            device_name=data["device_name"],
            identity=IdentityKeyPair.from_private_dict(data["identity"]) if data.get("identity") else None,
            token=data.get("token"),
            pins={u: b64d(k, length=32) for u, k in data.get("pins", {}).items()},
            verified={u: b64d(k, length=32) for u, k in data.get("verified", {}).items()},
            device_lists={u: (int(v), b64d(h, length=32)) for u, (v, h) in data.get("device_lists", {}).items()},
            link_secret=b64d(data["link_secret"], length=16) if data.get("link_secret") else None,
            known_devices={
                u: {uuid.UUID(d): b64d(k, length=32) for d, k in devices.items()}
                for u, devices in data.get("known_devices", {}).items()
            },
        )


@dataclass(frozen=True)
class TrustedDirectory:
    username: str
    identity_key: bytes
    devices: dict[uuid.UUID, proto.PublicDevice]  # only devices on the verified signed list
    untrusted: list[uuid.UUID]  # shown by the server, not on the verified list (or no valid vouch)
    hidden: list[uuid.UUID] = field(default_factory=list)  # on the verified list, not shown by the server
    list_error: str | None = None  # why the account's signed device list did not verify


@dataclass(frozen=True)
class ReceivedMessage:
    seq: int
    conversation_id: uuid.UUID
    sender_username: str
    sender_device_id: uuid.UUID
    epoch: int
    payload: dict[str, Any]
    created_at: str
    # What the user should know about an accepted message, e.g. that its sender was shown an
    # outdated device list (2.19 `device_list_stale`); empty for almost every message.
    warnings: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return payload_text(self.payload)


@dataclass(frozen=True)
class UndecryptableMessage:
    seq: int
    conversation_id: uuid.UUID
    sender_username: str
    sender_device_id: uuid.UUID
    reason: DecryptFailure
    detail: str


MessageResult = ReceivedMessage | UndecryptableMessage


@dataclass(frozen=True)
class RevocationResult:
    """A revoked device and the conversations moved to a new epoch without it."""

    device: proto.PublicDevice
    rotated: dict[uuid.UUID, int]  # conversation -> new epoch
    seconds: float
    # conversation -> why it could not be rotated now (its senders rotate before sending, 2.14)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)

    @property
    def device_id(self) -> uuid.UUID:
        return self.device.device_id


@dataclass(frozen=True)
class LinkResult:
    """What approving a link took: ChatKeys wrapped for the new device and upload requests."""

    device_id: uuid.UUID
    wrapped_keys: int
    upload_requests: int
    seconds: float


class Session:
    def __init__(self, secrets: DeviceSecrets, transport: Transport, *, rng: Rng = os.urandom) -> None:
        self.secrets = secrets
        self.transport = transport
        self.transport.token = secrets.token
        self._rng = rng
        self._directories: dict[str, TrustedDirectory] = {}
        self._conversations: dict[uuid.UUID, proto.Conversation] = {}
        self._chat_keys: dict[tuple[uuid.UUID, int], bytes] = {}  # memory only, never persisted
        self._key_failures: dict[tuple[uuid.UUID, int], DecryptError] = {}
        self._seen: dict[uuid.UUID, dict[tuple[uuid.UUID, bytes], int]] = {}
        self._lists_checked: set[str] = set()  # accounts whose device list verified in this session
        # Epochs whose recipients were checked against the verified device lists (2.14); cleared
        # whenever a device list is known to have changed.
        self._epochs_checked: set[tuple[uuid.UUID, int]] = set()
        # The newest verified chain of each account's device list in this session, for checking
        # the lists a message's sender saw (2.19) at any version without asking the server again.
        self._verified_lists: dict[str, VerifiedDeviceList] = {}
        # How long after a device-list change a sender may still honestly name the version
        # before it (2.19): propagation plus clock skew between devices.
        self.list_stale_grace_ms = LIST_STALE_GRACE_MS

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
        self._pin(self.username, b64d(body["identity_key"], length=32))
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

    # -- linking a new device (docs/protocol.md 2.10-2.12, 4.7) ----------------------------------

    def request_link(self) -> str:
        """On the new (pending) device: make a link code, open the link request, and return the
        code to show (text and QR). The one-time secret stays on this device."""
        d = self.secrets.device
        code = LinkCode.generate(
            device_id=d.device_id,
            fingerprint=device_fingerprint_bytes(d.x25519_public_key, d.ed25519_public_key),
            rng=self._rng,
        )
        keys = link_keys(secret=code.secret, device_id=d.device_id)
        self.transport.execute(proto.link_request_open_request(verifier_hash=keys.verifier_hash))
        self.secrets.link_secret = code.secret
        return link_code_encode(code)

    def complete_link(self) -> bool:
        """On the new device: False while the request waits; once approved, check the approval
        with the one-time secret (it proves the approver saw this device's code, so the account
        is the genuine one), take the account identity key and pin the signed device list.
        Raises LinkExpiredError or LinkApprovalInvalidError."""
        secret = self.secrets.link_secret
        if secret is None:
            raise LinkApprovalInvalidError("this device has no link code in progress")
        _, body = self.transport.execute(proto.link_request_get_request())
        state = proto.LinkRequestState.parse(body)
        if state.status == "waiting":
            return False
        if state.status != "approved" or state.approval is None:
            raise LinkExpiredError("the link code expired; show a new one")
        approval = state.approval
        _, raw = self.transport.execute(proto.device_list_request(self.username))
        entries = [proto.parse_device_list_entry(e) for e in raw["entries"]]
        version = approval.device_list_version
        try:
            at_approval = device_list_verify(
                username=self.username, identity_public_key=approval.identity_key, entries=entries[:version]
            )
            newest = device_list_verify(
                username=self.username,
                identity_public_key=approval.identity_key,
                entries=entries,
                pinned=(version, at_approval.hash),
            )
        except DeviceListError as exc:
            raise LinkApprovalInvalidError(f"the account's device list does not verify: {exc}") from exc
        d = self.secrets.device
        mine = at_approval.devices.get(d.device_id)
        head = at_approval.entries[-1]
        if (
            mine is None
            or (mine.x25519_public_key, mine.ed25519_public_key) != (d.x25519_public_key, d.ed25519_public_key)
            or head.change != "linked"
            or head.subject_device_id != d.device_id
            or head.actor_device_id != approval.approved_by_device_id
        ):
            raise LinkApprovalInvalidError("the signed device list does not record this device's link")
        keys = link_keys(secret=secret, device_id=d.device_id)
        message = link_approval_message(
            username=self.username,
            device_id=d.device_id,
            approver_device_id=approval.approved_by_device_id,
            identity_public_key=approval.identity_key,
            device_list_hash=at_approval.hash,
            wrapped_identity_key=approval.wrapped_identity_key,
        )
        if not link_approval_verify(keys.mac_key, message, approval.approval_mac):
            raise LinkApprovalInvalidError("the approval was not made with this device's link code")
        try:
            identity = identity_key_unwrap(wrapped=approval.wrapped_identity_key, username=self.username, device=d)
        except DecryptError as exc:
            raise LinkApprovalInvalidError(str(exc)) from exc
        if identity.public_key != approval.identity_key:
            raise LinkApprovalInvalidError("the wrapped identity key is not the account's")
        self._pin(self.username, approval.identity_key)
        self.secrets.identity = identity
        self.secrets.device_lists[self.username] = (newest.version, newest.hash)
        self.secrets.link_secret = None
        self._directories.pop(self.username, None)
        return True

    def approve_link(self, code_text: str, *, batch_size: int = 200, now_ms: int | None = None) -> LinkResult:
        """On an active device holding the identity key: check the pending device's keys against
        the code's fingerprint, wrap every ChatKey epoch of every conversation for it (in batches),
        sign it into the device list and upload the approval (docs/protocol.md 4.7)."""
        code = link_code_decode(code_text)
        identity = self.secrets.identity
        if identity is None:
            raise NoIdentityKeyError("this device does not hold the account identity key")
        pending = next((d for d in self.own_devices() if d.device_id == code.device_id), None)
        if pending is None:
            raise DeviceNotFoundError(f"no device {code.device_id} on this account")
        shown = device_fingerprint_bytes(pending.x25519_public_key, pending.ed25519_public_key)
        if not hmac.compare_digest(shown, code.fingerprint):
            raise FingerprintMismatchError(
                "the server holds other keys for this device than the code shows: refusing to approve"
            )
        own_list = self.device_list(self.username)
        if self.device_id not in own_list.devices:
            raise UntrustedDevicesError(self.username, [self.device_id])
        started = time.monotonic()
        wrapped, requests = self._wrap_history_for(pending, batch_size=batch_size)
        subject = ListedDevice(
            pending.device_id, pending.x25519_public_key, pending.ed25519_public_key, pending.name or ""
        )
        entry = device_list_next(
            identity=identity,
            username=self.username,
            head=own_list.entries[-1],
            change="linked",
            subject=subject,
            actor_device_id=self.device_id,
            timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        )
        wrapped_identity = identity_key_wrap(
            identity=identity,
            username=self.username,
            device_id=pending.device_id,
            recipient_x25519_public_key=pending.x25519_public_key,
        )
        keys = link_keys(secret=code.secret, device_id=pending.device_id)
        message = link_approval_message(
            username=self.username,
            device_id=pending.device_id,
            approver_device_id=self.device_id,
            identity_public_key=identity.public_key,
            device_list_hash=device_list_entry_hash(username=self.username, entry=entry),
            wrapped_identity_key=wrapped_identity,
        )
        request = proto.link_approve_request(
            device_id=pending.device_id,
            verifier=keys.verifier,
            vouch_signature=identity.sign(
                vouch_message(
                    username=self.username,
                    device_id=pending.device_id,
                    x25519_public_key=pending.x25519_public_key,
                    ed25519_public_key=pending.ed25519_public_key,
                )
            ),
            device_list=entry,
            wrapped_identity_key=wrapped_identity,
            approval_mac=link_approval_mac(keys.mac_key, message),
        )
        for attempt in range(3):
            try:
                self.transport.execute(request)
                break
            except ApiError as exc:
                # An epoch started while we wrapped: wrap what is still missing and try again.
                if exc.code != "link_keys_incomplete" or attempt == 2:
                    raise
                more, calls = self._wrap_history_for(pending, batch_size=batch_size)
                wrapped, requests = wrapped + more, requests + calls
        self.secrets.device_lists[self.username] = (
            entry.version,
            device_list_entry_hash(username=self.username, entry=entry),
        )
        self._directories.pop(self.username, None)
        return LinkResult(pending.device_id, wrapped, requests, time.monotonic() - started)

    def revoke_device(
        self, device_id: uuid.UUID, *, now_ms: int | None = None, rotate: bool = True
    ) -> RevocationResult:
        """Revoke a device of this account (itself included) and, unless it revoked itself (its
        token is dead then) or `rotate` is False, start a new ChatKey epoch in every conversation
        of the account that still reaches the device (2.14)."""
        started = time.monotonic()
        device = self._revoke_signed(device_id, now_ms=now_ms)
        rotated: dict[uuid.UUID, int] = {}
        failed: dict[uuid.UUID, str] = {}
        if rotate and device_id != self.device_id:
            rotated = self.rotate_excluding({device_id}, failed=failed)
        return RevocationResult(device, rotated, time.monotonic() - started, failed)

    def sign_operator_revocations(self, *, now_ms: int | None = None) -> list[RevocationResult]:
        """Sign into the device list every device of this account that the server shows revoked
        (an operator's revocation, `manage.py revoke_device`) while the verified list still names
        it, and rotate its conversations: until then members see it as a hidden device (2.8)."""
        listed = self.device_list(self.username).devices
        revoked = [d.device_id for d in self.own_devices() if d.status == "revoked" and d.device_id in listed]
        return [self.revoke_device(device_id, now_ms=now_ms) for device_id in revoked]

    def _revoke_signed(self, device_id: uuid.UUID, *, now_ms: int | None = None) -> proto.PublicDevice:
        """Revoke a device of this account. A device on the signed list is signed out of it with
        the identity key in the same request (2.9); a pending one (a refused link request) is not
        on the list."""
        target = next((d for d in self.own_devices() if d.device_id == device_id), None)
        if target is None:
            raise DeviceNotFoundError(f"no device {device_id} on this account")
        entry: DeviceListEntry | None = None
        own_list = self.device_list(self.username)
        if device_id in own_list.devices:
            identity = self.secrets.identity
            if identity is None:
                raise NoIdentityKeyError("this device does not hold the account identity key")
            entry = device_list_next(
                identity=identity,
                username=self.username,
                head=own_list.entries[-1],
                change="revoked",
                subject=own_list.devices[device_id],
                actor_device_id=self.device_id,
                timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
            )
        _, body = self.transport.execute(proto.revoke_request(device_id, device_list=entry))
        if entry is not None:
            self.secrets.device_lists[self.username] = (
                entry.version,
                device_list_entry_hash(username=self.username, entry=entry),
            )
        self.forget_directory(self.username)
        return proto.PublicDevice.parse(body)

    def _wrap_history_for(self, pending: proto.PublicDevice, *, batch_size: int) -> tuple[int, int]:
        """Wrap, for `pending`, every epoch the server says it still lacks, a page at a time;
        returns (keys uploaded, upload requests)."""
        after, wrapped, requests = 0, 0, 0
        while True:
            _, body = self.transport.execute(
                proto.link_missing_keys_request(pending.device_id, after=after, limit=batch_size)
            )
            batch: list[tuple[uuid.UUID, int, bytes, bytes]] = []
            for ref in body["epochs"]:
                conversation_id, epoch = uuid.UUID(ref["conversation_id"]), int(ref["epoch"])
                conversation = self.conversation(conversation_id)
                if epoch > conversation.current_epoch:
                    conversation = self.conversation(conversation_id, refresh=True)
                w = chatkey_wrap(
                    chat_key=self.chat_key(conversation, epoch),
                    conversation_id=conversation_id,
                    epoch=epoch,
                    recipient_device_id=pending.device_id,
                    recipient_x25519_public_key=pending.x25519_public_key,
                    wrapper=self.secrets.device,
                )
                batch.append((conversation_id, epoch, w.wrapped_key, w.signature))
            if batch:
                self.transport.execute(proto.link_keys_upload_request(pending.device_id, batch))
                wrapped, requests = wrapped + len(batch), requests + 1
            if not body["has_more"]:
                return wrapped, requests
            after = int(body["next_after"])

    def devices_verified(self) -> list[tuple[proto.PublicDevice, bool]]:
        """The account's devices, each with whether it is on the verified signed device list."""
        devices = self.own_devices()
        try:
            listed = self.device_list(self.username).devices
        except DeviceListError:
            listed = {}
        return [
            (
                d,
                d.device_id in listed
                and (listed[d.device_id].x25519_public_key, listed[d.device_id].ed25519_public_key)
                == (d.x25519_public_key, d.ed25519_public_key),
            )
            for d in devices
        ]

    def device_log(self) -> list[DeviceListEntry]:
        """Every change to the account's devices, oldest first, from the verified signed list."""
        return list(self.device_list(self.username).entries)

    # -- trust -----------------------------------------------------------------------------------

    def _pin(self, username: str, identity_key: bytes) -> None:
        pinned = self.secrets.pins.get(username)
        if pinned is None:
            self.secrets.pins[username] = identity_key
        elif pinned != identity_key:
            raise IdentityChangedError(username)

    def device_list(self, username: str) -> VerifiedDeviceList:
        """The account's signed device list, verified from version 1 under its pinned identity key
        and against the newest version this device saw before; raises DeviceListError."""
        identity_key = self.secrets.pins.get(username)
        if identity_key is None:
            identity_key = self.directory(username).identity_key
        entries: list[DeviceListEntry] = []
        while True:
            _, body = self.transport.execute(proto.device_list_request(username, after=len(entries)))
            page = [proto.parse_device_list_entry(e) for e in body["entries"]]
            entries.extend(page)
            if not page or len(page) < DEVICE_LIST_PAGE:
                break
        verified = device_list_verify(
            username=username,
            identity_public_key=identity_key,
            entries=entries,
            pinned=self.secrets.device_lists.get(username),
        )
        self.secrets.device_lists[username] = (verified.version, verified.hash)
        self._verified_lists[username] = verified
        known = self.secrets.known_devices.setdefault(username, {})
        for entry in verified.entries:
            for listed in entry.devices:
                known.setdefault(listed.device_id, listed.ed25519_public_key)
        return verified

    def directory(self, username: str, *, refresh: bool = False) -> TrustedDirectory:
        """The contact's devices that are on its verified signed device list (2.9) with a vouch
        under its (pinned) identity key; the others are untrusted, and listed devices the server
        does not show are hidden."""
        if not refresh and username in self._directories:
            return self._directories[username]
        _, body = self.transport.execute(proto.directory_request(username))
        entry = proto.DirectoryEntry.parse(body)
        self._pin(username, entry.identity_key)
        listed: dict[uuid.UUID, ListedDevice] = {}
        list_error: str | None = None
        try:
            listed = self.device_list(username).devices
        except DeviceListError as exc:
            list_error = str(exc)
        except ApiError as exc:
            list_error = f"the server did not return the device list: {exc.code}"
        trusted: dict[uuid.UUID, proto.PublicDevice] = {}
        untrusted: list[uuid.UUID] = []
        for device in entry.devices:
            on_list = listed.get(device.device_id)
            ok = (
                on_list is not None
                and on_list.x25519_public_key == device.x25519_public_key
                and on_list.ed25519_public_key == device.ed25519_public_key
                and device.vouch_signature is not None
                and vouch_verify(
                    identity_public_key=entry.identity_key,
                    signature=device.vouch_signature,
                    username=username,
                    device_id=device.device_id,
                    x25519_public_key=device.x25519_public_key,
                    ed25519_public_key=device.ed25519_public_key,
                )
            )
            if ok:
                trusted[device.device_id] = device
            else:
                untrusted.append(device.device_id)
        hidden = sorted(set(listed) - {device.device_id for device in entry.devices}, key=str)
        result = TrustedDirectory(username, entry.identity_key, trusted, untrusted, hidden, list_error)
        self._directories[username] = result
        return result

    def forget_directory(self, username: str) -> None:
        """Drop the cached directory of `username` (its device list changed); epochs are checked
        against the lists again before the next send (2.14)."""
        self._directories.pop(username, None)
        self._lists_checked.discard(username)
        self._epochs_checked.clear()

    def safety_number(self, username: str) -> str:
        own = self.secrets.pins.get(self.username) or self.directory(self.username).identity_key
        other = self.directory(username).identity_key
        return format_safety_number(safety_number(self.username, own, username, other))

    def mark_verified(self, username: str, *, identity_key: bytes | None = None) -> None:
        """Record that a person compared `username`'s safety number. With `identity_key`: accept
        that key, which the server now shows, in place of a pinned one that changed (the contact
        reset its identity, protocol.md 4.8): it is pinned, its new device-list chain is verified
        from version 1, and it is verified. Refused (IdentityChangedError) if the server shows
        another key than the one compared."""
        if identity_key is not None and self.secrets.pins.get(username) != identity_key:
            if self.identity_offered(username) != identity_key:
                raise IdentityChangedError(username)
            self.secrets.pins[username] = identity_key
            self.secrets.device_lists.pop(username, None)  # the old chain ended with the old key
            self._directories.pop(username, None)
            self._lists_checked.discard(username)
        self.secrets.verified[username] = self.directory(username).identity_key

    def identity_offered(self, username: str) -> bytes:
        """The identity key the server shows for `username` now, pinned or not (to compare its
        safety number after an `identity_changed`, before accepting it with `mark_verified`)."""
        _, body = self.transport.execute(proto.directory_request(username))
        return proto.DirectoryEntry.parse(body).identity_key

    def safety_number_offered(self, username: str, *, identity_key: bytes | None = None) -> str:
        """The safety number with `identity_key` (default: the one the server shows for
        `username` now), to compare before accepting it with `mark_verified`."""
        own = self.secrets.pins.get(self.username) or self.directory(self.username).identity_key
        other = identity_key if identity_key is not None else self.identity_offered(username)
        return format_safety_number(safety_number(self.username, own, username, other))

    def trusted_device(self, username: str, device_id: uuid.UUID) -> proto.PublicDevice:
        """The device if it is on `username`'s verified signed device list with a valid vouch
        under the pinned identity key; DecryptError (unvouched_device, identity_changed) if not."""
        return self._trusted_device(username, device_id)

    # -- conversations ---------------------------------------------------------------------------

    def conversations(self) -> list[proto.Conversation]:
        _, body = self.transport.execute(proto.conversation_list_request())
        result = [proto.Conversation.parse(c) for c in body["conversations"]]
        for conversation in result:
            self._conversations[conversation.conversation_id] = conversation
        return result

    def conversation(self, conversation_id: uuid.UUID, *, refresh: bool = False) -> proto.Conversation:
        if refresh or conversation_id not in self._conversations:
            _, body = self.transport.execute(proto.conversation_get_request(conversation_id))
            self._conversations[conversation_id] = proto.Conversation.parse(body)
        return self._conversations[conversation_id]

    def _wrap_for_members(
        self, conversation_id: uuid.UUID, epoch: int, members: list[str], chat_key: bytes, *, refresh: bool = True
    ) -> dict[uuid.UUID, tuple[bytes, bytes]]:
        wrapped: dict[uuid.UUID, tuple[bytes, bytes]] = {}
        for member in members:
            entry = self.directory(member, refresh=refresh)
            if entry.list_error is not None:
                raise DeviceListInvalidError(member, entry.list_error)
            if entry.untrusted:
                raise UntrustedDevicesError(member, entry.untrusted)
            if entry.hidden:
                raise HiddenDevicesError(member, entry.hidden)
            for device in entry.devices.values():
                w = chatkey_wrap(
                    chat_key=chat_key,
                    conversation_id=conversation_id,
                    epoch=epoch,
                    recipient_device_id=device.device_id,
                    recipient_x25519_public_key=device.x25519_public_key,
                    wrapper=self.secrets.device,
                )
                wrapped[device.device_id] = (w.wrapped_key, w.signature)
        return wrapped

    def _new_epoch(
        self, conversation_id: uuid.UUID, number: int, members: list[str], chat_key: bytes, *, refresh: bool = True
    ) -> proto.NewEpoch:
        """The epoch's ChatKey wrapped for every trusted device of every member, with the manifest
        of exactly those devices signed by this device (protocol.md 2.18)."""
        wrapped = self._wrap_for_members(conversation_id, number, members, chat_key, refresh=refresh)
        devices = {member: sorted(self.directory(member).devices) for member in members}
        manifest, signature = epoch_manifest_build(
            conversation_id=conversation_id,
            epoch=number,
            creator=self.secrets.device,
            lists={member: self.secrets.device_lists[member] for member in members},
            devices=devices,
        )
        return proto.NewEpoch(number, wrapped, manifest, signature)

    def create_conversation(
        self, members: list[str], *, kind: str = "group", share_history: bool = True
    ) -> proto.Conversation:
        """Create a conversation with a fresh ChatKey wrapped for every trusted device of every member."""
        everyone = sorted(set(members) | {self.username})
        conversation_id = uuid.UUID(bytes=self._rng(16), version=4)
        chat_key = chatkey_generate(self._rng)
        for attempt in range(2):
            request = proto.conversation_create_request(
                conversation_id=conversation_id,
                kind=kind,
                members=[m for m in everyone if m != self.username],
                epoch=self._new_epoch(conversation_id, 1, everyone, chat_key),
                share_history=share_history,
            )
            try:
                _, body = self.transport.execute(request)
                break
            except ApiError as exc:
                # A device joined between our directory read and the upload: read again, once.
                if exc.code != "missing_devices" or attempt == 1:
                    raise
        conversation = proto.Conversation.parse(body)
        self._conversations[conversation_id] = conversation
        self._chat_keys[(conversation_id, 1)] = chat_key
        return conversation

    def rotate_epoch(self, conversation_id: uuid.UUID, *, refresh_directories: bool = True) -> int:
        """Start a new ChatKey epoch wrapped for the members' current trusted devices."""
        conversation = self.conversation(conversation_id, refresh=True)
        number = conversation.current_epoch + 1
        chat_key = chatkey_generate(self._rng)
        epoch = self._new_epoch(conversation_id, number, conversation.members, chat_key, refresh=refresh_directories)
        self.transport.execute(proto.epoch_upload_request(conversation_id=conversation_id, epoch=epoch))
        self._chat_keys[(conversation_id, number)] = chat_key
        self.conversation(conversation_id, refresh=True)
        return number

    # -- revocation and rotation (docs/protocol.md 2.14) -------------------------------------------

    def epoch_info(self, conversation_id: uuid.UUID, epoch: int) -> proto.EpochInfo:
        """The devices the server holds the epoch's ChatKey wrapped for."""
        _, body = self.transport.execute(proto.epoch_get_request(conversation_id, epoch))
        return proto.EpochInfo.parse(body)

    def epoch_stale_recipients(self, conversation: proto.Conversation) -> list[tuple[str, uuid.UUID]]:
        """Recipients of the current epoch that must not read what comes next: devices not on
        their owner's verified device list (revoked), and accounts that are no longer members."""
        info = self.epoch_info(conversation.conversation_id, conversation.current_epoch)
        manifest = self._manifest_verified(
            conversation.conversation_id,
            info.epoch,
            manifest=info.manifest,
            signature=info.manifest_signature,
            creator_username=info.created_by_username,
            creator_device_id=info.created_by_device_id,
        )
        self._manifest_check_vouched(manifest)
        self._manifest_check_versions(manifest)
        # The manifest's devices hold the key (those revoked since are stale too); a recipient
        # outside it got its key later (link, history, key request) and must be trusted now.
        holders = {**manifest.devices(), **info.recipients}
        stale: list[tuple[str, uuid.UUID]] = []
        refreshed: set[str] = set()
        for device_id, username in sorted(holders.items(), key=lambda item: str(item[0])):
            if username not in conversation.members:
                stale.append((username, device_id))
                continue
            entry = self.directory(username)
            if device_id not in entry.devices and username not in refreshed:
                entry = self.directory(username, refresh=True)  # it may have been linked since
                refreshed.add(username)
            if device_id not in entry.devices:
                stale.append((username, device_id))
        return stale

    def conversation_for_send(self, conversation_id: uuid.UUID, *, refresh: bool = False) -> proto.Conversation:
        """The conversation, with a current epoch safe to send under: if its key reaches a revoked
        device or a former member, start a new epoch first (2.14). An epoch is checked once,
        and again after any device list is known to have changed. Raises StaleEpochError."""
        conversation = self.conversation(conversation_id, refresh=refresh)
        if (conversation_id, conversation.current_epoch) in self._epochs_checked:
            return conversation
        stale: list[tuple[str, uuid.UUID]] = []
        manifest_error: DecryptError | None = None
        for _ in range(3):
            try:
                stale, manifest_error = self.epoch_stale_recipients(conversation), None
            except ServerUnreachableError:
                # Offline (a realtime client queueing): seal under the epoch last known; it is
                # checked before the next send once the server is back, and a newer epoch
                # makes the server answer stale_epoch, which seals the message again.
                return conversation
            except DecryptError as exc:
                # A missing, forged or unvouched manifest (2.18): never send under that epoch.
                if exc.reason not in _MANIFEST_FAILURES:
                    raise
                stale, manifest_error = [], exc
            if not stale and manifest_error is None:
                self._epochs_checked.add((conversation_id, conversation.current_epoch))
                return conversation
            try:
                self.rotate_epoch(conversation_id)
            except ApiError as exc:
                # Someone else rotated first (check their epoch), or a device appeared meanwhile.
                if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices"):
                    raise
            conversation = self.conversation(conversation_id, refresh=True)
        if manifest_error is not None:
            raise EpochManifestError(conversation_id, manifest_error.reason.value, manifest_error.message)
        raise StaleEpochError(conversation_id, stale)

    def rotate_excluding(
        self, device_ids: set[uuid.UUID], *, failed: dict[uuid.UUID, str] | None = None
    ) -> dict[uuid.UUID, int]:
        """Start a new epoch in every conversation of the account whose current epoch reaches
        one of `device_ids` (after a revocation). Each member's directory is read once for the
        whole batch; a conflict with another member's rotation is re-checked, not overwritten.
        Returns the new epoch by conversation. With `failed`, a conversation that cannot be
        rotated (an untrusted or hidden device of a member, ...) is recorded there with the
        reason and the batch goes on; without it, the error is raised."""
        conversations = self.conversations()
        for member in sorted({m for c in conversations for m in c.members}):
            self.directory(member, refresh=True)
        rotated: dict[uuid.UUID, int] = {}
        for conversation in conversations:
            try:
                epoch = self._rotate_one_excluding(conversation, device_ids)
            except (ApiError, SdkError) as exc:
                if failed is None:
                    raise
                failed[conversation.conversation_id] = str(exc)
                continue
            if epoch is not None:
                rotated[conversation.conversation_id] = epoch
        self._epochs_checked.clear()
        return rotated

    def _rotate_one_excluding(self, conversation: proto.Conversation, device_ids: set[uuid.UUID]) -> int | None:
        cid = conversation.conversation_id
        for attempt in range(3):
            info = self.epoch_info(cid, conversation.current_epoch)
            if not device_ids & info.recipients.keys():
                return None
            try:
                return self.rotate_epoch(cid, refresh_directories=attempt > 0)
            except ApiError as exc:
                if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices") or attempt == 2:
                    raise
            conversation = self.conversation(cid, refresh=True)
        raise AssertionError("unreachable")

    # -- membership changes (docs/protocol.md 2.15, 4.3) ------------------------------------------

    def members_changed(self, conversation_id: uuid.UUID) -> None:
        """Forget the cached view of a conversation whose members changed: the next send reads it
        again and checks its epoch against the new members (2.14)."""
        self._conversations.pop(conversation_id, None)
        self._epochs_checked = {slot for slot in self._epochs_checked if slot[0] != conversation_id}

    def add_member(self, conversation_id: uuid.UUID, username: str) -> proto.Conversation:
        """Add `username` to a group conversation. If the conversation shares history, wrap every
        epoch's ChatKey for the newcomer's trusted devices; if not, start a new epoch for all
        members, newcomer included, so it reads only from its join on."""
        for attempt in range(3):
            conversation = self.conversation(conversation_id, refresh=True)
            history: list[tuple[int, uuid.UUID, bytes, bytes]] = []
            epoch: proto.NewEpoch | None = None
            chat_key = b""
            if conversation.share_history:
                self.directory(username, refresh=True)
                for number in range(1, conversation.current_epoch + 1):
                    key = self.chat_key(conversation, number)
                    wrapped = self._wrap_for_members(conversation_id, number, [username], key, refresh=False)
                    history.extend((number, d, w, sig) for d, (w, sig) in wrapped.items())
            else:
                chat_key = chatkey_generate(self._rng)
                number = conversation.current_epoch + 1
                epoch = self._new_epoch(conversation_id, number, [*conversation.members, username], chat_key)
            request = proto.member_add_request(
                conversation_id=conversation_id, username=username, history_keys=history, epoch=epoch
            )
            try:
                self.transport.execute(request)
            except ApiError as exc:
                retry = ("epoch_conflict", "missing_devices", "unexpected_devices", "history_keys_mismatch")
                if exc.code not in retry or attempt == 2:
                    raise
                continue
            if epoch is not None:
                self._chat_keys[(conversation_id, epoch.number)] = chat_key
            self.members_changed(conversation_id)
            return self.conversation(conversation_id)
        raise AssertionError("unreachable")

    def remove_member(self, conversation_id: uuid.UUID, username: str) -> proto.Conversation | None:
        """Remove `username` from a group conversation and start, in the same request, a new epoch
        wrapped only for the remaining members' trusted devices. Removing oneself is `leave`."""
        if username == self.username:
            self.leave(conversation_id)
            return None
        for attempt in range(3):
            conversation = self.conversation(conversation_id, refresh=True)
            remaining = [m for m in conversation.members if m != username]
            number = conversation.current_epoch + 1
            chat_key = chatkey_generate(self._rng)
            request = proto.member_remove_request(
                conversation_id=conversation_id,
                username=username,
                epoch=self._new_epoch(conversation_id, number, remaining, chat_key),
            )
            try:
                self.transport.execute(request)
            except ApiError as exc:
                if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices") or attempt == 2:
                    raise
                continue
            self._chat_keys[(conversation_id, number)] = chat_key
            self.members_changed(conversation_id)
            return self.conversation(conversation_id)
        raise AssertionError("unreachable")

    def leave(self, conversation_id: uuid.UUID) -> None:
        """Leave a group conversation. This device cannot rotate for the others (it would hold the
        new key): the remaining members' clients start a new epoch before their next send (2.14)."""
        self.transport.execute(
            proto.member_remove_request(conversation_id=conversation_id, username=self.username, epoch=None)
        )
        self.members_changed(conversation_id)

    # -- keys ------------------------------------------------------------------------------------

    def _load_keys(self, conversation: proto.Conversation) -> None:
        """Fetch and unwrap this device's wrapped keys for a conversation (verifying each wrapper)."""
        _, body = self.transport.execute(proto.keys_request(conversation.conversation_id))
        for raw in body["keys"]:
            record = proto.WrappedKeyRecord.parse(raw)
            slot = (conversation.conversation_id, record.epoch)
            if slot in self._chat_keys:
                continue
            try:
                self._chat_keys[slot] = self._unwrap(conversation, record)
                self._key_failures.pop(slot, None)
            except DecryptError as exc:
                self._key_failures[slot] = exc

    def _manifest_verified(
        self,
        conversation_id: uuid.UUID,
        epoch: int,
        *,
        manifest: bytes,
        signature: bytes,
        creator_username: str,
        creator_device_id: uuid.UUID,
    ) -> EpochManifest:
        """The epoch's manifest (2.18) if it is signed by the device that created the epoch, a
        device of a vouched account (trusted, or revoked since: 2.16), is for this conversation
        and epoch and names its creator; DecryptError `epoch_manifest_invalid` if not."""
        if not manifest:
            raise DecryptError(DecryptFailure.EPOCH_MANIFEST_INVALID, f"epoch {epoch} carries no manifest")
        try:
            creator_key = self._signing_key(creator_username, creator_device_id)
        except DecryptError as exc:
            if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                raise
            raise _CreatorUnknownError(
                DecryptFailure.EPOCH_MANIFEST_INVALID,
                f"epoch {epoch} was created by device {creator_device_id} of {creator_username!r}, "
                f"which is not vouched for",
            ) from None
        try:
            parsed = epoch_manifest_verify(
                data=manifest,
                signature=signature,
                conversation_id=conversation_id,
                epoch=epoch,
                creator_ed25519_public_key=creator_key,
            )
        except ManifestError as exc:
            raise DecryptError(
                DecryptFailure.EPOCH_MANIFEST_INVALID, f"the manifest of epoch {epoch} is refused: {exc}"
            ) from None
        if parsed.creator_device_id != creator_device_id or parsed.devices().get(creator_device_id) != creator_username:
            raise DecryptError(
                DecryptFailure.EPOCH_MANIFEST_INVALID, f"the manifest of epoch {epoch} does not name its creator"
            )
        return parsed

    def _manifest_check_vouched(self, manifest: EpochManifest) -> None:
        """Every device the manifest names is on its owner's verified device list, now or in an
        earlier verified version (2.16); else DecryptError `epoch_manifest_unvouched`."""
        for device_id, username in sorted(manifest.devices().items(), key=lambda item: str(item[0])):
            try:
                self._signing_key(username, device_id)
            except DecryptError as exc:
                if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                    raise
                raise DecryptError(
                    DecryptFailure.EPOCH_MANIFEST_UNVOUCHED,
                    f"epoch {manifest.epoch} was wrapped for device {device_id} of {username!r}, "
                    f"which is not vouched for by its identity key",
                ) from None

    def _manifest_check_versions(self, manifest: EpochManifest) -> None:
        """Each member's device list version in the manifest is one this device verified (equal
        hash at the same version) or older; else DecryptError `epoch_manifest_invalid`."""
        for member in manifest.members:
            seen = self.secrets.device_lists.get(member.username)
            if seen is None or member.device_list_version > seen[0]:
                self.directory(member.username, refresh=True)
                seen = self.secrets.device_lists.get(member.username)
            if (
                seen is None
                or member.device_list_version > seen[0]
                or (member.device_list_version == seen[0] and not hmac.compare_digest(member.device_list_hash, seen[1]))
            ):
                raise DecryptError(
                    DecryptFailure.EPOCH_MANIFEST_INVALID,
                    f"the manifest of epoch {manifest.epoch} names a device list of {member.username!r} "
                    f"(version {member.device_list_version}) this device has not verified",
                )

    def _unwrap(self, conversation: proto.Conversation, record: proto.WrappedKeyRecord) -> bytes:
        # The wrapper may have left since (2.15), and its device may have been revoked since (2.16):
        # a device on its account's verified list, now or in an earlier version, will do. The member
        # list is the server's word; the epoch's signed manifest (2.18) binds the epoch to the
        # devices it was made for, and every one of them must be vouched for.
        try:
            manifest = self._manifest_verified(
                conversation.conversation_id,
                record.epoch,
                manifest=record.manifest,
                signature=record.manifest_signature,
                creator_username=record.epoch_created_by_username,
                creator_device_id=record.epoch_created_by_device_id,
            )
            self._manifest_check_vouched(manifest)
        except _CreatorUnknownError:
            # A key given later (link, history, key request) by another device, for an epoch
            # whose creator this device cannot vouch for (its account's identity was reset
            # since): accepted on the wrapper's word, which checked the manifest itself (2.18).
            if record.wrapped_by_device_id == record.epoch_created_by_device_id:
                raise
        wrapper_key = self._signing_key(record.wrapped_by_username, record.wrapped_by_device_id)
        return chatkey_unwrap(
            wrapped_key=record.wrapped_key,
            signature=record.signature,
            conversation_id=conversation.conversation_id,
            epoch=record.epoch,
            recipient=self.secrets.device,
            wrapper_device_id=record.wrapped_by_device_id,
            wrapper_ed25519_public_key=wrapper_key,
        )

    def _trusted_device(self, username: str, device_id: uuid.UUID) -> proto.PublicDevice:
        try:
            entry = self.directory(username)
            if device_id not in entry.devices:
                entry = self.directory(username, refresh=True)
        except IdentityChangedError as exc:
            raise DecryptError(DecryptFailure.IDENTITY_CHANGED, str(exc)) from exc
        except ApiError as exc:
            raise DecryptError(DecryptFailure.UNVOUCHED_DEVICE, f"no directory entry: {exc.code}") from exc
        device = entry.devices.get(device_id)
        if device is None:
            raise DecryptError(
                DecryptFailure.UNVOUCHED_DEVICE, f"device {device_id} is not vouched for by {username}'s identity key"
            )
        return device

    def _signing_key(self, username: str, device_id: uuid.UUID) -> bytes:
        """The ed25519 key of the device that signed a message or wrapped a ChatKey: a trusted
        device, or one listed in an earlier version of the account's verified signed device list
        and revoked since (a lost device): what it sent and wrapped before stays readable after
        the revocation (protocol.md 4.8). Anything else raises the trusted-device DecryptError."""
        try:
            return self._trusted_device(username, device_id).ed25519_public_key
        except DecryptError as exc:
            if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                raise
            # Only while the account's current list verifies (no rollback or forgery going on);
            # verifying it also records every device of its chain in `known_devices`.
            if username not in self._lists_checked or device_id not in self.secrets.known_devices.get(username, {}):
                try:
                    self.device_list(username)
                except (DeviceListError, ApiError, IdentityChangedError):
                    raise exc from None
                self._lists_checked.add(username)
            known = self.secrets.known_devices.get(username, {})
            if device_id not in known:
                raise
            return known[device_id]

    def key_refused(self, conversation_id: uuid.UUID, epoch: int) -> bool:
        """The wrapped key this device holds for the epoch is itself bad: its signature, its HPKE
        seal or its wrapper does not verify (4.8: file the key request again with `refuse_held`).
        A refused manifest or a changed identity is about the epoch or a person's decision, and
        another copy of the key would not help."""
        failure = self._key_failures.get((conversation_id, epoch))
        return failure is not None and failure.reason in _BAD_KEY_REASONS

    def forget_key_failure(self, conversation_id: uuid.UUID, epoch: int) -> None:
        """The refused key is gone from the server: look for the epoch's key again next time."""
        self._key_failures.pop((conversation_id, epoch), None)

    def chat_key(self, conversation: proto.Conversation, epoch: int) -> bytes:
        slot = (conversation.conversation_id, epoch)
        if slot not in self._chat_keys:
            if epoch > conversation.current_epoch:
                conversation = self.conversation(conversation.conversation_id, refresh=True)
            if epoch > conversation.current_epoch or epoch < 1:
                raise DecryptError(DecryptFailure.UNKNOWN_EPOCH, f"epoch {epoch} does not exist")
            self._load_keys(conversation)
        if slot in self._chat_keys:
            return self._chat_keys[slot]
        if slot in self._key_failures:
            raise self._key_failures[slot]
        raise DecryptError(DecryptFailure.MISSING_KEY, f"this device holds no key for epoch {epoch}")

    # -- messages --------------------------------------------------------------------------------

    def send_text(self, conversation_id: uuid.UUID, body: str, *, now_ms: int | None = None) -> proto.Envelope:
        sent_at = now_ms if now_ms is not None else int(time.time() * 1000)
        return self.send_payload(conversation_id, {"type": "text", "body": body, "sent_at_ms": sent_at})

    def seal_send(
        self,
        conversation: proto.Conversation,
        payload: dict[str, Any],
        *,
        client_message_id: bytes | None = None,
        rng: Rng | None = None,
        attachments: list[uuid.UUID] | None = None,
    ) -> tuple[proto.Request, bytes]:
        """Encrypt and sign `payload` for the conversation's current epoch: the send request (the
        same body goes over REST and in a WebSocket `send` frame) and its client message id."""
        epoch = conversation.current_epoch
        sealed = message_encrypt(
            chat_key=self.chat_key(conversation, epoch),
            conversation_id=conversation.conversation_id,
            epoch=epoch,
            sender=self.secrets.device,
            payload=payload,
            device_lists=self.lists_seen(conversation),
            client_message_id=client_message_id,
            rng=rng or self._rng,
        )
        request = proto.send_request(
            conversation_id=conversation.conversation_id,
            epoch=epoch,
            sender_device_id=self.device_id,
            client_message_id=sealed.client_message_id,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
            signature=sealed.signature,
            device_lists=sealed.device_lists,
            attachments=attachments,
        )
        return request, sealed.client_message_id

    def lists_seen(self, conversation: proto.Conversation) -> bytes:
        """The newest verified device list (version, hash) of every member, encoded for the
        header of a message to the conversation (2.19); verifies a list not seen yet."""
        seen: list[ListSeen] = []
        for username in conversation.members:
            if username not in self.secrets.device_lists:
                self.device_list(username)
            version, digest = self.secrets.device_lists[username]
            seen.append(ListSeen(username, version, digest))
        return lists_seen_encode(seen)

    def send_payload(
        self, conversation_id: uuid.UUID, payload: dict[str, Any], *, attachments: list[uuid.UUID] | None = None
    ) -> proto.Envelope:
        """Seal and send; `attachments` names the media blobs the payload refers to (§4.5), so
        the conversation's members may download them."""
        conversation = self.conversation_for_send(conversation_id)
        for attempt in range(2):
            request, _ = self.seal_send(conversation, payload, attachments=attachments)
            try:
                _, body = self.transport.execute(request)
                return proto.Envelope.parse(body)
            except ApiError as exc:
                if exc.code != "stale_epoch" or attempt == 1:
                    raise
                conversation = self.conversation_for_send(conversation_id, refresh=True)
        raise AssertionError("unreachable")

    # -- attachments (§2.7, §4.5) ---------------------------------------------------------------------

    def _blob_transport(self) -> BlobTransport:
        if not isinstance(self.transport, BlobTransport):
            raise AttachmentError("this transport cannot move media blobs")
        return self.transport

    def upload_file(self, path: Path, *, progress: Progress | None = None, mime: str | None = None) -> AttachmentInfo:
        """Encrypt `path` under a fresh key while streaming it to a new blob; the payload data."""
        blobs = self._blob_transport()
        path = Path(path)
        size = path.stat().st_size
        key = attachment_key_generate(self._rng)
        length = attachment_ciphertext_length(size)
        _, body = self.transport.execute(proto.media_create_request(length))
        blob_id = uuid.UUID(body["blob_id"])
        encryptor = AttachmentEncryptor(key)
        chunks = encrypted_file_chunks(path, encryptor, size=size)
        blobs.upload_blob(proto.MediaLink.parse(body["upload"]), chunks, length, progress=progress)
        self.transport.execute(proto.media_complete_request(blob_id))
        return AttachmentInfo(
            blob_id=blob_id,
            key=key,
            digest=encryptor.digest,
            size=size,
            mime=mime or guess_mime(path),
            name=path.name,
        )

    def send_file(
        self,
        conversation_id: uuid.UUID,
        path: Path | str,
        *,
        progress: Progress | None = None,
        mime: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[proto.Envelope, AttachmentInfo]:
        """Upload `path` encrypted and send an `attachment` message naming it."""
        info = self.upload_file(Path(path), progress=progress, mime=mime)
        sent_at = now_ms if now_ms is not None else int(time.time() * 1000)
        envelope = self.send_payload(conversation_id, info.to_payload(sent_at_ms=sent_at), attachments=[info.blob_id])
        return envelope, info

    def save_attachment(
        self, payload: dict[str, Any], directory: Path | str, *, progress: Progress | None = None
    ) -> Path:
        """Download the blob of a received `attachment` payload, verify and decrypt it into
        `directory` under its sanitised original name (never overwriting); the path written."""
        info = AttachmentInfo.from_payload(payload)
        _, body = self.transport.execute(proto.media_download_request(info.blob_id))
        if int(body["length"]) != info.ciphertext_length:
            raise AttachmentError(f"the server holds {body['length']} bytes, the message says {info.ciphertext_length}")
        link = proto.MediaLink.parse(body["download"])
        return download_decrypt_to(self._blob_transport(), link, info, Path(directory), progress=progress)

    def decrypt(self, envelope: proto.Envelope) -> ReceivedMessage:
        """Verify and decrypt one envelope, in the order of docs/protocol.md §2.3; raise DecryptError."""
        if envelope.version != proto.PROTOCOL_VERSION:
            raise DecryptError(DecryptFailure.UNSUPPORTED_VERSION, f"version {envelope.version}")
        if not 1 <= envelope.epoch <= 0xFFFFFFFF:
            raise DecryptError(DecryptFailure.UNKNOWN_EPOCH, f"epoch {envelope.epoch} cannot exist")
        try:
            conversation = self.conversation(envelope.conversation_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise DecryptError(
                DecryptFailure.TAMPERED, "the envelope names a conversation this device is not a member of"
            ) from exc
        sender_key = self._signing_key(envelope.sender_username, envelope.sender_device_id)
        header = message_header(
            conversation_id=envelope.conversation_id,
            epoch=envelope.epoch,
            sender_device_id=envelope.sender_device_id,
            client_message_id=envelope.client_message_id,
            device_lists=envelope.device_lists,
        )
        if not message_signature_verify(
            header=header,
            nonce=envelope.nonce,
            ciphertext=envelope.ciphertext,
            signature=envelope.signature,
            sender_ed25519_public_key=sender_key,
        ):
            raise DecryptError(DecryptFailure.BAD_SIGNATURE, "the sender device's signature does not verify")
        chat_key = self.chat_key(conversation, envelope.epoch)
        payload = message_open(chat_key=chat_key, header=header, nonce=envelope.nonce, ciphertext=envelope.ciphertext)
        warnings = self._check_lists_seen(envelope, payload)
        seen = self._seen.setdefault(envelope.conversation_id, {})
        identity = (envelope.sender_device_id, envelope.client_message_id)
        first_seq = seen.setdefault(identity, envelope.seq)
        if first_seq != envelope.seq:
            raise DecryptError(DecryptFailure.REPLAYED, f"already received as message {first_seq}")
        return ReceivedMessage(
            seq=envelope.seq,
            conversation_id=envelope.conversation_id,
            sender_username=envelope.sender_username,
            sender_device_id=envelope.sender_device_id,
            epoch=envelope.epoch,
            payload=payload,
            created_at=envelope.created_at,
            warnings=tuple(warnings),
        )

    def _check_lists_seen(self, envelope: proto.Envelope, payload: dict[str, Any]) -> list[str]:
        """2.19: each device list the sender saw is one this device verified (the same hash at
        that version), or one it verifies on asking the server again; else DecryptError
        `device_list_mismatch`: the server showed the sender and this device different lists.
        Returns a `device_list_stale` warning for each list the sender saw long after a newer
        version was signed (the server may be keeping a device change from the sender)."""
        try:
            lists = lists_seen_decode(envelope.device_lists)
        except ValueError as exc:
            raise DecryptError(DecryptFailure.TAMPERED, f"the device lists seen are malformed: {exc}") from None
        if envelope.sender_username not in {seen.username for seen in lists}:
            raise DecryptError(
                DecryptFailure.DEVICE_LIST_MISMATCH, "the sender names no device list of its own account"
            )
        sent_at = payload.get("sent_at_ms")
        warnings: list[str] = []
        for seen in lists:
            if self._list_seen_checked(envelope.sender_username, seen, sent_at):
                warnings += self._list_seen_stale(envelope.sender_username, seen, sent_at)
        return warnings

    def _list_seen_checked(self, sender: str, seen: ListSeen, sent_at: object) -> bool:
        """True: this device verified the list `sender` saw (asking the server again if needed);
        False: it cannot be checked any more (skipped, see 2.19); else DecryptError."""
        if self._list_seen_verified(seen):
            return True
        before = self.secrets.device_lists.get(seen.username)
        try:
            verified = self.device_list(seen.username)
        except ApiError as exc:
            # An account deleted since cannot be checked; the two that matter most can.
            if exc.status == 404 and seen.username not in (self.username, sender):
                return False
            raise
        except DeviceListError as exc:
            raise DecryptError(
                DecryptFailure.DEVICE_LIST_MISMATCH, f"the device list of {seen.username!r} is refused: {exc}"
            ) from None
        except IdentityChangedError as exc:
            raise DecryptError(DecryptFailure.IDENTITY_CHANGED, str(exc)) from None
        if before != self.secrets.device_lists.get(seen.username):
            self.forget_directory(seen.username)  # a newer list: check epochs again before sending
        if self._list_seen_verified(seen):
            return True
        if isinstance(sent_at, int) and verified.entries[0].timestamp_ms > sent_at:
            # Written before the account's current list began (an identity reset, 4.8): the
            # lists of the old identity are gone from the server and cannot be checked here.
            return False
        raise DecryptError(
            DecryptFailure.DEVICE_LIST_MISMATCH,
            f"{sender!r} saw version {seen.version} of the device list of {seen.username!r}, "
            f"which differs from the one this device verified (version {verified.version})",
        )

    def _list_seen_stale(self, sender: str, seen: ListSeen, sent_at_ms: object) -> list[str]:
        """A `device_list_stale` warning if the sender wrote the message more than
        `list_stale_grace_ms` after the version following the one it saw was signed (by the
        account's own clock): the server may be keeping a device change from the sender. A
        sender that was offline meanwhile is stale honestly, hence a warning and no refusal."""
        verified = self._verified_lists[seen.username]
        if seen.version >= verified.version or not isinstance(sent_at_ms, int):
            return []
        newer = verified.entries[seen.version]  # version seen.version + 1
        late_ms = sent_at_ms - newer.timestamp_ms
        if late_ms <= self.list_stale_grace_ms:
            return []
        return [
            f"device_list_stale: {sender!r} was shown version {seen.version} of the device list of "
            f"{seen.username!r}, {late_ms // 60_000} min after version {newer.version} "
            f"({newer.change} a device) was signed"
        ]

    def _list_seen_verified(self, seen: ListSeen) -> bool:
        verified = self._verified_lists.get(seen.username)
        return (
            verified is not None
            and 1 <= seen.version <= len(verified.hashes)
            and hmac.compare_digest(verified.hashes[seen.version - 1], seen.hash)
        )

    def receive(self, envelope: proto.Envelope) -> MessageResult:
        try:
            return self.decrypt(envelope)
        except DecryptError as exc:
            return UndecryptableMessage(
                seq=envelope.seq,
                conversation_id=envelope.conversation_id,
                sender_username=envelope.sender_username,
                sender_device_id=envelope.sender_device_id,
                reason=exc.reason,
                detail=str(exc),
            )

    def envelopes(self, conversation_id: uuid.UUID, *, after: int = 0, page_size: int = 100) -> list[proto.Envelope]:
        result: list[proto.Envelope] = []
        while True:
            _, body = self.transport.execute(proto.history_request(conversation_id, after=after, limit=page_size))
            page = proto.parse_history(body)
            result.extend(page.messages)
            after = page.next_after
            if not page.has_more:
                return result

    def history(self, conversation_id: uuid.UUID, *, after: int = 0) -> list[MessageResult]:
        """Every message after `after`, decrypted where possible; failures carry their reason."""
        return [self.receive(envelope) for envelope in self.envelopes(conversation_id, after=after)]


# Why a wrapped key itself is refused (`Session.key_refused`).
_BAD_KEY_REASONS = frozenset({DecryptFailure.BAD_SIGNATURE, DecryptFailure.TAMPERED, DecryptFailure.UNVOUCHED_DEVICE})


class _CreatorUnknownError(DecryptError):
    """`epoch_manifest_invalid` because the epoch's creator is not a device this one vouches for."""


def _norm(fingerprint: str) -> str:
    return "".join(fingerprint.split()).lower()
