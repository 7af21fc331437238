"""Missing keys heal themselves (docs/protocol.md 4.8): asking for an epoch's ChatKey, and deciding
whether to re-wrap it for a device that asks.

A device that lacks the ChatKey of an epoch files a key request; the other member devices hear of
it (a `key_request` frame, or `GET /key-requests` after being offline) and each decides here, on
its own, whether the requesting device is entitled:

* the requesting device is on the verified signed device list of its account (2.9), with a valid
  vouch: a device the server made up or kept after a revocation is never answered;
* its account is a current member of the conversation (the simplest honest rule for "entitled
  to the epoch": membership is not recorded per epoch);
* and either the account is this device's own, or it is a contact whose current identity key the
  person marked verified (`Session.mark_verified`) and the conversation's history policy allows
  sharing (`history_shared`).

An answer is the ChatKey wrapped for the requester with the 2.2 construction, by this device: the
requester verifies the wrapper's signature like any wrapped key. Messages are never re-sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client import protocol as proto
from client.crypto.errors import DecryptError
from client.crypto.wrap import chatkey_wrap
from client.errors import IdentityChangedError
from client.session import Session


def history_shared(conversation: Any) -> bool:
    """Whether the conversation's policy lets verified contacts' devices re-share its keys (a
    conversation without a policy field shares: the default)."""
    return bool(getattr(conversation, "share_history", True))


@dataclass(frozen=True)
class KeyRequestOutcome:
    request: proto.KeyRequestInfo
    answered: bool  # a key was wrapped and uploaded (stored or found already served)
    reason: str  # why not, or "answered"


def key_request_file(session: Session, conversation_id: Any, epoch: int) -> proto.KeyRequestInfo:
    """Ask the other member devices for the ChatKey of `epoch` (idempotent; filing again
    announces the request again). Status "served": the key is stored for this device already.
    If the key this device holds for the epoch was refused (it does not verify: a garbage
    answer, or a row the server made up), the server drops it and the request is open again."""
    refuse_held = session.key_refused(conversation_id, epoch)
    request = proto.key_request_file_request(conversation_id, epoch, refuse_held=refuse_held)
    _, body = session.transport.execute(request)
    if refuse_held:
        session.forget_key_failure(conversation_id, epoch)
    return proto.KeyRequestInfo.parse(body)


def key_request_refusal(session: Session, request: proto.KeyRequestInfo) -> str | None:
    """Why this device must not answer `request`, or None if it may (see the module docstring).
    Blocking: reads the conversation and the requesting account's directory and device list."""
    if request.device_id == session.device_id:
        return "this device's own request"
    try:
        conversation = session.conversation(request.conversation_id, refresh=True)
    except proto.ApiError as exc:
        return f"conversation unavailable: {exc.code}"
    if request.username not in conversation.members:
        return "the requesting account is not a member"
    if request.username != session.username:
        if not history_shared(conversation):
            return "the conversation's policy does not share history"
        verified = session.secrets.verified.get(request.username)
        if verified is None:
            return "the requesting account is not verified"
        try:
            identity_key = session.directory(request.username, refresh=True).identity_key
        except IdentityChangedError:
            return "the requesting account's identity key changed and is not verified"
        if identity_key != verified:
            return "the requesting account's identity key is not the verified one"
    try:
        session.trusted_device(request.username, request.device_id)
    except DecryptError as exc:
        return f"the requesting device is not trusted: {exc}"
    return None


def key_request_answer(session: Session, request: proto.KeyRequestInfo) -> KeyRequestOutcome:
    """Re-wrap the requested ChatKey for the requesting device and upload it, if it is entitled
    and this device holds the key. Blocking."""
    refusal = key_request_refusal(session, request)
    if refusal is not None:
        return KeyRequestOutcome(request, False, refusal)
    conversation = session.conversation(request.conversation_id)
    try:
        chat_key = session.chat_key(conversation, request.epoch)
    except DecryptError as exc:
        return KeyRequestOutcome(request, False, f"this device lacks the key too: {exc.reason.value}")
    device = session.trusted_device(request.username, request.device_id)
    wrapped = chatkey_wrap(
        chat_key=chat_key,
        conversation_id=request.conversation_id,
        epoch=request.epoch,
        recipient_device_id=device.device_id,
        recipient_x25519_public_key=device.x25519_public_key,
        wrapper=session.secrets.device,
    )
    try:
        session.transport.execute(
            proto.key_request_answer_request(
                request.request_id, wrapped_key=wrapped.wrapped_key, signature=wrapped.signature
            )
        )
    except proto.ApiError as exc:
        if exc.code in {"key_request_not_found", "key_request_closed"}:
            return KeyRequestOutcome(request, False, exc.code)
        raise
    return KeyRequestOutcome(request, True, "answered")


def key_requests_answer_open(session: Session) -> list[KeyRequestOutcome]:
    """Answer every open key request this device may answer (after being offline). Blocking."""
    _, body = session.transport.execute(proto.key_requests_open_request())
    requests = [proto.KeyRequestInfo.parse(raw) for raw in body["key_requests"]]
    return [key_request_answer(session, request) for request in requests]
