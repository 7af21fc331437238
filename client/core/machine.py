"""The SDK's sans-I/O core: given what this device knows, seal or open a message, or say what is
missing (like matrix-nio's `OlmMachine`).

    core = Core(secrets)
    fetches = Fetches()
    while isinstance(outcome := core.open(envelope, fetches), Missing):
        ...fetch outcome.need, hand it to core.learn_*, fetches.record(outcome.need)...
    # outcome: a ReceivedMessage, or Refused with the failed check's reason

`Session` (synchronous, `client.session`) and `RealtimeClient` (asyncio, `client.realtime`) are
the shells that fetch; the core holds every rule of docs/protocol.md §2 about whom to trust and
which key opens what, and never touches the network, the disk or the clock.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from client import protocol as proto
from client.core.envelope import envelope_open, envelope_seal
from client.core.keyring import Keyring
from client.core.model import DeviceSecrets, ReceivedMessage
from client.core.needs import ConversationNeeded, Fetches, Missing, NeedError, Refused, Sealed
from client.core.trust import Trust
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import Rng
from client.protocol import ApiError


class Core:
    def __init__(self, secrets: DeviceSecrets) -> None:
        self.secrets = secrets
        self.trust = Trust(secrets)
        self.keys = Keyring(secrets.device, self.trust)
        self.conversations: dict[uuid.UUID, proto.Conversation] = {}
        # conversation -> (sender device, client message id) -> the seq it was first received at
        self._seen: dict[uuid.UUID, dict[tuple[uuid.UUID, bytes], int]] = {}

    # -- what the shell fetched --------------------------------------------------------------------

    def learn_conversation(self, conversation: proto.Conversation) -> None:
        self.conversations[conversation.conversation_id] = conversation

    def forget_conversation(self, conversation_id: uuid.UUID) -> None:
        """Its members changed: read it again, and check its epoch again before sending (2.14)."""
        self.conversations.pop(conversation_id, None)
        self.trust.epochs_checked = {slot for slot in self.trust.epochs_checked if slot[0] != conversation_id}

    def conversation(
        self, conversation_id: uuid.UUID, fetches: Fetches, *, refresh: bool = False
    ) -> proto.Conversation:
        """The conversation held (fetched during this operation if `refresh`); NeedError if not."""
        need = ConversationNeeded(conversation_id)
        if (fetches.fresh(need) or not refresh) and conversation_id in self.conversations:
            return self.conversations[conversation_id]
        raise NeedError(need)

    def chat_key(self, conversation: proto.Conversation, epoch: int, fetches: Fetches) -> bytes:
        """The epoch's ChatKey; DecryptError `unknown_epoch` for an epoch the conversation does not
        have, `missing_key` if this device holds none; NeedError for what must be fetched first."""
        if (conversation.conversation_id, epoch) not in self.keys.chat_keys:
            if epoch > conversation.current_epoch:
                conversation = self.conversation(conversation.conversation_id, fetches, refresh=True)
            if epoch > conversation.current_epoch or epoch < 1:
                raise DecryptError(DecryptFailure.UNKNOWN_EPOCH, f"epoch {epoch} does not exist")
        return self.keys.chat_key(conversation, epoch, fetches)

    # -- sealing and opening -----------------------------------------------------------------------

    def seal(
        self,
        conversation: proto.Conversation,
        payload: dict[str, Any],
        fetches: Fetches,
        *,
        rng: Rng = os.urandom,
        client_message_id: bytes | None = None,
        attachments: list[uuid.UUID] | None = None,
        lists_seen: bytes | None = None,
    ) -> Sealed | Refused | Missing:
        """Encrypt and sign `payload` for the conversation's current epoch, naming the members'
        device lists this device verified (2.19; `lists_seen` if the caller has them encoded).
        Whether the epoch is safe to send under (2.14) is the shell's check before
        (`Session.conversation_for_send`)."""
        try:
            epoch = conversation.current_epoch
            chat_key = self.chat_key(conversation, epoch, fetches)
            if lists_seen is None:
                lists_seen = self.trust.lists_seen(conversation.members, fetches)
        except NeedError as missing:
            return Missing(missing.need)
        except DecryptError as exc:  # no usable key for the epoch (missing_key, or refused)
            return Refused(exc)
        return envelope_seal(
            chat_key=chat_key,
            conversation_id=conversation.conversation_id,
            epoch=epoch,
            sender=self.secrets.device,
            payload=payload,
            lists_seen=lists_seen,
            rng=rng,
            client_message_id=client_message_id,
            attachments=attachments,
        )

    def open(self, envelope: proto.Envelope, fetches: Fetches) -> ReceivedMessage | Refused | Missing:
        """Verify and decrypt one envelope in the order of docs/protocol.md §2.3: the version, the
        epoch's range, the conversation, a trusted sender and its signature, the epoch's key, the
        AEAD, the device lists the sender saw (2.19), replay. An error fetching something is
        raised unless it is a verdict on the message (a conversation the server does not show
        this device: `tampered`)."""
        try:
            keys = _OpenKeys(self, fetches)
            payload = envelope_open(envelope, keys)
            warnings = self.trust.lists_seen_check(envelope, payload.get("sent_at_ms"), fetches)
        except NeedError as missing:
            return Missing(missing.need)
        except DecryptError as exc:
            return Refused(exc)
        seen = self._seen.setdefault(envelope.conversation_id, {})
        first_seq = seen.setdefault((envelope.sender_device_id, envelope.client_message_id), envelope.seq)
        if first_seq != envelope.seq:
            return Refused(DecryptError(DecryptFailure.REPLAYED, f"already received as message {first_seq}"))
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


class _OpenKeys:
    """The keys `envelope_open` asks for, under the session's trust rules."""

    def __init__(self, core: Core, fetches: Fetches) -> None:
        self._core = core
        self._fetches = fetches
        self._conversation: proto.Conversation | None = None

    def sender_key(self, envelope: proto.Envelope) -> bytes:
        try:
            self._conversation = self._core.conversation(envelope.conversation_id, self._fetches)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise DecryptError(
                DecryptFailure.TAMPERED, "the envelope names a conversation this device is not a member of"
            ) from exc
        return self._core.trust.signing_key(envelope.sender_username, envelope.sender_device_id, self._fetches)

    def chat_key(self, envelope: proto.Envelope) -> bytes:
        assert self._conversation is not None  # sender_key came first
        return self._core.chat_key(self._conversation, envelope.epoch, self._fetches)
