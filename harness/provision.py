"""Accounts, devices and conversations for realtime tests and benchmarks, made through the SDK over HTTP.

Everything a realtime client needs is obtained the way a real device obtains it: `Session.register`
and `Session.login` + `vouch` create vouched devices, `Session.create_conversation` wraps a fresh
ChatKey for every device, and each device fetches and opens its own wrapped keys and checks every
member's vouches (`Session.chat_key`, `Session.directory`). The result per device is a
`DeviceProfile`: its keys, its token, its ChatKeys and the trusted signing keys of the devices it may
receive from. It is plain data (`to_dict`/`from_dict`), so it crosses process boundaries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from client.crypto.encoding import b64d, b64e
from client.crypto.keys import DeviceKeyPair
from client.session import Session
from client.transport.http import HttpTransport

PASSWORD = "realtime-bench-password-2026!"  # noqa: S105 (test accounts on a throwaway server)


@dataclass(frozen=True)
class TrustedSender:
    """A device whose vouch verified under its account's pinned identity key."""

    username: str
    ed25519_public_key: bytes


@dataclass(frozen=True)
class ConversationKeys:
    conversation_id: uuid.UUID
    members: frozenset[str]
    chat_keys: dict[int, bytes]  # epoch -> ChatKey, opened by this device
    lists_seen: bytes = b""  # the members' device lists this device verified (protocol.md 2.19)


@dataclass
class DeviceProfile:
    username: str
    device: DeviceKeyPair
    token: str
    conversations: dict[uuid.UUID, ConversationKeys] = field(default_factory=dict)
    trusted: dict[uuid.UUID, TrustedSender] = field(default_factory=dict)

    @property
    def device_id(self) -> uuid.UUID:
        return self.device.device_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "device": self.device.to_private_dict(),
            "token": self.token,
            "conversations": [
                {
                    "conversation_id": str(c.conversation_id),
                    "members": sorted(c.members),
                    "chat_keys": {str(epoch): b64e(key) for epoch, key in c.chat_keys.items()},
                    "lists_seen": b64e(c.lists_seen),
                }
                for c in self.conversations.values()
            ],
            "trusted": {str(d): [t.username, b64e(t.ed25519_public_key)] for d, t in self.trusted.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceProfile:
        conversations = {}
        for c in data["conversations"]:
            cid = uuid.UUID(c["conversation_id"])
            conversations[cid] = ConversationKeys(
                conversation_id=cid,
                members=frozenset(c["members"]),
                chat_keys={int(epoch): b64d(key, length=32) for epoch, key in c["chat_keys"].items()},
                lists_seen=b64d(c["lists_seen"]),
            )
        return cls(
            username=data["username"],
            device=DeviceKeyPair.from_private_dict(data["device"]),
            token=data["token"],
            conversations=conversations,
            trusted={
                uuid.UUID(d): TrustedSender(username=u, ed25519_public_key=b64d(k, length=32))
                for d, (u, k) in data["trusted"].items()
            },
        )


def user_register(server_url: str, username: str, *, device_name: str = "device 1") -> Session:
    return Session.register(
        HttpTransport(server_url), server_url=server_url, username=username, password=PASSWORD, device_name=device_name
    )


def device_link(existing: Session, server_url: str, *, device_name: str) -> Session:
    """Log in another device of `existing`'s account and link it (its code approved by `existing`)."""
    new = Session.login(
        HttpTransport(server_url),
        server_url=server_url,
        username=existing.username,
        password=PASSWORD,
        device_name=device_name,
    )
    existing.approve_link(new.request_link())
    if not new.complete_link():  # pins its own account's identity key and device list
        raise RuntimeError("the link was not approved")
    return new


def device_profile(session: Session, conversation_ids: Sequence[uuid.UUID]) -> DeviceProfile:
    """What `session`'s device knows after opening its keys for these conversations."""
    if session.secrets.token is None:
        raise ValueError("the session has no token")
    profile = DeviceProfile(username=session.username, device=session.secrets.device, token=session.secrets.token)
    members: set[str] = set()
    for cid in conversation_ids:
        conversation = session.conversation(cid, refresh=True)
        keys = {epoch: session.chat_key(conversation, epoch) for epoch in range(1, conversation.current_epoch + 1)}
        profile.conversations[cid] = ConversationKeys(
            conversation_id=cid,
            members=frozenset(conversation.members),
            chat_keys=keys,
            lists_seen=session.lists_seen(conversation),
        )
        members.update(conversation.members)
    for username in sorted(members):
        for device_id, device in session.directory(username, refresh=True).devices.items():
            profile.trusted[device_id] = TrustedSender(username=username, ed25519_public_key=device.ed25519_public_key)
    return profile


@dataclass
class Population:
    """Users, their devices (sessions), conversations, and each device's profile."""

    sessions: dict[str, list[Session]]  # username -> devices, first one holds the identity key
    conversations: list[uuid.UUID]
    members: dict[uuid.UUID, list[str]]
    profiles: list[DeviceProfile]

    def devices_of(self, conversation_id: uuid.UUID) -> list[DeviceProfile]:
        names = set(self.members[conversation_id])
        return [p for p in self.profiles if p.username in names]

    def close(self) -> None:
        for devices in self.sessions.values():
            for session in devices:
                session.transport.close()  # type: ignore[attr-defined]


def population_create(
    server_url: str,
    *,
    usernames: Sequence[str],
    devices_per_user: int,
    conversations: Sequence[Sequence[str]],
    workers: int = 8,
) -> Population:
    """Register the users, link their extra devices, create the conversations (the first member of
    each creates it; two members make a direct one) and build every device's profile."""

    def make_user(username: str) -> list[Session]:
        first = user_register(server_url, username)
        return [first] + [
            device_link(first, server_url, device_name=f"device {i + 1}") for i in range(1, devices_per_user)
        ]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        sessions = dict(zip(usernames, pool.map(make_user, usernames), strict=True))

    created: list[uuid.UUID] = []
    members: dict[uuid.UUID, list[str]] = {}

    def make_conversation(group: Sequence[str]) -> uuid.UUID:
        creator = sessions[group[0]][0]
        kind = "direct" if len(group) == 2 else "group"
        conversation = creator.create_conversation(list(group[1:]), kind=kind)
        return conversation.conversation_id

    # Creation order is the caller's; distinct creators may go in parallel, but keep it simple.
    for group in conversations:
        cid = make_conversation(group)
        created.append(cid)
        members[cid] = list(group)

    def make_profiles(username: str) -> list[DeviceProfile]:
        mine = [cid for cid in created if username in members[cid]]
        return [device_profile(session, mine) for session in sessions[username]]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        profiles = [p for ps in pool.map(make_profiles, usernames) for p in ps]
    return Population(sessions=sessions, conversations=created, members=members, profiles=profiles)
