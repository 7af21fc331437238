"""The SDK's plain data: what a device keeps across restarts, what it concluded about a contact's
devices, and what became of a received message. No I/O, no behaviour beyond (de)serialising."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from client import protocol as proto
from client.crypto.encoding import b64d, b64e
from client.crypto.errors import DecryptFailure
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.payloads import payload_text


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
    # username -> (version, hash) of the newest signed device list verified: never go back (2.9)
    device_lists: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    link_secret: bytes | None = None  # the one-time secret of this device's link code, until approved
    # username -> device id -> ed25519 key of every device ever listed on a verified device list of
    # that account, kept across an identity reset (protocol.md 2.16): what they signed stays readable
    known_devices: dict[str, dict[uuid.UUID, bytes]] = field(default_factory=dict)

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
            "device_lists": {u: [v, b64e(h)] for u, (v, h) in self.device_lists.items()},
            "link_secret": b64e(self.link_secret) if self.link_secret else None,
            "known_devices": {
                u: {str(d): b64e(k) for d, k in devices.items()} for u, devices in self.known_devices.items()
            },
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
            device_lists={u: (int(v), b64d(h, length=32)) for u, (v, h) in data.get("device_lists", {}).items()},
            link_secret=b64d(data["link_secret"], length=16) if data.get("link_secret") else None,
            known_devices={
                u: {uuid.UUID(d): b64d(k, length=32) for d, k in devices.items()}
                for u, devices in data.get("known_devices", {}).items()
            },
        )


@dataclass(frozen=True)
class TrustedDirectory:
    username: str
    identity_key: bytes
    devices: dict[uuid.UUID, proto.PublicDevice]  # only devices on the verified signed list
    untrusted: list[uuid.UUID]  # shown by the server, not on the verified list (or no valid vouch)
    hidden: list[uuid.UUID] = field(default_factory=list)  # on the verified list, not shown by the server
    list_error: str | None = None  # why the account's signed device list did not verify


@dataclass(frozen=True)
class ReceivedMessage:
    seq: int
    conversation_id: uuid.UUID
    sender_username: str
    sender_device_id: uuid.UUID
    epoch: int
    payload: dict[str, Any]
    created_at: str
    # What the user should know about an accepted message, e.g. that its sender was shown an
    # outdated device list (2.19 `device_list_stale`); empty for almost every message.
    warnings: tuple[str, ...] = ()

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
