"""The SDK's sans-I/O core: seal and open messages, decide trust, hold keys (see `machine`)."""

from client.core.envelope import EnvelopeKeys, envelope_open, envelope_seal
from client.core.machine import Core
from client.core.needs import (
    ConversationNeeded,
    DeviceListNeeded,
    DirectoryNeeded,
    Fetches,
    KeysNeeded,
    Missing,
    Need,
    Refused,
    Sealed,
)

__all__ = [
    "ConversationNeeded",
    "Core",
    "DeviceListNeeded",
    "DirectoryNeeded",
    "EnvelopeKeys",
    "Fetches",
    "KeysNeeded",
    "Missing",
    "Need",
    "Refused",
    "Sealed",
    "envelope_open",
    "envelope_seal",
]
