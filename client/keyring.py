"""ChatKey epochs (docs/protocol.md 2.2, 2.14-2.15, 2.18): creating conversations, rotating
epochs when a device or member must lose access, membership changes, and the keys held.

Every new epoch's ChatKey is wrapped for every trusted device of every member, with the signed
manifest of exactly those devices; before a send the current epoch is checked against the
verified device lists and rotated if it reaches a revoked device or a former member. Each function
is also a `Session` method (`create_conversation`, `rotate_epoch`, `add_member`, ...). Blocking HTTP.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from client import protocol as proto
from client.core.needs import Fetches
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.manifest import EpochManifest, epoch_manifest_build
from client.crypto.wrap import chatkey_generate, chatkey_wrap
from client.errors import (
    DeviceListInvalidError,
    EpochManifestError,
    HiddenDevicesError,
    SdkError,
    ServerUnreachableError,
    StaleEpochError,
    UntrustedDevicesError,
)
from client.protocol import ApiError

if TYPE_CHECKING:
    from client.session import Session


_MANIFEST_FAILURES = (DecryptFailure.EPOCH_MANIFEST_INVALID, DecryptFailure.EPOCH_MANIFEST_UNVOUCHED)


def _wrap_for_members(
    session: Session,
    conversation_id: uuid.UUID,
    epoch: int,
    members: list[str],
    chat_key: bytes,
    *,
    refresh: bool = True,
) -> dict[uuid.UUID, tuple[bytes, bytes]]:
    wrapped: dict[uuid.UUID, tuple[bytes, bytes]] = {}
    for member in members:
        entry = session.directory(member, refresh=refresh)
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
                wrapper=session.secrets.device,
            )
            wrapped[device.device_id] = (w.wrapped_key, w.signature)
    return wrapped


def _new_epoch(
    session: Session,
    conversation_id: uuid.UUID,
    number: int,
    members: list[str],
    chat_key: bytes,
    *,
    refresh: bool = True,
) -> proto.NewEpoch:
    """The epoch's ChatKey wrapped for every trusted device of every member, with the manifest
    of exactly those devices signed by this device (protocol.md 2.18)."""
    wrapped = _wrap_for_members(session, conversation_id, number, members, chat_key, refresh=refresh)
    devices = {member: sorted(session.directory(member).devices) for member in members}
    manifest, signature = epoch_manifest_build(
        conversation_id=conversation_id,
        epoch=number,
        creator=session.secrets.device,
        lists={member: session.secrets.device_lists[member] for member in members},
        devices=devices,
    )
    return proto.NewEpoch(number, wrapped, manifest, signature)


def conversation_create(
    session: Session, members: list[str], *, kind: str = "group", share_history: bool = True
) -> proto.Conversation:
    """Create a conversation with a fresh ChatKey wrapped for every trusted device of every member."""
    everyone = sorted(set(members) | {session.username})
    conversation_id = uuid.UUID(bytes=session.rng(16), version=4)
    chat_key = chatkey_generate(session.rng)
    for attempt in range(2):
        request = proto.conversation_create_request(
            conversation_id=conversation_id,
            kind=kind,
            members=[m for m in everyone if m != session.username],
            epoch=_new_epoch(session, conversation_id, 1, everyone, chat_key),
            share_history=share_history,
        )
        try:
            _, body = session.transport.execute(request)
            break
        except ApiError as exc:
            # A device joined between our directory read and the upload: read again, once.
            if exc.code != "missing_devices" or attempt == 1:
                raise
    conversation = proto.Conversation.parse(body)
    session.core.learn_conversation(conversation)
    session.core.keys.add(conversation_id, 1, chat_key)
    return conversation


def epoch_rotate(session: Session, conversation_id: uuid.UUID, *, refresh_directories: bool = True) -> int:
    """Start a new ChatKey epoch wrapped for the members' current trusted devices."""
    conversation = session.conversation(conversation_id, refresh=True)
    number = conversation.current_epoch + 1
    chat_key = chatkey_generate(session.rng)
    epoch = _new_epoch(session, conversation_id, number, conversation.members, chat_key, refresh=refresh_directories)
    session.transport.execute(proto.epoch_upload_request(conversation_id=conversation_id, epoch=epoch))
    session.core.keys.add(conversation_id, number, chat_key)
    session.conversation(conversation_id, refresh=True)
    return number


def epoch_info(session: Session, conversation_id: uuid.UUID, epoch: int) -> proto.EpochInfo:
    """The devices the server holds the epoch's ChatKey wrapped for."""
    _, body = session.transport.execute(proto.epoch_get_request(conversation_id, epoch))
    return proto.EpochInfo.parse(body)


def epoch_stale_recipients(session: Session, conversation: proto.Conversation) -> list[tuple[str, uuid.UUID]]:
    """Recipients of the current epoch that must not read what comes next: devices not on
    their owner's verified device list (revoked), and accounts that are no longer members."""
    info = session.epoch_info(conversation.conversation_id, conversation.current_epoch)
    trust = session.core.trust

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

    manifest = session.resolve(checked)
    # The manifest's devices hold the key (those revoked since are stale too); a recipient
    # outside it got its key later (link, history, key request) and must be trusted now.
    holders = {**manifest.devices(), **info.recipients}
    stale: list[tuple[str, uuid.UUID]] = []
    refreshed: set[str] = set()
    for device_id, username in sorted(holders.items(), key=lambda item: str(item[0])):
        if username not in conversation.members:
            stale.append((username, device_id))
            continue
        entry = session.directory(username)
        if device_id not in entry.devices and username not in refreshed:
            entry = session.directory(username, refresh=True)  # it may have been linked since
            refreshed.add(username)
        if device_id not in entry.devices:
            stale.append((username, device_id))
    return stale


def conversation_for_send(session: Session, conversation_id: uuid.UUID, *, refresh: bool = False) -> proto.Conversation:
    """The conversation, with a current epoch safe to send under: if its key reaches a revoked
    device or a former member, start a new epoch first (2.14). An epoch is checked once,
    and again after any device list is known to have changed. Raises StaleEpochError."""
    conversation = session.conversation(conversation_id, refresh=refresh)
    if (conversation_id, conversation.current_epoch) in session.core.trust.epochs_checked:
        return conversation
    stale: list[tuple[str, uuid.UUID]] = []
    manifest_error: DecryptError | None = None
    for _ in range(3):
        try:
            stale, manifest_error = session.epoch_stale_recipients(conversation), None
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
            session.core.trust.epochs_checked.add((conversation_id, conversation.current_epoch))
            return conversation
        try:
            session.rotate_epoch(conversation_id)
        except ApiError as exc:
            # Someone else rotated first (check their epoch), or a device appeared meanwhile.
            if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices"):
                raise
        conversation = session.conversation(conversation_id, refresh=True)
    if manifest_error is not None:
        raise EpochManifestError(conversation_id, manifest_error.reason.value, manifest_error.message)
    raise StaleEpochError(conversation_id, stale)


def epochs_rotate_excluding(
    session: Session, device_ids: set[uuid.UUID], *, failed: dict[uuid.UUID, str] | None = None
) -> dict[uuid.UUID, int]:
    """Start a new epoch in every conversation of the account whose current epoch reaches
    one of `device_ids` (after a revocation). Each member's directory is read once for the
    whole batch; a conflict with another member's rotation is re-checked, not overwritten.
    Returns the new epoch by conversation. With `failed`, a conversation that cannot be
    rotated (an untrusted or hidden device of a member, ...) is recorded there with the
    reason and the batch goes on; without it, the error is raised."""
    conversations = session.conversations()
    for member in sorted({m for c in conversations for m in c.members}):
        session.directory(member, refresh=True)
    rotated: dict[uuid.UUID, int] = {}
    for conversation in conversations:
        try:
            epoch = _epoch_rotate_excluding(session, conversation, device_ids)
        except (ApiError, SdkError) as exc:
            if failed is None:
                raise
            failed[conversation.conversation_id] = str(exc)
            continue
        if epoch is not None:
            rotated[conversation.conversation_id] = epoch
    session.core.trust.epochs_checked.clear()
    return rotated


def _epoch_rotate_excluding(
    session: Session, conversation: proto.Conversation, device_ids: set[uuid.UUID]
) -> int | None:
    cid = conversation.conversation_id
    for attempt in range(3):
        info = session.epoch_info(cid, conversation.current_epoch)
        if not device_ids & info.recipients.keys():
            return None
        try:
            return session.rotate_epoch(cid, refresh_directories=attempt > 0)
        except ApiError as exc:
            if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices") or attempt == 2:
                raise
        conversation = session.conversation(cid, refresh=True)
    raise AssertionError("unreachable")


def members_changed(session: Session, conversation_id: uuid.UUID) -> None:
    """Forget the cached view of a conversation whose members changed: the next send reads it
    again and checks its epoch against the new members (2.14)."""
    session.core.forget_conversation(conversation_id)


def member_add(session: Session, conversation_id: uuid.UUID, username: str) -> proto.Conversation:
    """Add `username` to a group conversation. If the conversation shares history, wrap every
    epoch's ChatKey for the newcomer's trusted devices; if not, start a new epoch for all
    members, newcomer included, so it reads only from its join on."""
    for attempt in range(3):
        conversation = session.conversation(conversation_id, refresh=True)
        history: list[tuple[int, uuid.UUID, bytes, bytes]] = []
        epoch: proto.NewEpoch | None = None
        chat_key = b""
        if conversation.share_history:
            session.directory(username, refresh=True)
            for number in range(1, conversation.current_epoch + 1):
                key = session.chat_key(conversation, number)
                wrapped = _wrap_for_members(session, conversation_id, number, [username], key, refresh=False)
                history.extend((number, d, w, sig) for d, (w, sig) in wrapped.items())
        else:
            chat_key = chatkey_generate(session.rng)
            number = conversation.current_epoch + 1
            epoch = _new_epoch(session, conversation_id, number, [*conversation.members, username], chat_key)
        request = proto.member_add_request(
            conversation_id=conversation_id, username=username, history_keys=history, epoch=epoch
        )
        try:
            session.transport.execute(request)
        except ApiError as exc:
            retry = ("epoch_conflict", "missing_devices", "unexpected_devices", "history_keys_mismatch")
            if exc.code not in retry or attempt == 2:
                raise
            continue
        if epoch is not None:
            session.core.keys.add(conversation_id, epoch.number, chat_key)
        session.members_changed(conversation_id)
        return session.conversation(conversation_id)
    raise AssertionError("unreachable")


def member_remove(session: Session, conversation_id: uuid.UUID, username: str) -> proto.Conversation | None:
    """Remove `username` from a group conversation and start, in the same request, a new epoch
    wrapped only for the remaining members' trusted devices. Removing oneself is `leave`."""
    if username == session.username:
        session.leave(conversation_id)
        return None
    for attempt in range(3):
        conversation = session.conversation(conversation_id, refresh=True)
        remaining = [m for m in conversation.members if m != username]
        number = conversation.current_epoch + 1
        chat_key = chatkey_generate(session.rng)
        request = proto.member_remove_request(
            conversation_id=conversation_id,
            username=username,
            epoch=_new_epoch(session, conversation_id, number, remaining, chat_key),
        )
        try:
            session.transport.execute(request)
        except ApiError as exc:
            if exc.code not in ("epoch_conflict", "missing_devices", "unexpected_devices") or attempt == 2:
                raise
            continue
        session.core.keys.add(conversation_id, number, chat_key)
        session.members_changed(conversation_id)
        return session.conversation(conversation_id)
    raise AssertionError("unreachable")


def conversation_leave(session: Session, conversation_id: uuid.UUID) -> None:
    """Leave a group conversation. This device cannot rotate for the others (it would hold the
    new key): the remaining members' clients start a new epoch before their next send (2.14)."""
    session.transport.execute(
        proto.member_remove_request(conversation_id=conversation_id, username=session.username, epoch=None)
    )
    session.members_changed(conversation_id)


def key_refused(session: Session, conversation_id: uuid.UUID, epoch: int) -> bool:
    """The wrapped key this device holds for the epoch is itself bad: its signature, its HPKE
    seal or its wrapper does not verify (4.8: file the key request again with `refuse_held`).
    A refused manifest or a changed identity is about the epoch or a person's decision, and
    another copy of the key would not help."""
    return session.core.keys.refused(conversation_id, epoch)


def key_failure_forget(session: Session, conversation_id: uuid.UUID, epoch: int) -> None:
    """The refused key is gone from the server: look for the epoch's key again next time."""
    session.core.keys.forget_failure(conversation_id, epoch)


def chat_key(session: Session, conversation: proto.Conversation, epoch: int) -> bytes:
    """The epoch's ChatKey (fetching and unwrapping this device's wrapped keys if need be);
    DecryptError `unknown_epoch`, `missing_key` or why the key held was refused."""
    return session.resolve(lambda fetches: session.core.chat_key(conversation, epoch, fetches))
