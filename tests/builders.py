"""Test data builders: devices with tokens, conversations with full epoch coverage, envelopes.

Keys, signatures and ciphertexts are random bytes of the right length: the server never
verifies or decrypts them.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rest_framework.test import APIClient

from accounts.models import User
from conversations.models import Conversation
from conversations.services import EpochManifestUpload, EpochUpload, WrappedKeyUpload, conversation_create
from devices.models import Device
from devices.services import device_token_issue
from messaging.services import EnvelopeContent
from tests.devices.factories import DeviceFactory


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class Dev:
    """A device and its live bearer token."""

    device: Device
    token: str

    @property
    def user(self) -> User:
        return self.device.user

    def client(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        return client


def make_dev(*, user: User | None = None, status: Device.Status = Device.Status.ACTIVE, **fields: Any) -> Dev:
    if user is not None:
        fields["user"] = user
    device = DeviceFactory.create(status=status, **fields)
    return Dev(device=device, token=device_token_issue(device=device))


def active_devices(*users: User) -> list[Device]:
    return list(Device.objects.filter(user__in=users, status=Device.Status.ACTIVE).order_by("id"))


def uploads_for(devices: Iterable[Device]) -> list[WrappedKeyUpload]:
    return [WrappedKeyUpload(device_id=d.id, wrapped_key=os.urandom(80), signature=os.urandom(64)) for d in devices]


def wrapped_keys_json(devices: Iterable[Device]) -> list[dict[str, str]]:
    return [
        {"device_id": str(d.id), "wrapped_key": b64(os.urandom(80)), "signature": b64(os.urandom(64))} for d in devices
    ]


def manifest_upload() -> EpochManifestUpload:
    """An epoch manifest and signature (protocol.md 2.18): random bytes, the server stores them."""
    return EpochManifestUpload(manifest=os.urandom(120), signature=os.urandom(64))


def manifest_json() -> dict[str, str]:
    """The `manifest` and `manifest_signature` fields of an epoch upload body (random bytes)."""
    return {"manifest": b64(os.urandom(120)), "manifest_signature": b64(os.urandom(64))}


def epoch_upload(number: int, devices: Iterable[Device]) -> EpochUpload:
    return EpochUpload(number, uploads_for(devices), manifest_upload())


def make_conversation(creator: Dev, *others: User, kind: Conversation.Kind = Conversation.Kind.GROUP) -> Conversation:
    """A conversation created through the service, epoch 1 covering every active member device."""
    return conversation_create(
        device=creator.device,
        conversation_id=uuid.uuid4(),
        kind=kind,
        member_usernames=[user.username for user in others],
        epoch_number=1,
        wrapped_keys=uploads_for(active_devices(creator.user, *others)),
        manifest=manifest_upload(),
    )


def envelope_content(
    conversation: Conversation,
    *,
    epoch: int = 1,
    version: int = 1,
    client_message_id: bytes | None = None,
    ciphertext: bytes | None = None,
) -> EnvelopeContent:
    return EnvelopeContent(
        conversation_id=conversation.pk,
        version=version,
        epoch=epoch,
        client_message_id=client_message_id or os.urandom(16),
        nonce=os.urandom(12),
        ciphertext=ciphertext if ciphertext is not None else os.urandom(64 + 16),
        signature=os.urandom(64),
        device_lists=os.urandom(72),
    )


def envelope_json(sender: Dev, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": 1,
        "epoch": 1,
        "sender_device_id": str(sender.device.id),
        "client_message_id": b64(os.urandom(16)),
        "nonce": b64(os.urandom(12)),
        "ciphertext": b64(os.urandom(64 + 16)),
        "signature": b64(os.urandom(64)),
        "device_lists": b64(os.urandom(72)),
    }
    body.update(overrides)
    return body


def device_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": str(uuid.uuid4()),
        "name": "laptop",
        "x25519_public_key": b64(os.urandom(32)),
        "ed25519_public_key": b64(os.urandom(32)),
    }
    body.update(overrides)
    return body


def register_json(username: str, password: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": username,
        "password": password,
        "identity_key": b64(os.urandom(32)),
        "device": device_json(vouch_signature=b64(os.urandom(64))),
    }
    body.update(overrides)
    return body


def device_list_start(device: Device) -> None:
    """Give `device`'s account its first signed device-list entry (listing `device` alone) if it
    has none: what registration through the SDK does."""
    from devices.device_list import GENESIS_PREV_HASH, DeviceListEntryData, ListedDevice
    from devices.models import DeviceListEntry
    from devices.services import device_list_append

    if DeviceListEntry.objects.filter(user_id=device.user_id).exists():
        return
    listed = ListedDevice(device.id, bytes(device.x25519_public_key), bytes(device.ed25519_public_key), device.name)
    entry = DeviceListEntryData(1, GENESIS_PREV_HASH, "created", device.id, device.id, 0, (listed,), os.urandom(64))
    device_list_append(
        user=device.user,
        entry=entry,
        change=DeviceListEntry.Change.CREATED,
        subject=device,
        actor=device,
        devices_after=[device],
    )


def link_approval_json(approver: Device, pending: Device) -> dict[str, Any]:
    """Open a link request for `pending` and return the body of an approval by `approver` that the
    server accepts (right verifier, a device-list entry following the head); signatures, MAC and
    wrapped identity key are random bytes."""
    import hashlib

    from devices.device_list import ListedDevice, device_list_entry_hash
    from devices.selectors import device_list_entry_data, device_list_head
    from devices.services import link_request_open

    device_list_start(approver)
    verifier = os.urandom(32)
    link_request_open(device=pending, verifier_hash=hashlib.sha256(verifier).digest())
    head = device_list_head(user_id=approver.user_id)
    assert head is not None
    active = list(Device.objects.filter(user_id=approver.user_id, status=Device.Status.ACTIVE))
    listed = sorted(
        (
            ListedDevice(d.id, bytes(d.x25519_public_key), bytes(d.ed25519_public_key), d.name)
            for d in [*active, pending]
        ),
        key=lambda d: d.device_id.bytes,
    )
    return {
        "verifier": b64(verifier),
        "vouch_signature": b64(os.urandom(64)),
        "device_list": {
            "version": head.version + 1,
            "prev_hash": b64(
                device_list_entry_hash(username=approver.user.username, entry=device_list_entry_data(head))
            ),
            "change": "linked",
            "subject_device_id": str(pending.id),
            "actor_device_id": str(approver.id),
            "timestamp_ms": 1764115200000,
            "devices": [
                {
                    "device_id": str(d.device_id),
                    "x25519_public_key": b64(d.x25519_public_key),
                    "ed25519_public_key": b64(d.ed25519_public_key),
                    "name": d.name,
                }
                for d in listed
            ],
            "signature": b64(os.urandom(64)),
        },
        "wrapped_identity_key": b64(os.urandom(80)),
        "approval_mac": b64(os.urandom(32)),
    }
