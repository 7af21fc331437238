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
from typing import Any, Protocol, TypeVar

from client import protocol as proto
from client.attachments import (
    AttachmentInfo,
    BlobTransport,
    Progress,
    download_decrypt_to,
    encrypted_file_chunks,
    guess_mime,
)
from client.core.machine import Core
from client.core.model import DeviceSecrets, MessageResult, ReceivedMessage, TrustedDirectory, UndecryptableMessage
from client.core.needs import (
    ConversationNeeded,
    DeviceListNeeded,
    DirectoryNeeded,
    Fetches,
    Missing,
    Need,
    NeedError,
    Refused,
    Sealed,
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
from client.crypto.encoding import b64d
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
from client.crypto.manifest import EpochManifest, epoch_manifest_build
from client.crypto.safety import format_safety_number, safety_number
from client.crypto.vouch import vouch_message, vouch_sign
from client.crypto.wrap import chatkey_generate, chatkey_wrap
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
from client.protocol import ApiError

__all__ = ["DeviceSecrets", "MessageResult", "ReceivedMessage", "Session", "TrustedDirectory", "UndecryptableMessage"]

T = TypeVar("T")
Rng = Callable[[int], bytes]

DEVICE_LIST_PAGE = 1000  # entries per device-list page (the server's page size)
_MANIFEST_FAILURES = (DecryptFailure.EPOCH_MANIFEST_INVALID, DecryptFailure.EPOCH_MANIFEST_UNVOUCHED)


class Transport(Protocol):
    token: str | None

    def execute(self, request: proto.Request) -> tuple[int, Any]: ...


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

    def _resolve(self, step: Callable[[Fetches], T]) -> T:
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
        self.core.trust.pin(self.username, approval.identity_key)
        self.secrets.identity = identity
        self.secrets.device_lists[self.username] = (newest.version, newest.hash)
        self.secrets.link_secret = None
        self.core.trust.directories.pop(self.username, None)
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
        self.core.trust.directories.pop(self.username, None)
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

    def device_list(self, username: str) -> VerifiedDeviceList:
        """The account's signed device list, verified from version 1 under its pinned identity key
        and against the newest version this device saw before; raises DeviceListError."""
        if username not in self.secrets.pins:
            self.directory(username)
        return self.core.trust.learn_device_list(username, self._device_list_entries(username))

    def _device_list_entries(self, username: str) -> list[DeviceListEntry]:
        entries: list[DeviceListEntry] = []
        while True:
            _, body = self.transport.execute(proto.device_list_request(username, after=len(entries)))
            page = [proto.parse_device_list_entry(e) for e in body["entries"]]
            entries.extend(page)
            if not page or len(page) < DEVICE_LIST_PAGE:
                return entries

    def directory(self, username: str, *, refresh: bool = False) -> TrustedDirectory:
        """The contact's devices that are on its verified signed device list (2.9) with a vouch
        under its (pinned) identity key; the others are untrusted, and listed devices the server
        does not show are hidden."""
        cached = self.core.trust.directories.get(username)
        if cached is not None and not refresh:
            return cached
        _, body = self.transport.execute(proto.directory_request(username))
        entry = proto.DirectoryEntry.parse(body)
        self.core.trust.pin(username, entry.identity_key)
        entries: list[DeviceListEntry] | ApiError
        try:
            entries = self._device_list_entries(username)
        except ApiError as exc:
            entries = exc
        return self.core.trust.learn_directory(entry, entries)

    def forget_directory(self, username: str) -> None:
        """Drop the cached directory of `username` (its device list changed); epochs are checked
        against the lists again before the next send (2.14)."""
        self.core.trust.forget_directory(username)

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
            self.core.trust.directories.pop(username, None)
            self.core.trust.lists_checked.discard(username)
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
        return self._resolve(lambda fetches: self.core.trust.trusted_device(username, device_id, fetches))

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
        self.core.learn_conversation(conversation)
        self.core.keys.add(conversation_id, 1, chat_key)
        return conversation

    def rotate_epoch(self, conversation_id: uuid.UUID, *, refresh_directories: bool = True) -> int:
        """Start a new ChatKey epoch wrapped for the members' current trusted devices."""
        conversation = self.conversation(conversation_id, refresh=True)
        number = conversation.current_epoch + 1
        chat_key = chatkey_generate(self._rng)
        epoch = self._new_epoch(conversation_id, number, conversation.members, chat_key, refresh=refresh_directories)
        self.transport.execute(proto.epoch_upload_request(conversation_id=conversation_id, epoch=epoch))
        self.core.keys.add(conversation_id, number, chat_key)
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
        trust = self.core.trust

        def checked(fetches: Fetches) -> EpochManifest:
            manifest = trust.manifest_verified(
                conversation.conversation_id,
                info.epoch,
                manifest=info.manifest,
                signature=info.manifest_signature,
                creator_username=info.created_by_username,
                creator_device_id=info.created_by_device_id,
                fetches=fetches,
            )
            trust.manifest_check_vouched(manifest, fetches)
            trust.manifest_check_versions(manifest, fetches)
            return manifest

        manifest = self._resolve(checked)
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
        if (conversation_id, conversation.current_epoch) in self.core.trust.epochs_checked:
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
                self.core.trust.epochs_checked.add((conversation_id, conversation.current_epoch))
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
        self.core.trust.epochs_checked.clear()
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
        self.core.forget_conversation(conversation_id)

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
                self.core.keys.add(conversation_id, epoch.number, chat_key)
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
            self.core.keys.add(conversation_id, number, chat_key)
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

    def key_refused(self, conversation_id: uuid.UUID, epoch: int) -> bool:
        """The wrapped key this device holds for the epoch is itself bad: its signature, its HPKE
        seal or its wrapper does not verify (4.8: file the key request again with `refuse_held`).
        A refused manifest or a changed identity is about the epoch or a person's decision, and
        another copy of the key would not help."""
        return self.core.keys.refused(conversation_id, epoch)

    def forget_key_failure(self, conversation_id: uuid.UUID, epoch: int) -> None:
        """The refused key is gone from the server: look for the epoch's key again next time."""
        self.core.keys.forget_failure(conversation_id, epoch)

    def chat_key(self, conversation: proto.Conversation, epoch: int) -> bytes:
        """The epoch's ChatKey (fetching and unwrapping this device's wrapped keys if need be);
        DecryptError `unknown_epoch`, `missing_key` or why the key held was refused."""
        return self._resolve(lambda fetches: self.core.chat_key(conversation, epoch, fetches))

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
        lists_seen = self.lists_seen(conversation)
        fetches = Fetches()
        while True:
            sealed = self.core.seal(
                conversation,
                payload,
                fetches,
                rng=rng or self._rng,
                client_message_id=client_message_id,
                attachments=attachments,
                lists_seen=lists_seen,
            )
            if isinstance(sealed, Sealed):
                return sealed.request, sealed.client_message_id
            self.fetch(sealed.need, fetches)

    def lists_seen(self, conversation: proto.Conversation) -> bytes:
        """The newest verified device list (version, hash) of every member, encoded for the
        header of a message to the conversation (2.19); verifies a list not seen yet."""
        return self._resolve(lambda fetches: self.core.trust.lists_seen(conversation.members, fetches))

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
        fetches = Fetches()
        while True:
            outcome = self.core.open(envelope, fetches)
            if isinstance(outcome, Missing):
                self.fetch(outcome.need, fetches)
            elif isinstance(outcome, Refused):
                raise outcome.error
            else:
                return outcome

    def receive_step(self, envelope: proto.Envelope, fetches: Fetches) -> MessageResult | Missing:
        """One call of the core for `receive`, without I/O: the message, or what to `fetch` first
        (the realtime client fetches in a worker thread and opens on its event loop)."""
        outcome = self.core.open(envelope, fetches)
        if isinstance(outcome, Refused):
            return _undecryptable(envelope, outcome.error)
        return outcome

    def receive(self, envelope: proto.Envelope) -> MessageResult:
        try:
            return self.decrypt(envelope)
        except DecryptError as exc:
            return _undecryptable(envelope, exc)

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


def _undecryptable(envelope: proto.Envelope, error: DecryptError) -> UndecryptableMessage:
    return UndecryptableMessage(
        seq=envelope.seq,
        conversation_id=envelope.conversation_id,
        sender_username=envelope.sender_username,
        sender_device_id=envelope.sender_device_id,
        reason=error.reason,
        detail=str(error),
    )
