"""The protocol layer: builds requests and parses responses, with no I/O (docs/protocol.md §3-4).

Everything here is data in, data out, so that any transport (HTTP, or the WebSocket gateway) can carry
it and tests can check it without a server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from client.crypto.device_list import DeviceListEntry, ListedDevice
from client.crypto.encoding import b64d, b64e

API_PREFIX = "/api/v1"
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True


class ApiError(Exception):
    """An error answer of the server: `{"code", "message", "extra"}` with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


def raise_for_error(status: int, body: Any) -> None:
    if status < 400:
        return
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        raise ApiError(status, body["code"], str(body.get("message", "")), body.get("extra") or {})
    raise ApiError(status, "unexpected_response", f"HTTP {status} without an error body")


# ---------------------------------------------------------------------------------------------
# Parsed objects


@dataclass(frozen=True)
class PublicDevice:
    device_id: uuid.UUID
    x25519_public_key: bytes
    ed25519_public_key: bytes
    vouch_signature: bytes | None
    name: str | None = None
    status: str | None = None
    created_at: str | None = None
    last_seen_at: str | None = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PublicDevice:
        sig = data.get("vouch_signature")
        return cls(
            device_id=uuid.UUID(data["device_id"]),
            x25519_public_key=b64d(data["x25519_public_key"], length=32),
            ed25519_public_key=b64d(data["ed25519_public_key"], length=32),
            vouch_signature=b64d(sig, length=64) if sig else None,
            name=data.get("name"),
            status=data.get("status"),
            created_at=data.get("created_at"),
            last_seen_at=data.get("last_seen_at"),
        )


@dataclass(frozen=True)
class DirectoryEntry:
    username: str
    identity_key: bytes
    devices: list[PublicDevice]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> DirectoryEntry:
        return cls(
            username=data["username"],
            identity_key=b64d(data["identity_key"], length=32),
            devices=[PublicDevice.parse(d) for d in data["devices"]],
        )


@dataclass(frozen=True)
class Conversation:
    conversation_id: uuid.UUID
    kind: str
    members: list[str]
    current_epoch: int
    last_seq: int
    created_at: str
    share_history: bool = True

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Conversation:
        return cls(
            conversation_id=uuid.UUID(data["conversation_id"]),
            kind=data["kind"],
            members=list(data["members"]),
            current_epoch=int(data["current_epoch"]),
            last_seq=int(data["last_seq"]),
            created_at=data["created_at"],
            share_history=bool(data.get("share_history", True)),
        )


@dataclass(frozen=True)
class Envelope:
    seq: int
    conversation_id: uuid.UUID
    version: int
    epoch: int
    sender_device_id: uuid.UUID
    sender_username: str
    client_message_id: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    created_at: str
    device_lists: bytes  # the device lists its sender saw (protocol.md 2.19)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            seq=int(data["seq"]),
            conversation_id=uuid.UUID(data["conversation_id"]),
            version=int(data["version"]),
            epoch=int(data["epoch"]),
            sender_device_id=uuid.UUID(data["sender_device_id"]),
            sender_username=data["sender_username"],
            client_message_id=b64d(data["client_message_id"], length=16),
            nonce=b64d(data["nonce"], length=12),
            ciphertext=b64d(data["ciphertext"]),
            signature=b64d(data["signature"], length=64),
            created_at=data["created_at"],
            device_lists=b64d(data["device_lists"]),
        )


@dataclass(frozen=True)
class WrappedKeyRecord:
    epoch: int
    wrapped_key: bytes
    signature: bytes
    wrapped_by_device_id: uuid.UUID
    wrapped_by_username: str
    # The epoch's signed manifest (2.18) and who created the epoch; empty if the server has none.
    epoch_created_by_device_id: uuid.UUID
    epoch_created_by_username: str
    manifest: bytes
    manifest_signature: bytes

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WrappedKeyRecord:
        return cls(
            epoch=int(data["epoch"]),
            wrapped_key=b64d(data["wrapped_key"], length=80),
            signature=b64d(data["signature"], length=64),
            wrapped_by_device_id=uuid.UUID(data["wrapped_by_device_id"]),
            wrapped_by_username=data["wrapped_by_username"],
            epoch_created_by_device_id=uuid.UUID(data["epoch_created_by_device_id"]),
            epoch_created_by_username=str(data["epoch_created_by_username"]),
            manifest=b64d(data.get("manifest", "")),
            manifest_signature=b64d(data.get("manifest_signature", "")),
        )


@dataclass(frozen=True)
class EpochInfo:
    """An epoch and the devices the server holds its ChatKey wrapped for (4.3)."""

    conversation_id: uuid.UUID
    epoch: int
    created_by_device_id: uuid.UUID
    recipients: dict[uuid.UUID, str]  # device id -> username
    created_by_username: str = ""
    manifest: bytes = b""
    manifest_signature: bytes = b""

    @classmethod
    def parse(cls, data: dict[str, Any]) -> EpochInfo:
        return cls(
            conversation_id=uuid.UUID(data["conversation_id"]),
            epoch=int(data["epoch"]),
            created_by_device_id=uuid.UUID(data["created_by_device_id"]),
            recipients={uuid.UUID(r["device_id"]): str(r["username"]) for r in data["recipients"]},
            created_by_username=str(data.get("created_by_username", "")),
            manifest=b64d(data.get("manifest", "")),
            manifest_signature=b64d(data.get("manifest_signature", "")),
        )


@dataclass(frozen=True)
class HistoryPage:
    messages: list[Envelope]
    has_more: bool
    next_after: int


# ---------------------------------------------------------------------------------------------
# Request builders (one per endpoint of docs/protocol.md §4)


def _device_body(device_id: uuid.UUID, name: str, x25519: bytes, ed25519: bytes) -> dict[str, Any]:
    return {
        "device_id": str(device_id),
        "name": name,
        "x25519_public_key": b64e(x25519),
        "ed25519_public_key": b64e(ed25519),
    }


def register_request(
    *,
    username: str,
    password: str,
    identity_key: bytes,
    device_id: uuid.UUID,
    device_name: str,
    x25519_public_key: bytes,
    ed25519_public_key: bytes,
    vouch_signature: bytes,
    device_list: DeviceListEntry,
) -> Request:
    device = _device_body(device_id, device_name, x25519_public_key, ed25519_public_key)
    device["vouch_signature"] = b64e(vouch_signature)
    body = {
        "username": username,
        "password": password,
        "identity_key": b64e(identity_key),
        "device": device,
        "device_list": device_list_entry_body(device_list),
    }
    return Request("POST", f"{API_PREFIX}/accounts/register", body, authenticated=False)


def login_request(
    *,
    username: str,
    password: str,
    device_id: uuid.UUID,
    device_name: str,
    x25519_public_key: bytes,
    ed25519_public_key: bytes,
) -> Request:
    device = _device_body(device_id, device_name, x25519_public_key, ed25519_public_key)
    body = {"username": username, "password": password, "device": device}
    return Request("POST", f"{API_PREFIX}/accounts/login", body, authenticated=False)


def logout_request() -> Request:
    return Request("POST", f"{API_PREFIX}/accounts/logout", {})


def me_request() -> Request:
    return Request("GET", f"{API_PREFIX}/accounts/me")


def directory_request(username: str) -> Request:
    return Request("GET", f"{API_PREFIX}/users/{username}", authenticated=False)


def own_devices_request() -> Request:
    return Request("GET", f"{API_PREFIX}/devices")


def _wrapped_keys_body(wrapped: dict[uuid.UUID, tuple[bytes, bytes]]) -> list[dict[str, str]]:
    return [
        {"device_id": str(device_id), "wrapped_key": b64e(key), "signature": b64e(sig)}
        for device_id, (key, sig) in sorted(wrapped.items(), key=lambda item: str(item[0]))
    ]


@dataclass(frozen=True)
class NewEpoch:
    """A new epoch's keys: its ChatKey wrapped per device and its signed manifest (2.18)."""

    number: int
    wrapped_keys: dict[uuid.UUID, tuple[bytes, bytes]]
    manifest: bytes
    manifest_signature: bytes


def _epoch_body(epoch: NewEpoch) -> dict[str, Any]:
    return {
        "number": epoch.number,
        "wrapped_keys": _wrapped_keys_body(epoch.wrapped_keys),
        "manifest": b64e(epoch.manifest),
        "manifest_signature": b64e(epoch.manifest_signature),
    }


def conversation_create_request(
    *,
    conversation_id: uuid.UUID,
    kind: str,
    members: list[str],
    epoch: NewEpoch,
    share_history: bool = True,
) -> Request:
    body = {
        "conversation_id": str(conversation_id),
        "kind": kind,
        "members": members,
        "epoch": _epoch_body(epoch),
        "share_history": share_history,
    }
    return Request("POST", f"{API_PREFIX}/conversations", body)


def epoch_upload_request(*, conversation_id: uuid.UUID, epoch: NewEpoch) -> Request:
    body = _epoch_body(epoch)
    return Request("POST", f"{API_PREFIX}/conversations/{conversation_id}/epochs", body)


def conversation_list_request() -> Request:
    return Request("GET", f"{API_PREFIX}/conversations")


def conversation_get_request(conversation_id: uuid.UUID) -> Request:
    return Request("GET", f"{API_PREFIX}/conversations/{conversation_id}")


def epoch_get_request(conversation_id: uuid.UUID, number: int) -> Request:
    return Request("GET", f"{API_PREFIX}/conversations/{conversation_id}/epochs/{number}")


def member_add_request(
    *,
    conversation_id: uuid.UUID,
    username: str,
    history_keys: list[tuple[int, uuid.UUID, bytes, bytes]],
    epoch: NewEpoch | None,
) -> Request:
    body: dict[str, Any] = {
        "username": username,
        "history_keys": [
            {"epoch": n, "device_id": str(d), "wrapped_key": b64e(key), "signature": b64e(sig)}
            for n, d, key, sig in history_keys
        ],
    }
    if epoch is not None:
        body["epoch"] = _epoch_body(epoch)
    return Request("POST", f"{API_PREFIX}/conversations/{conversation_id}/members", body)


def member_remove_request(*, conversation_id: uuid.UUID, username: str, epoch: NewEpoch | None) -> Request:
    body: dict[str, Any] = {}
    if epoch is not None:
        body["epoch"] = _epoch_body(epoch)
    return Request("DELETE", f"{API_PREFIX}/conversations/{conversation_id}/members/{username}", body)


def keys_request(conversation_id: uuid.UUID) -> Request:
    return Request("GET", f"{API_PREFIX}/conversations/{conversation_id}/keys")


def send_request(
    *,
    conversation_id: uuid.UUID,
    epoch: int,
    sender_device_id: uuid.UUID,
    client_message_id: bytes,
    nonce: bytes,
    ciphertext: bytes,
    signature: bytes,
    device_lists: bytes,
    version: int = PROTOCOL_VERSION,
    attachments: list[uuid.UUID] | None = None,
) -> Request:
    body: dict[str, Any] = {
        "version": version,
        "epoch": epoch,
        "sender_device_id": str(sender_device_id),
        "client_message_id": b64e(client_message_id),
        "nonce": b64e(nonce),
        "ciphertext": b64e(ciphertext),
        "signature": b64e(signature),
        "device_lists": b64e(device_lists),
    }
    if attachments:
        body["attachments"] = [str(blob_id) for blob_id in attachments]
    return Request("POST", f"{API_PREFIX}/conversations/{conversation_id}/messages", body)


def history_request(conversation_id: uuid.UUID, *, after: int = 0, limit: int = 100) -> Request:
    return Request(
        "GET",
        f"{API_PREFIX}/conversations/{conversation_id}/messages",
        params={"after": str(after), "limit": str(limit)},
    )


def parse_history(body: dict[str, Any]) -> HistoryPage:
    return HistoryPage(
        messages=[Envelope.parse(m) for m in body["messages"]],
        has_more=bool(body["has_more"]),
        next_after=int(body["next_after"]),
    )


# ---------------------------------------------------------------------------------------------
# Media (§4.5)


@dataclass(frozen=True)
class MediaLink:
    """A capability URL to PUT or GET a blob: no bearer token goes with it."""

    url: str
    method: str
    headers: dict[str, str]
    expires_in_s: int

    @classmethod
    def parse(cls, data: dict[str, Any]) -> MediaLink:
        return cls(
            url=str(data["url"]),
            method=str(data["method"]),
            headers={str(k): str(v) for k, v in dict(data.get("headers") or {}).items()},
            expires_in_s=int(data["expires_in_s"]),
        )


def media_create_request(length: int) -> Request:
    return Request("POST", f"{API_PREFIX}/media", {"length": length})


def media_complete_request(blob_id: uuid.UUID) -> Request:
    return Request("POST", f"{API_PREFIX}/media/{blob_id}/complete")


def media_download_request(blob_id: uuid.UUID) -> Request:
    return Request("GET", f"{API_PREFIX}/media/{blob_id}")


# Linking and the signed device list (docs/protocol.md 4.7)


def parse_device_list_entry(data: dict[str, Any]) -> DeviceListEntry:
    return DeviceListEntry(
        version=int(data["version"]),
        prev_hash=b64d(data["prev_hash"], length=32),
        change=str(data["change"]),
        subject_device_id=uuid.UUID(data["subject_device_id"]),
        actor_device_id=uuid.UUID(data["actor_device_id"]),
        timestamp_ms=int(data["timestamp_ms"]),
        devices=tuple(
            ListedDevice(
                device_id=uuid.UUID(d["device_id"]),
                x25519_public_key=b64d(d["x25519_public_key"], length=32),
                ed25519_public_key=b64d(d["ed25519_public_key"], length=32),
                name=str(d["name"]),
            )
            for d in data["devices"]
        ),
        signature=b64d(data["signature"], length=64),
    )


def device_list_entry_body(entry: DeviceListEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "prev_hash": b64e(entry.prev_hash),
        "change": entry.change,
        "subject_device_id": str(entry.subject_device_id),
        "actor_device_id": str(entry.actor_device_id),
        "timestamp_ms": entry.timestamp_ms,
        "devices": [
            {
                "device_id": str(d.device_id),
                "x25519_public_key": b64e(d.x25519_public_key),
                "ed25519_public_key": b64e(d.ed25519_public_key),
                "name": d.name,
            }
            for d in entry.devices
        ],
        "signature": b64e(entry.signature),
    }


def device_list_request(username: str, *, after: int = 0) -> Request:
    return Request(
        "GET", f"{API_PREFIX}/users/{username}/device-list", params={"after": str(after)}, authenticated=False
    )


def revoke_request(device_id: uuid.UUID, *, device_list: DeviceListEntry | None) -> Request:
    body = {"device_list": device_list_entry_body(device_list)} if device_list is not None else {}
    return Request("POST", f"{API_PREFIX}/devices/{device_id}/revoke", body)


def link_request_open_request(*, verifier_hash: bytes) -> Request:
    return Request("POST", f"{API_PREFIX}/devices/link", {"verifier_hash": b64e(verifier_hash)})


def link_request_get_request() -> Request:
    return Request("GET", f"{API_PREFIX}/devices/link")


def link_missing_keys_request(device_id: uuid.UUID, *, after: int, limit: int) -> Request:
    return Request(
        "GET",
        f"{API_PREFIX}/devices/{device_id}/link/missing-keys",
        params={"after": str(after), "limit": str(limit)},
    )


def link_keys_upload_request(device_id: uuid.UUID, wrapped_keys: list[tuple[uuid.UUID, int, bytes, bytes]]) -> Request:
    body = {
        "wrapped_keys": [
            {"conversation_id": str(cid), "epoch": epoch, "wrapped_key": b64e(key), "signature": b64e(sig)}
            for cid, epoch, key, sig in wrapped_keys
        ]
    }
    return Request("POST", f"{API_PREFIX}/devices/{device_id}/link/keys", body)


def link_approve_request(
    *,
    device_id: uuid.UUID,
    verifier: bytes,
    vouch_signature: bytes,
    device_list: DeviceListEntry,
    wrapped_identity_key: bytes,
    approval_mac: bytes,
) -> Request:
    body = {
        "verifier": b64e(verifier),
        "vouch_signature": b64e(vouch_signature),
        "device_list": device_list_entry_body(device_list),
        "wrapped_identity_key": b64e(wrapped_identity_key),
        "approval_mac": b64e(approval_mac),
    }
    return Request("POST", f"{API_PREFIX}/devices/{device_id}/link/approve", body)


@dataclass(frozen=True)
class LinkApproval:
    approved_by_device_id: uuid.UUID
    identity_key: bytes
    device_list_version: int
    wrapped_identity_key: bytes
    approval_mac: bytes


@dataclass(frozen=True)
class LinkRequestState:
    device_id: uuid.UUID
    status: str  # "waiting", "approved" or "expired"
    expires_at: str
    approval: LinkApproval | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> LinkRequestState:
        raw = data.get("approval")
        approval = (
            LinkApproval(
                approved_by_device_id=uuid.UUID(raw["approved_by_device_id"]),
                identity_key=b64d(raw["identity_key"], length=32),
                device_list_version=int(raw["device_list_version"]),
                wrapped_identity_key=b64d(raw["wrapped_identity_key"], length=80),
                approval_mac=b64d(raw["approval_mac"], length=32),
            )
            if raw
            else None
        )
        return cls(uuid.UUID(data["device_id"]), str(data["status"]), str(data["expires_at"]), approval)


# -- key requests (§4.8) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRequestInfo:
    """`KeyRequest` of §4.8: a member device lacks an epoch's ChatKey."""

    request_id: uuid.UUID
    conversation_id: uuid.UUID
    epoch: int
    username: str
    device_id: uuid.UUID
    status: str  # "open" or "served"
    created_at: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> KeyRequestInfo:
        return cls(
            request_id=uuid.UUID(data["request_id"]),
            conversation_id=uuid.UUID(data["conversation_id"]),
            epoch=int(data["epoch"]),
            username=str(data["username"]),
            device_id=uuid.UUID(data["device_id"]),
            status=str(data["status"]),
            created_at=str(data["created_at"]),
        )


def key_request_file_request(conversation_id: uuid.UUID, epoch: int, *, refuse_held: bool = False) -> Request:
    body: dict[str, Any] = {"epoch": epoch}
    if refuse_held:
        body["refuse_held"] = True
    return Request("POST", f"{API_PREFIX}/conversations/{conversation_id}/key-requests", body)


def key_requests_open_request() -> Request:
    return Request("GET", f"{API_PREFIX}/key-requests")


def key_request_answer_request(request_id: uuid.UUID, *, wrapped_key: bytes, signature: bytes) -> Request:
    body = {"wrapped_key": b64e(wrapped_key), "signature": b64e(signature)}
    return Request("POST", f"{API_PREFIX}/key-requests/{request_id}/answer", body)


def reset_identity_request(
    *,
    username: str,
    password: str,
    identity_key: bytes,
    device_id: uuid.UUID,
    device_name: str,
    x25519_public_key: bytes,
    ed25519_public_key: bytes,
    vouch_signature: bytes,
    device_list: DeviceListEntry,
) -> Request:
    """§4.8: the body of a registration, for an existing account whose devices are all lost."""
    body = register_request(
        username=username,
        password=password,
        identity_key=identity_key,
        device_id=device_id,
        device_name=device_name,
        x25519_public_key=x25519_public_key,
        ed25519_public_key=ed25519_public_key,
        vouch_signature=vouch_signature,
        device_list=device_list,
    ).json
    return Request("POST", f"{API_PREFIX}/accounts/reset-identity", body, authenticated=False)


# ---------------------------------------------------------------------------------------------
# Push notifications (docs/protocol.md 4.6)


@dataclass(frozen=True)
class PushTarget:
    """This device's push target. `secret` (webhook only) is present only in the answer to
    registering it: the relay keeps it to check each wake-up's signature."""

    kind: str
    url: str
    created_at: str
    secret: str | None = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PushTarget:
        secret = data.get("secret")
        return cls(
            kind=str(data["kind"]),
            url=str(data["url"]),
            created_at=str(data["created_at"]),
            secret=None if secret is None else str(secret),
        )


def push_target_set_request(*, kind: str, url: str, keys: dict[str, str] | None = None) -> Request:
    body: dict[str, Any] = {"kind": kind, "url": url}
    if keys is not None:
        body["keys"] = dict(keys)
    return Request("PUT", f"{API_PREFIX}/devices/me/push-target", body)


def push_target_get_request() -> Request:
    return Request("GET", f"{API_PREFIX}/devices/me/push-target")


def push_target_delete_request() -> Request:
    return Request("DELETE", f"{API_PREFIX}/devices/me/push-target")


def conversation_mute_request(conversation_id: uuid.UUID, *, muted: bool) -> Request:
    return Request("PUT" if muted else "DELETE", f"{API_PREFIX}/conversations/{conversation_id}/mute")
