"""The ChatKeys this device holds (memory only, never persisted), and how a wrapped one is accepted.

The shell hands over this device's wrapped keys of a conversation as fetched (`learn`); they are
unwrapped when an epoch's key is first wanted, each checked against the epoch's signed manifest
and its wrapper's trust (2.2, 2.16, 2.18). A key that fails is remembered with its reason, so a
missing key can be told from a refused one (`refused`, 4.8).
"""

from __future__ import annotations

import uuid

from client import protocol as proto
from client.core.needs import Fetches, KeysNeeded, NeedError
from client.core.trust import CreatorUnknownError, Trust
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair
from client.crypto.wrap import chatkey_unwrap

Slot = tuple[uuid.UUID, int]  # (conversation, epoch)

# Why a wrapped key itself is refused (`Keyring.refused`).
BAD_KEY_REASONS = frozenset({DecryptFailure.BAD_SIGNATURE, DecryptFailure.TAMPERED, DecryptFailure.UNVOUCHED_DEVICE})


class Keyring:
    def __init__(self, device: DeviceKeyPair, trust: Trust) -> None:
        self.device = device
        self.trust = trust
        self.chat_keys: dict[Slot, bytes] = {}
        self.failures: dict[Slot, DecryptError] = {}
        self._pending: dict[uuid.UUID, list[proto.WrappedKeyRecord]] = {}  # fetched, not unwrapped yet

    def add(self, conversation_id: uuid.UUID, epoch: int, chat_key: bytes) -> None:
        """A key this device made (a new epoch) or holds already."""
        self.chat_keys[(conversation_id, epoch)] = chat_key

    def learn(self, conversation_id: uuid.UUID, records: list[proto.WrappedKeyRecord]) -> None:
        """This device's wrapped keys of the conversation, as the server returned them."""
        self._pending[conversation_id] = [r for r in records if (conversation_id, r.epoch) not in self.chat_keys]

    def refused(self, conversation_id: uuid.UUID, epoch: int) -> bool:
        """The wrapped key held for the epoch is itself bad: its signature, its HPKE seal or its
        wrapper does not verify. A refused manifest or a changed identity is about the epoch or
        a person's decision, and another copy of the key would not help."""
        failure = self.failures.get((conversation_id, epoch))
        return failure is not None and failure.reason in BAD_KEY_REASONS

    def forget_failure(self, conversation_id: uuid.UUID, epoch: int) -> None:
        self.failures.pop((conversation_id, epoch), None)

    def chat_key(self, conversation: proto.Conversation, epoch: int, fetches: Fetches) -> bytes:
        """The epoch's ChatKey, unwrapping the fetched keys of the conversation if need be;
        NeedError until they were fetched during this operation, then DecryptError
        (`missing_key`, or why the key held was refused). The caller checked that the epoch
        exists (`unknown_epoch`)."""
        cid = conversation.conversation_id
        slot = (cid, epoch)
        if slot not in self.chat_keys:
            if not fetches.fresh(KeysNeeded(cid)):
                raise NeedError(KeysNeeded(cid))
            self._unwrap_pending(conversation, fetches)
        if slot in self.chat_keys:
            return self.chat_keys[slot]
        if slot in self.failures:
            raise self.failures[slot]
        raise DecryptError(DecryptFailure.MISSING_KEY, f"this device holds no key for epoch {epoch}")

    def _unwrap_pending(self, conversation: proto.Conversation, fetches: Fetches) -> None:
        pending = self._pending.get(conversation.conversation_id, [])
        while pending:
            record = pending[0]
            slot = (conversation.conversation_id, record.epoch)
            if slot not in self.chat_keys:
                try:
                    self.chat_keys[slot] = self._unwrap(conversation, record, fetches)
                    self.failures.pop(slot, None)
                except DecryptError as exc:
                    self.failures[slot] = exc
            pending.pop(0)  # not before: a NeedError above leaves the record for the next call

    def _unwrap(self, conversation: proto.Conversation, record: proto.WrappedKeyRecord, fetches: Fetches) -> bytes:
        # The wrapper may have left since (2.15), and its device may have been revoked since (2.16):
        # a device on its account's verified list, now or in an earlier version, will do. The member
        # list is the server's word; the epoch's signed manifest (2.18) binds the epoch to the
        # devices it was made for, and every one of them must be vouched for.
        try:
            manifest = self.trust.manifest_verified(
                conversation.conversation_id,
                record.epoch,
                manifest=record.manifest,
                signature=record.manifest_signature,
                creator_username=record.epoch_created_by_username,
                creator_device_id=record.epoch_created_by_device_id,
                fetches=fetches,
            )
            self.trust.manifest_check_vouched(manifest, fetches)
        except CreatorUnknownError:
            # A key given later (link, history, key request) by another device, for an epoch
            # whose creator this device cannot vouch for (its account's identity was reset
            # since): accepted on the wrapper's word, which checked the manifest itself (2.18).
            if record.wrapped_by_device_id == record.epoch_created_by_device_id:
                raise
        wrapper_key = self.trust.signing_key(record.wrapped_by_username, record.wrapped_by_device_id, fetches)
        return chatkey_unwrap(
            wrapped_key=record.wrapped_key,
            signature=record.signature,
            conversation_id=conversation.conversation_id,
            epoch=record.epoch,
            recipient=self.device,
            wrapper_device_id=record.wrapped_by_device_id,
            wrapper_ed25519_public_key=wrapper_key,
        )
