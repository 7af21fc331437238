"""Moved to `harness.provision` (the harness the tests and the benchmarks share). This alias keeps
imports written before the move working until they are updated; nothing new should use it."""

from harness.provision import (
    PASSWORD,
    ConversationKeys,
    DeviceProfile,
    Population,
    TrustedSender,
    device_link,
    device_profile,
    population_create,
    user_register,
)

__all__ = [
    "PASSWORD",
    "ConversationKeys",
    "DeviceProfile",
    "Population",
    "TrustedSender",
    "device_link",
    "device_profile",
    "population_create",
    "user_register",
]
