"""Whom this device trusts (docs/protocol.md 2.8-2.9, 2.16, 2.18-2.19), decided without I/O.

`Trust` holds the pinned identity keys and verified device lists (in `DeviceSecrets`, persisted)
and, in memory, each contact's directory as last verified. The shell hands it what it fetched
(`learn_directory`, `learn_device_list`); every check reads only what it holds and raises
`NeedError` for what it lacks (see `client.core.needs`).

Rules: a device is trusted only if it is on its account's signed device list, verified from
version 1 under the pinned identity key and never older than the newest version seen, and its
vouch verifies; a device listed in an earlier version and revoked since still counts as the
signer of what it sent before (2.16).
"""

from __future__ import annotations

import hmac
import uuid

from client import protocol as proto
from client.core.model import DeviceSecrets, TrustedDirectory
from client.core.needs import DeviceListNeeded, DirectoryNeeded, Fetches, NeedError
from client.crypto.device_list import (
    DeviceListEntry,
    DeviceListError,
    ListedDevice,
    VerifiedDeviceList,
    device_list_verify,
)
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.lists_seen import ListSeen, lists_seen_decode, lists_seen_encode
from client.crypto.manifest import EpochManifest, ManifestError, epoch_manifest_verify
from client.crypto.vouch import vouch_verify
from client.errors import IdentityChangedError
from client.protocol import ApiError

# Default of `Trust.list_stale_grace_ms` (protocol.md 2.19).
LIST_STALE_GRACE_MS = 10 * 60 * 1000


class CreatorUnknownError(DecryptError):
    """`epoch_manifest_invalid` because the epoch's creator is not a device this one vouches for."""


class Trust:
    def __init__(self, secrets: DeviceSecrets) -> None:
        self.secrets = secrets
        self.directories: dict[str, TrustedDirectory] = {}
        # The newest verified chain of each account's device list in this session, for checking
        # the lists a message's sender saw (2.19) at any version without asking the server again.
        self.verified_lists: dict[str, VerifiedDeviceList] = {}
        self.lists_checked: set[str] = set()  # accounts whose device list verified in this session
        # Epochs whose recipients were checked against the verified device lists (2.14); cleared
        # whenever a device list is known to have changed.
        self.epochs_checked: set[tuple[uuid.UUID, int]] = set()
        # How long after a device-list change a sender may still honestly name the version
        # before it (2.19): propagation plus clock skew between devices.
        self.list_stale_grace_ms = LIST_STALE_GRACE_MS

    @property
    def username(self) -> str:
        return self.secrets.username

    # -- learning what the shell fetched ------------------------------------------------------------

    def pin(self, username: str, identity_key: bytes) -> None:
        """Pin `username`'s identity key on first sight; IdentityChangedError if it differs."""
        pinned = self.secrets.pins.get(username)
        if pinned is None:
            self.secrets.pins[username] = identity_key
        elif pinned != identity_key:
            raise IdentityChangedError(username)

    def learn_device_list(self, username: str, entries: list[DeviceListEntry]) -> VerifiedDeviceList:
        """Verify the account's whole signed device list from version 1 under its pinned identity
        key and against the newest version this device saw before; raises DeviceListError. A
        newer version than the one seen means its devices changed: its directory is forgotten
        and epochs are checked again before the next send (2.14)."""
        identity_key = self.secrets.pins.get(username)
        if identity_key is None:
            raise DeviceListError(f"no identity key is pinned for {username!r}")
        before = self.secrets.device_lists.get(username)
        verified = device_list_verify(
            username=username, identity_public_key=identity_key, entries=entries, pinned=before
        )
        if before is not None and before != (verified.version, verified.hash):
            self.forget_directory(username)
        self.secrets.device_lists[username] = (verified.version, verified.hash)
        self.verified_lists[username] = verified
        known = self.secrets.known_devices.setdefault(username, {})
        for entry in verified.entries:
            for listed in entry.devices:
                known.setdefault(listed.device_id, listed.ed25519_public_key)
        return verified

    def learn_directory(
        self, entry: proto.DirectoryEntry, list_entries: list[DeviceListEntry] | ApiError
    ) -> TrustedDirectory:
        """The contact's devices that are on its verified signed device list (2.9) with a vouch
        under its (pinned) identity key; the others are untrusted, and listed devices the server
        does not show are hidden. `list_entries` is the fetched device list, or why it was not."""
        username = entry.username
        self.pin(username, entry.identity_key)
        listed: dict[uuid.UUID, ListedDevice] = {}
        list_error: str | None = None
        if isinstance(list_entries, ApiError):
            list_error = f"the server did not return the device list: {list_entries.code}"
        else:
            try:
                listed = self.learn_device_list(username, list_entries).devices
            except DeviceListError as exc:
                list_error = str(exc)
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
        self.directories[username] = result
        return result

    def forget_directory(self, username: str) -> None:
        """Drop what is cached of `username`'s devices (its device list changed); epochs are
        checked against the lists again before the next send (2.14)."""
        self.directories.pop(username, None)
        self.lists_checked.discard(username)
        self.epochs_checked.clear()

    # -- reading, or saying what is missing ---------------------------------------------------------

    def directory(self, username: str, fetches: Fetches, *, refresh: bool = False) -> TrustedDirectory:
        """The directory held (fetched during this operation if `refresh`); NeedError if not."""
        need = DirectoryNeeded(username)
        if (fetches.fresh(need) or not refresh) and username in self.directories:
            return self.directories[username]
        raise NeedError(need)

    def device_list(self, username: str, fetches: Fetches) -> VerifiedDeviceList:
        """The account's device list as verified during this operation; NeedError if not yet."""
        if username not in self.secrets.pins:
            self.directory(username, fetches)  # its identity key is pinned from the directory
        need = DeviceListNeeded(username)
        if fetches.fresh(need) and username in self.verified_lists:
            return self.verified_lists[username]
        raise NeedError(need)

    def trusted_device(self, username: str, device_id: uuid.UUID, fetches: Fetches) -> proto.PublicDevice:
        """The device if it is on `username`'s verified signed device list with a valid vouch
        under the pinned identity key; DecryptError (unvouched_device, identity_changed) if not."""
        try:
            entry = self.directory(username, fetches)
            if device_id not in entry.devices:
                entry = self.directory(username, fetches, refresh=True)
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

    def signing_key(self, username: str, device_id: uuid.UUID, fetches: Fetches) -> bytes:
        """The ed25519 key of the device that signed a message or wrapped a ChatKey: a trusted
        device, or one listed in an earlier version of the account's verified signed device list
        and revoked since (a lost device): what it sent and wrapped before stays readable after
        the revocation (protocol.md 4.8). Anything else raises the trusted-device DecryptError."""
        try:
            return self.trusted_device(username, device_id, fetches).ed25519_public_key
        except DecryptError as exc:
            if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                raise
            # Only while the account's current list verifies (no rollback or forgery going on);
            # verifying it also records every device of its chain in `known_devices`.
            if username not in self.lists_checked or device_id not in self.secrets.known_devices.get(username, {}):
                try:
                    self.device_list(username, fetches)
                except (DeviceListError, ApiError, IdentityChangedError):
                    raise exc from None
                self.lists_checked.add(username)
            known = self.secrets.known_devices.get(username, {})
            if device_id not in known:
                raise
            return known[device_id]

    # -- epoch manifests (2.18) ----------------------------------------------------------------------

    def manifest_verified(
        self,
        conversation_id: uuid.UUID,
        epoch: int,
        *,
        manifest: bytes,
        signature: bytes,
        creator_username: str,
        creator_device_id: uuid.UUID,
        fetches: Fetches,
    ) -> EpochManifest:
        """The epoch's manifest if it is signed by the device that created the epoch, a device
        of a vouched account (trusted, or revoked since: 2.16), is for this conversation and
        epoch and names its creator; DecryptError `epoch_manifest_invalid` if not."""
        if not manifest:
            raise DecryptError(DecryptFailure.EPOCH_MANIFEST_INVALID, f"epoch {epoch} carries no manifest")
        try:
            creator_key = self.signing_key(creator_username, creator_device_id, fetches)
        except DecryptError as exc:
            if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                raise
            raise CreatorUnknownError(
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

    def manifest_check_vouched(self, manifest: EpochManifest, fetches: Fetches) -> None:
        """Every device the manifest names is on its owner's verified device list, now or in an
        earlier verified version (2.16); else DecryptError `epoch_manifest_unvouched`."""
        for device_id, username in sorted(manifest.devices().items(), key=lambda item: str(item[0])):
            try:
                self.signing_key(username, device_id, fetches)
            except DecryptError as exc:
                if exc.reason != DecryptFailure.UNVOUCHED_DEVICE:
                    raise
                raise DecryptError(
                    DecryptFailure.EPOCH_MANIFEST_UNVOUCHED,
                    f"epoch {manifest.epoch} was wrapped for device {device_id} of {username!r}, "
                    f"which is not vouched for by its identity key",
                ) from None

    def manifest_check_versions(self, manifest: EpochManifest, fetches: Fetches) -> None:
        """Each member's device list version in the manifest is one this device verified (equal
        hash at the same version) or older; else DecryptError `epoch_manifest_invalid`."""
        for member in manifest.members:
            seen = self.secrets.device_lists.get(member.username)
            if seen is None or member.device_list_version > seen[0]:
                self.directory(member.username, fetches, refresh=True)
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

    # -- the device lists a message's sender saw (2.19) ----------------------------------------------

    def lists_seen(self, members: list[str], fetches: Fetches) -> bytes:
        """The newest verified device list (version, hash) of every member, encoded for the
        header of a message to the conversation; NeedError for a list not verified yet."""
        seen: list[ListSeen] = []
        for username in members:
            if username not in self.secrets.device_lists:
                self.device_list(username, fetches)
            version, digest = self.secrets.device_lists[username]
            seen.append(ListSeen(username, version, digest))
        return lists_seen_encode(seen)

    def lists_seen_check(self, envelope: proto.Envelope, sent_at: object, fetches: Fetches) -> list[str]:
        """Each device list the sender saw is one this device verified (the same hash at that
        version), or one it verifies on asking the server again; else DecryptError
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
        warnings: list[str] = []
        for seen in lists:
            if self._list_seen_checked(envelope.sender_username, seen, sent_at, fetches):
                warnings += self._list_seen_stale(envelope.sender_username, seen, sent_at)
        return warnings

    def _list_seen_checked(self, sender: str, seen: ListSeen, sent_at: object, fetches: Fetches) -> bool:
        """True: this device verified the list `sender` saw (asking the server again if needed);
        False: it cannot be checked any more (skipped, see 2.19); else DecryptError."""
        if self._list_seen_verified(seen):
            return True
        try:
            verified = self.device_list(seen.username, fetches)
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
        verified = self.verified_lists[seen.username]
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
        verified = self.verified_lists.get(seen.username)
        return (
            verified is not None
            and 1 <= seen.version <= len(verified.hashes)
            and hmac.compare_digest(verified.hashes[seen.version - 1], seen.hash)
        )
