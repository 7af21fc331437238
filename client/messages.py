"""Sending and receiving messages and attachments (docs/protocol.md 2.3, 2.7, 4.4-4.5), through
the core's one seal and one open (`client.core`): this module only fetches what the core lacks
and moves envelopes and blobs. Each function is also a `Session` method (`send_text`,
`receive`, `history`, ...). Blocking HTTP.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import protocol as proto
from client.attachments import (
    AttachmentInfo,
    BlobTransport,
    Progress,
    download_decrypt_to,
    encrypted_file_chunks,
    guess_mime,
)
from client.core.model import MessageResult, ReceivedMessage, UndecryptableMessage
from client.core.needs import Fetches, Missing, Refused, Sealed
from client.crypto.attachment import AttachmentEncryptor, attachment_ciphertext_length, attachment_key_generate
from client.crypto.errors import DecryptError
from client.crypto.keys import Rng
from client.errors import AttachmentError
from client.protocol import ApiError

if TYPE_CHECKING:
    from client.session import Session


def text_send(session: Session, conversation_id: uuid.UUID, body: str, *, now_ms: int | None = None) -> proto.Envelope:
    sent_at = now_ms if now_ms is not None else int(time.time() * 1000)
    return session.send_payload(conversation_id, {"type": "text", "body": body, "sent_at_ms": sent_at})


def message_seal(
    session: Session,
    conversation: proto.Conversation,
    payload: dict[str, Any],
    *,
    client_message_id: bytes | None = None,
    rng: Rng | None = None,
    attachments: list[uuid.UUID] | None = None,
) -> tuple[proto.Request, bytes]:
    """Encrypt and sign `payload` for the conversation's current epoch: the send request (the
    same body goes over REST and in a WebSocket `send` frame) and its client message id."""
    lists_seen = session.lists_seen(conversation)
    fetches = Fetches()
    while True:
        sealed = session.core.seal(
            conversation,
            payload,
            fetches,
            rng=rng or session.rng,
            client_message_id=client_message_id,
            attachments=attachments,
            lists_seen=lists_seen,
        )
        if isinstance(sealed, Sealed):
            return sealed.request, sealed.client_message_id
        if isinstance(sealed, Refused):
            raise sealed.error
        session.fetch(sealed.need, fetches)


def lists_seen(session: Session, conversation: proto.Conversation) -> bytes:
    """The newest verified device list (version, hash) of every member, encoded for the
    header of a message to the conversation (2.19); verifies a list not seen yet."""
    return session.resolve(lambda fetches: session.core.trust.lists_seen(conversation.members, fetches))


def payload_send(
    session: Session, conversation_id: uuid.UUID, payload: dict[str, Any], *, attachments: list[uuid.UUID] | None = None
) -> proto.Envelope:
    """Seal and send; `attachments` names the media blobs the payload refers to (§4.5), so
    the conversation's members may download them."""
    conversation = session.conversation_for_send(conversation_id)
    for attempt in range(2):
        request, _ = session.seal_send(conversation, payload, attachments=attachments)
        try:
            _, body = session.transport.execute(request)
            return proto.Envelope.parse(body)
        except ApiError as exc:
            if exc.code != "stale_epoch" or attempt == 1:
                raise
            conversation = session.conversation_for_send(conversation_id, refresh=True)
    raise AssertionError("unreachable")


def _blob_transport(session: Session) -> BlobTransport:
    if not isinstance(session.transport, BlobTransport):
        raise AttachmentError("this transport cannot move media blobs")
    return session.transport


def file_upload(
    session: Session, path: Path, *, progress: Progress | None = None, mime: str | None = None
) -> AttachmentInfo:
    """Encrypt `path` under a fresh key while streaming it to a new blob; the payload data."""
    blobs = _blob_transport(session)
    path = Path(path)
    size = path.stat().st_size
    key = attachment_key_generate(session.rng)
    length = attachment_ciphertext_length(size)
    _, body = session.transport.execute(proto.media_create_request(length))
    blob_id = uuid.UUID(body["blob_id"])
    encryptor = AttachmentEncryptor(key)
    chunks = encrypted_file_chunks(path, encryptor, size=size)
    blobs.upload_blob(proto.MediaLink.parse(body["upload"]), chunks, length, progress=progress)
    session.transport.execute(proto.media_complete_request(blob_id))
    return AttachmentInfo(
        blob_id=blob_id,
        key=key,
        digest=encryptor.digest,
        size=size,
        mime=mime or guess_mime(path),
        name=path.name,
    )


def file_send(
    session: Session,
    conversation_id: uuid.UUID,
    path: Path | str,
    *,
    progress: Progress | None = None,
    mime: str | None = None,
    now_ms: int | None = None,
) -> tuple[proto.Envelope, AttachmentInfo]:
    """Upload `path` encrypted and send an `attachment` message naming it."""
    info = session.upload_file(Path(path), progress=progress, mime=mime)
    sent_at = now_ms if now_ms is not None else int(time.time() * 1000)
    envelope = session.send_payload(conversation_id, info.to_payload(sent_at_ms=sent_at), attachments=[info.blob_id])
    return envelope, info


def attachment_save(
    session: Session, payload: dict[str, Any], directory: Path | str, *, progress: Progress | None = None
) -> Path:
    """Download the blob of a received `attachment` payload, verify and decrypt it into
    `directory` under its sanitised original name (never overwriting); the path written."""
    info = AttachmentInfo.from_payload(payload)
    _, body = session.transport.execute(proto.media_download_request(info.blob_id))
    if int(body["length"]) != info.ciphertext_length:
        raise AttachmentError(f"the server holds {body['length']} bytes, the message says {info.ciphertext_length}")
    link = proto.MediaLink.parse(body["download"])
    return download_decrypt_to(_blob_transport(session), link, info, Path(directory), progress=progress)


def message_decrypt(session: Session, envelope: proto.Envelope) -> ReceivedMessage:
    """Verify and decrypt one envelope, in the order of docs/protocol.md §2.3; raise DecryptError."""
    fetches = Fetches()
    while True:
        outcome = session.core.open(envelope, fetches)
        if isinstance(outcome, Missing):
            session.fetch(outcome.need, fetches)
        elif isinstance(outcome, Refused):
            raise outcome.error
        else:
            return outcome


def message_receive_step(session: Session, envelope: proto.Envelope, fetches: Fetches) -> MessageResult | Missing:
    """One call of the core for `receive`, without I/O: the message, or what to `fetch` first
    (the realtime client fetches in a worker thread and opens on its event loop)."""
    outcome = session.core.open(envelope, fetches)
    if isinstance(outcome, Refused):
        return _undecryptable(envelope, outcome.error)
    return outcome


def message_receive(session: Session, envelope: proto.Envelope) -> MessageResult:
    try:
        return session.decrypt(envelope)
    except DecryptError as exc:
        return _undecryptable(envelope, exc)


def envelopes_fetch(
    session: Session, conversation_id: uuid.UUID, *, after: int = 0, page_size: int = 100
) -> list[proto.Envelope]:
    result: list[proto.Envelope] = []
    while True:
        _, body = session.transport.execute(proto.history_request(conversation_id, after=after, limit=page_size))
        page = proto.parse_history(body)
        result.extend(page.messages)
        after = page.next_after
        if not page.has_more:
            return result


def history_read(session: Session, conversation_id: uuid.UUID, *, after: int = 0) -> list[MessageResult]:
    """Every message after `after`, decrypted where possible; failures carry their reason."""
    return [session.receive(envelope) for envelope in session.envelopes(conversation_id, after=after)]


def _undecryptable(envelope: proto.Envelope, error: DecryptError) -> UndecryptableMessage:
    return UndecryptableMessage(
        seq=envelope.seq,
        conversation_id=envelope.conversation_id,
        sender_username=envelope.sender_username,
        sender_device_id=envelope.sender_device_id,
        reason=error.reason,
        detail=str(error),
    )
