"""Linking a new device and revoking devices (docs/protocol.md 2.10-2.12, 2.14, 4.7).

On the new device: `link_request` shows a link code, `link_complete` checks the approval with the
code's one-time secret and takes the identity key. On an active device: `link_approve` checks the
pending device against the code, re-wraps every ChatKey for it and signs it into the device list;
`device_revoke` signs a device out of the list and rotates the conversations it could read.
Each is a `Session` method of the older name (`request_link`, `approve_link`, ...). Blocking HTTP.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client import protocol as proto
from client.crypto.device_list import (
    DeviceListEntry,
    DeviceListError,
    ListedDevice,
    device_list_entry_hash,
    device_list_next,
    device_list_verify,
)
from client.crypto.errors import DecryptError
from client.crypto.fingerprint import device_fingerprint_bytes
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
from client.crypto.vouch import vouch_message
from client.crypto.wrap import chatkey_wrap
from client.errors import (
    DeviceNotFoundError,
    FingerprintMismatchError,
    LinkApprovalInvalidError,
    LinkExpiredError,
    NoIdentityKeyError,
    UntrustedDevicesError,
)
from client.protocol import ApiError

if TYPE_CHECKING:
    from client.session import Session


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


def link_request(session: Session) -> str:
    """On the new (pending) device: make a link code, open the link request, and return the
    code to show (text and QR). The one-time secret stays on this device."""
    d = session.secrets.device
    code = LinkCode.generate(
        device_id=d.device_id,
        fingerprint=device_fingerprint_bytes(d.x25519_public_key, d.ed25519_public_key),
        rng=session.rng,
    )
    keys = link_keys(secret=code.secret, device_id=d.device_id)
    session.transport.execute(proto.link_request_open_request(verifier_hash=keys.verifier_hash))
    session.secrets.link_secret = code.secret
    return link_code_encode(code)


def link_complete(session: Session) -> bool:
    """On the new device: False while the request waits; once approved, check the approval
    with the one-time secret (it proves the approver saw this device's code, so the account
    is the genuine one), take the account identity key and pin the signed device list.
    Raises LinkExpiredError or LinkApprovalInvalidError."""
    secret = session.secrets.link_secret
    if secret is None:
        raise LinkApprovalInvalidError("this device has no link code in progress")
    _, body = session.transport.execute(proto.link_request_get_request())
    state = proto.LinkRequestState.parse(body)
    if state.status == "waiting":
        return False
    if state.status != "approved" or state.approval is None:
        raise LinkExpiredError("the link code expired; show a new one")
    approval = state.approval
    _, raw = session.transport.execute(proto.device_list_request(session.username))
    entries = [proto.parse_device_list_entry(e) for e in raw["entries"]]
    version = approval.device_list_version
    try:
        at_approval = device_list_verify(
            username=session.username, identity_public_key=approval.identity_key, entries=entries[:version]
        )
        newest = device_list_verify(
            username=session.username,
            identity_public_key=approval.identity_key,
            entries=entries,
            pinned=(version, at_approval.hash),
        )
    except DeviceListError as exc:
        raise LinkApprovalInvalidError(f"the account's device list does not verify: {exc}") from exc
    d = session.secrets.device
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
        username=session.username,
        device_id=d.device_id,
        approver_device_id=approval.approved_by_device_id,
        identity_public_key=approval.identity_key,
        device_list_hash=at_approval.hash,
        wrapped_identity_key=approval.wrapped_identity_key,
    )
    if not link_approval_verify(keys.mac_key, message, approval.approval_mac):
        raise LinkApprovalInvalidError("the approval was not made with this device's link code")
    try:
        identity = identity_key_unwrap(wrapped=approval.wrapped_identity_key, username=session.username, device=d)
    except DecryptError as exc:
        raise LinkApprovalInvalidError(str(exc)) from exc
    if identity.public_key != approval.identity_key:
        raise LinkApprovalInvalidError("the wrapped identity key is not the account's")
    session.core.trust.pin(session.username, approval.identity_key)
    session.secrets.identity = identity
    session.secrets.device_lists[session.username] = (newest.version, newest.hash)
    session.secrets.link_secret = None
    session.core.trust.directories.pop(session.username, None)
    return True


def link_approve(session: Session, code_text: str, *, batch_size: int = 200, now_ms: int | None = None) -> LinkResult:
    """On an active device holding the identity key: check the pending device's keys against
    the code's fingerprint, wrap every ChatKey epoch of every conversation for it (in batches),
    sign it into the device list and upload the approval (docs/protocol.md 4.7)."""
    code = link_code_decode(code_text)
    identity = session.secrets.identity
    if identity is None:
        raise NoIdentityKeyError("this device does not hold the account identity key")
    pending = next((d for d in session.own_devices() if d.device_id == code.device_id), None)
    if pending is None:
        raise DeviceNotFoundError(f"no device {code.device_id} on this account")
    shown = device_fingerprint_bytes(pending.x25519_public_key, pending.ed25519_public_key)
    if not hmac.compare_digest(shown, code.fingerprint):
        raise FingerprintMismatchError(
            "the server holds other keys for this device than the code shows: refusing to approve"
        )
    own_list = session.device_list(session.username)
    if session.device_id not in own_list.devices:
        raise UntrustedDevicesError(session.username, [session.device_id])
    started = time.monotonic()
    wrapped, requests = _history_wrap_for(session, pending, batch_size=batch_size)
    subject = ListedDevice(pending.device_id, pending.x25519_public_key, pending.ed25519_public_key, pending.name or "")
    entry = device_list_next(
        identity=identity,
        username=session.username,
        head=own_list.entries[-1],
        change="linked",
        subject=subject,
        actor_device_id=session.device_id,
        timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
    )
    wrapped_identity = identity_key_wrap(
        identity=identity,
        username=session.username,
        device_id=pending.device_id,
        recipient_x25519_public_key=pending.x25519_public_key,
    )
    keys = link_keys(secret=code.secret, device_id=pending.device_id)
    message = link_approval_message(
        username=session.username,
        device_id=pending.device_id,
        approver_device_id=session.device_id,
        identity_public_key=identity.public_key,
        device_list_hash=device_list_entry_hash(username=session.username, entry=entry),
        wrapped_identity_key=wrapped_identity,
    )
    request = proto.link_approve_request(
        device_id=pending.device_id,
        verifier=keys.verifier,
        vouch_signature=identity.sign(
            vouch_message(
                username=session.username,
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
            session.transport.execute(request)
            break
        except ApiError as exc:
            # An epoch started while we wrapped: wrap what is still missing and try again.
            if exc.code != "link_keys_incomplete" or attempt == 2:
                raise
            more, calls = _history_wrap_for(session, pending, batch_size=batch_size)
            wrapped, requests = wrapped + more, requests + calls
    session.secrets.device_lists[session.username] = (
        entry.version,
        device_list_entry_hash(username=session.username, entry=entry),
    )
    session.core.trust.directories.pop(session.username, None)
    return LinkResult(pending.device_id, wrapped, requests, time.monotonic() - started)


def device_revoke(
    session: Session, device_id: uuid.UUID, *, now_ms: int | None = None, rotate: bool = True
) -> RevocationResult:
    """Revoke a device of this account (itself included) and, unless it revoked itself (its
    token is dead then) or `rotate` is False, start a new ChatKey epoch in every conversation
    of the account that still reaches the device (2.14)."""
    started = time.monotonic()
    device = _device_revoke_signed(session, device_id, now_ms=now_ms)
    rotated: dict[uuid.UUID, int] = {}
    failed: dict[uuid.UUID, str] = {}
    if rotate and device_id != session.device_id:
        rotated = session.rotate_excluding({device_id}, failed=failed)
    return RevocationResult(device, rotated, time.monotonic() - started, failed)


def operator_revocations_sign(session: Session, *, now_ms: int | None = None) -> list[RevocationResult]:
    """Sign into the device list every device of this account that the server shows revoked
    (an operator's revocation, `manage.py revoke_device`) while the verified list still names
    it, and rotate its conversations: until then members see it as a hidden device (2.8)."""
    listed = session.device_list(session.username).devices
    revoked = [d.device_id for d in session.own_devices() if d.status == "revoked" and d.device_id in listed]
    return [session.revoke_device(device_id, now_ms=now_ms) for device_id in revoked]


def _device_revoke_signed(session: Session, device_id: uuid.UUID, *, now_ms: int | None = None) -> proto.PublicDevice:
    """Revoke a device of this account. A device on the signed list is signed out of it with
    the identity key in the same request (2.9); a pending one (a refused link request) is not
    on the list."""
    target = next((d for d in session.own_devices() if d.device_id == device_id), None)
    if target is None:
        raise DeviceNotFoundError(f"no device {device_id} on this account")
    entry: DeviceListEntry | None = None
    own_list = session.device_list(session.username)
    if device_id in own_list.devices:
        identity = session.secrets.identity
        if identity is None:
            raise NoIdentityKeyError("this device does not hold the account identity key")
        entry = device_list_next(
            identity=identity,
            username=session.username,
            head=own_list.entries[-1],
            change="revoked",
            subject=own_list.devices[device_id],
            actor_device_id=session.device_id,
            timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        )
    _, body = session.transport.execute(proto.revoke_request(device_id, device_list=entry))
    if entry is not None:
        session.secrets.device_lists[session.username] = (
            entry.version,
            device_list_entry_hash(username=session.username, entry=entry),
        )
    session.forget_directory(session.username)
    return proto.PublicDevice.parse(body)


def _history_wrap_for(session: Session, pending: proto.PublicDevice, *, batch_size: int) -> tuple[int, int]:
    """Wrap, for `pending`, every epoch the server says it still lacks, a page at a time;
    returns (keys uploaded, upload requests)."""
    after, wrapped, requests = 0, 0, 0
    while True:
        _, body = session.transport.execute(
            proto.link_missing_keys_request(pending.device_id, after=after, limit=batch_size)
        )
        batch: list[tuple[uuid.UUID, int, bytes, bytes]] = []
        for ref in body["epochs"]:
            conversation_id, epoch = uuid.UUID(ref["conversation_id"]), int(ref["epoch"])
            conversation = session.conversation(conversation_id)
            if epoch > conversation.current_epoch:
                conversation = session.conversation(conversation_id, refresh=True)
            w = chatkey_wrap(
                chat_key=session.chat_key(conversation, epoch),
                conversation_id=conversation_id,
                epoch=epoch,
                recipient_device_id=pending.device_id,
                recipient_x25519_public_key=pending.x25519_public_key,
                wrapper=session.secrets.device,
            )
            batch.append((conversation_id, epoch, w.wrapped_key, w.signature))
        if batch:
            session.transport.execute(proto.link_keys_upload_request(pending.device_id, batch))
            wrapped, requests = wrapped + len(batch), requests + 1
        if not body["has_more"]:
            return wrapped, requests
        after = int(body["next_after"])


def devices_verified(session: Session) -> list[tuple[proto.PublicDevice, bool]]:
    """The account's devices, each with whether it is on the verified signed device list."""
    devices = session.own_devices()
    try:
        listed = session.device_list(session.username).devices
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


def device_log(session: Session) -> list[DeviceListEntry]:
    """Every change to the account's devices, oldest first, from the verified signed list."""
    return list(session.device_list(session.username).entries)
