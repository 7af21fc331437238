"""Signed epoch manifests (docs/protocol.md 2.18): the devices an epoch's ChatKey was wrapped for
when the epoch was created, per member with the version and hash of the member's signed device
list the creator used, signed by the creating device. Pure: no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.crypto.encoding import str16, u8, u16, u32, uuid_bytes
from client.crypto.keys import DeviceKeyPair, ed25519_verify
from client.crypto.labels import EPOCH_MANIFEST_LABEL, PROTOCOL_VERSION

HASH_BYTES = 32
# The server stores manifests up to this size (protocol.md 4.3); 256 members with a few devices.
MANIFEST_MAX_BYTES = 65_536


class ManifestError(ValueError):
    """Malformed manifest bytes (reason in the message)."""


@dataclass(frozen=True)
class ManifestMember:
    username: str
    device_list_version: int
    device_list_hash: bytes
    device_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class EpochManifest:
    conversation_id: uuid.UUID
    epoch: int
    creator_device_id: uuid.UUID
    members: tuple[ManifestMember, ...]

    def devices(self) -> dict[uuid.UUID, str]:
        """Every device of the manifest -> its owner's username."""
        return {device_id: member.username for member in self.members for device_id in member.device_ids}


def _sorted_devices(device_ids: Sequence[uuid.UUID]) -> tuple[uuid.UUID, ...]:
    return tuple(sorted(device_ids, key=lambda d: d.bytes))


def epoch_manifest_bytes(manifest: EpochManifest) -> bytes:
    """The signed bytes (2.18): members by username (UTF-8 bytes), devices by their 16 id bytes.
    Raises ValueError for a malformed manifest (duplicate member or device, a bad hash)."""
    members = sorted(manifest.members, key=lambda m: m.username.encode("utf-8"))
    names = [m.username for m in members]
    if len(set(names)) != len(names):
        raise ValueError("a member is listed twice")
    seen: set[uuid.UUID] = set()
    parts = [
        EPOCH_MANIFEST_LABEL,
        u8(PROTOCOL_VERSION),
        uuid_bytes(manifest.conversation_id),
        u32(manifest.epoch),
        uuid_bytes(manifest.creator_device_id),
        u16(len(members)),
    ]
    for member in members:
        if len(member.device_list_hash) != HASH_BYTES:
            raise ValueError("device_list_hash is 32 bytes")
        devices = _sorted_devices(member.device_ids)
        if seen & set(devices) or len(set(devices)) != len(devices):
            raise ValueError("a device is listed twice")
        seen.update(devices)
        parts += [str16(member.username), u32(member.device_list_version), member.device_list_hash, u16(len(devices))]
        parts += [uuid_bytes(d) for d in devices]
    return b"".join(parts)


def epoch_manifest_build(
    *,
    conversation_id: uuid.UUID,
    epoch: int,
    creator: DeviceKeyPair,
    lists: Mapping[str, tuple[int, bytes]],
    devices: Mapping[str, Sequence[uuid.UUID]],
) -> tuple[bytes, bytes]:
    """The manifest bytes and the creator's Ed25519 signature over them. `lists` is each member's
    verified (device_list_version, device_list_hash); `devices` the devices wrapped for, by member."""
    manifest = EpochManifest(
        conversation_id=conversation_id,
        epoch=epoch,
        creator_device_id=creator.device_id,
        members=tuple(
            ManifestMember(username, lists[username][0], lists[username][1], tuple(device_ids))
            for username, device_ids in devices.items()
        ),
    )
    data = epoch_manifest_bytes(manifest)
    return data, creator.sign(data)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ManifestError("truncated")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")


def epoch_manifest_parse(data: bytes) -> EpochManifest:
    """Parse manifest bytes, refusing anything that is not the canonical encoding of 2.18."""
    reader = _Reader(data)
    if reader.take(len(EPOCH_MANIFEST_LABEL)) != EPOCH_MANIFEST_LABEL:
        raise ManifestError("not an epoch manifest")
    if reader.uint(1) != PROTOCOL_VERSION:
        raise ManifestError("unsupported version")
    conversation_id = uuid.UUID(bytes=reader.take(16))
    epoch = reader.uint(4)
    creator = uuid.UUID(bytes=reader.take(16))
    members: list[ManifestMember] = []
    for _ in range(reader.uint(2)):
        try:
            username = reader.take(reader.uint(2)).decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("username is not UTF-8") from None
        version = reader.uint(4)
        list_hash = reader.take(HASH_BYTES)
        device_ids = tuple(uuid.UUID(bytes=reader.take(16)) for _ in range(reader.uint(2)))
        members.append(ManifestMember(username, version, list_hash, device_ids))
    if reader.at != len(data):
        raise ManifestError("trailing bytes")
    manifest = EpochManifest(conversation_id, epoch, creator, tuple(members))
    try:
        canonical = epoch_manifest_bytes(manifest)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    if canonical != data:
        raise ManifestError("not in canonical order")
    return manifest


def epoch_manifest_verify(
    *, data: bytes, signature: bytes, conversation_id: uuid.UUID, epoch: int, creator_ed25519_public_key: bytes
) -> EpochManifest:
    """The manifest if `signature` by the creator verifies and it is for this conversation and
    epoch; ManifestError otherwise (never another exception: the inputs are the server's)."""
    if not ed25519_verify(creator_ed25519_public_key, signature, data):
        raise ManifestError("the signature does not verify")
    manifest = epoch_manifest_parse(data)
    if manifest.conversation_id != conversation_id or manifest.epoch != epoch:
        raise ManifestError("the manifest is for another conversation or epoch")
    return manifest
