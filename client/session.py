"""A logged-in device: the SDK's main entry point.

`Session` ties the pure crypto core to the protocol layer and a transport. It keeps the device's
secrets (persisted by `client.store.keystore`), the contacts' pinned identity keys, and, in memory
only, the ChatKeys it has unwrapped.

Trust rules (docs/protocol.md §2): a device is trusted only if its vouch verifies under its account's
pinned identity key; keys are wrapped only for trusted devices, wrapped keys are accepted only from
trusted devices of members, and messages only from trusted senders.
"""

from __future__ import annotations

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
from client.crypto.encoding import b64d, b64e
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.fingerprint import device_fingerprint
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
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
    DeviceNotFoundError,
    FingerprintMismatchError,
    IdentityChangedError,
    NoIdentityKeyError,
    UntrustedDevicesError,
)
from client.payloads import payload_text
from client.protocol import ApiError

Rng = Callable[[int], bytes]


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
        )


@dataclass(frozen=True)
class TrustedDirectory:
    username: str
    identity_key: bytes
    devices: dict[uuid.UUID, proto.PublicDevice]  # only devices whose vouch verifies
    untrusted: list[uuid.UUID]


@dataclass(frozen=True)
class ReceivedMessage:
    seq: int
    conversation_id: uuid.UUID
    sender_username: str
    sender_device_id: uuid.UUID
    epoch: int
    payload: dict[str, Any]
    created_at: str

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
        identity = IdentityKeyPair.generate(rng)
        device = DeviceKeyPair.generate(rng)
        request = proto.register_request(
            username=username,
            password=password,
            identity_key=identity.public_key,
            device_id=device.device_id,
            device_name=device_name,
            x25519_public_key=device.x25519_public_key,
            ed25519_public_key=device.ed25519_public_key,
            vouch_signature=vouch_sign(identity, device, username),
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
        """Log in from a new device. It stays pending until an active device vouches for it."""
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

    def vouch(self, device_id: uuid.UUID, *, expected_fingerprint: str | None = None) -> proto.PublicDevice:
        """Vouch for a pending device of this account with the account identity key."""
        identity = self.secrets.identity
        if identity is None:
            raise NoIdentityKeyError("this device does not hold the account identity key")
        pending = next((d for d in self.own_devices() if d.device_id == device_id), None)
        if pending is None:
            raise DeviceNotFoundError(f"no device {device_id} on this account")
        shown = device_fingerprint(pending.x25519_public_key, pending.ed25519_public_key)
        if expected_fingerprint is not None and _norm(shown) != _norm(expected_fingerprint):
            raise FingerprintMismatchError(
                f"the server holds keys with fingerprint {shown}, not {expected_fingerprint}: refusing to vouch"
            )
        signature = identity.sign(
            vouch_message(
                username=self.username,
                device_id=device_id,
                x25519_public_key=pending.x25519_public_key,
                ed25519_public_key=pending.ed25519_public_key,
            )
        )
        _, body = self.transport.execute(proto.vouch_request(device_id=device_id, vouch_signature=signature))
        self._directories.pop(self.username, None)
        return proto.PublicDevice.parse(body)

    def logout(self) -> None:
        self.transport.execute(proto.logout_request())
        self.secrets.token = None
        self.transport.token = None

    # -- trust -----------------------------------------------------------------------------------

    def _pin(self, username: str, identity_key: bytes) -> None:
        pinned = self.secrets.pins.get(username)
        if pinned is None:
            self.secrets.pins[username] = identity_key
        elif pinned != identity_key:
            raise IdentityChangedError(username)

    def directory(self, username: str, *, refresh: bool = False) -> TrustedDirectory:
        """The contact's devices that its (pinned) identity key vouched for."""
        if not refresh and username in self._directories:
            return self._directories[username]
        _, body = self.transport.execute(proto.directory_request(username))
        entry = proto.DirectoryEntry.parse(body)
        self._pin(username, entry.identity_key)
        trusted: dict[uuid.UUID, proto.PublicDevice] = {}
        untrusted: list[uuid.UUID] = []
        for device in entry.devices:
            ok = device.vouch_signature is not None and vouch_verify(
                identity_public_key=entry.identity_key,
                signature=device.vouch_signature,
                username=username,
                device_id=device.device_id,
                x25519_public_key=device.x25519_public_key,
                ed25519_public_key=device.ed25519_public_key,
            )
            if ok:
                trusted[device.device_id] = device
            else:
                untrusted.append(device.device_id)
        result = TrustedDirectory(username, entry.identity_key, trusted, untrusted)
        self._directories[username] = result
        return result

    def safety_number(self, username: str) -> str:
        own = self.secrets.pins.get(self.username) or self.directory(self.username).identity_key
        other = self.directory(username).identity_key
        return format_safety_number(safety_number(self.username, own, username, other))

    def mark_verified(self, username: str) -> None:
        self.secrets.verified[username] = self.directory(username).identity_key

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
        self, conversation_id: uuid.UUID, epoch: int, members: list[str], chat_key: bytes
    ) -> dict[uuid.UUID, tuple[bytes, bytes]]:
        wrapped: dict[uuid.UUID, tuple[bytes, bytes]] = {}
        for member in members:
            entry = self.directory(member, refresh=True)
            if entry.untrusted:
                raise UntrustedDevicesError(member, entry.untrusted)
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

    def create_conversation(self, members: list[str], *, kind: str = "group") -> proto.Conversation:
        """Create a conversation with a fresh ChatKey wrapped for every trusted device of every member."""
        everyone = sorted(set(members) | {self.username})
        conversation_id = uuid.UUID(bytes=self._rng(16), version=4)
        chat_key = chatkey_generate(self._rng)
        for attempt in range(2):
            wrapped = self._wrap_for_members(conversation_id, 1, everyone, chat_key)
            request = proto.conversation_create_request(
                conversation_id=conversation_id,
                kind=kind,
                members=[m for m in everyone if m != self.username],
                wrapped_keys=wrapped,
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

    def rotate_epoch(self, conversation_id: uuid.UUID) -> int:
        """Start a new ChatKey epoch wrapped for the members' current trusted devices."""
        conversation = self.conversation(conversation_id, refresh=True)
        number = conversation.current_epoch + 1
        chat_key = chatkey_generate(self._rng)
        wrapped = self._wrap_for_members(conversation_id, number, conversation.members, chat_key)
        self.transport.execute(
            proto.epoch_upload_request(conversation_id=conversation_id, number=number, wrapped_keys=wrapped)
        )
        self._chat_keys[(conversation_id, number)] = chat_key
        self.conversation(conversation_id, refresh=True)
        return number

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

    def _unwrap(self, conversation: proto.Conversation, record: proto.WrappedKeyRecord) -> bytes:
        if record.wrapped_by_username not in conversation.members:
            raise DecryptError(DecryptFailure.UNVOUCHED_DEVICE, "wrapped by someone who is not a member")
        wrapper = self._trusted_device(record.wrapped_by_username, record.wrapped_by_device_id)
        return chatkey_unwrap(
            wrapped_key=record.wrapped_key,
            signature=record.signature,
            conversation_id=conversation.conversation_id,
            epoch=record.epoch,
            recipient=self.secrets.device,
            wrapper_device_id=record.wrapped_by_device_id,
            wrapper_ed25519_public_key=wrapper.ed25519_public_key,
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
            attachments=attachments,
        )
        return request, sealed.client_message_id

    def send_payload(
        self, conversation_id: uuid.UUID, payload: dict[str, Any], *, attachments: list[uuid.UUID] | None = None
    ) -> proto.Envelope:
        """Seal and send; `attachments` names the media blobs the payload refers to (§4.5), so
        the conversation's members may download them."""
        conversation = self.conversation(conversation_id)
        for attempt in range(2):
            request, _ = self.seal_send(conversation, payload, attachments=attachments)
            try:
                _, body = self.transport.execute(request)
                return proto.Envelope.parse(body)
            except ApiError as exc:
                if exc.code != "stale_epoch" or attempt == 1:
                    raise
                conversation = self.conversation(conversation_id, refresh=True)
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
        sender = self._trusted_device(envelope.sender_username, envelope.sender_device_id)
        header = message_header(
            conversation_id=envelope.conversation_id,
            epoch=envelope.epoch,
            sender_device_id=envelope.sender_device_id,
            client_message_id=envelope.client_message_id,
        )
        if not message_signature_verify(
            header=header,
            nonce=envelope.nonce,
            ciphertext=envelope.ciphertext,
            signature=envelope.signature,
            sender_ed25519_public_key=sender.ed25519_public_key,
        ):
            raise DecryptError(DecryptFailure.BAD_SIGNATURE, "the sender device's signature does not verify")
        chat_key = self.chat_key(conversation, envelope.epoch)
        payload = message_open(chat_key=chat_key, header=header, nonce=envelope.nonce, ciphertext=envelope.ciphertext)
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


def _norm(fingerprint: str) -> str:
    return "".join(fingerprint.split()).lower()
