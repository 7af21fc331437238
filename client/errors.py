"""Errors the SDK raises for things a person must decide about; decryption failures are in
`client.crypto.errors.DecryptError` with a typed reason."""

from __future__ import annotations

import uuid


class SdkError(Exception):
    code = "sdk_error"


class IdentityChangedError(SdkError):
    """A contact's account identity key differs from the one pinned on first sight."""

    code = "identity_changed"

    def __init__(self, username: str) -> None:
        super().__init__(
            f"the identity key of {username!r} has changed since this device first saw it; "
            f"compare safety numbers before trusting it"
        )
        self.username = username


class UntrustedDevicesError(SdkError):
    """The server lists devices that the account's identity key never vouched for."""

    code = "untrusted_devices"

    def __init__(self, username: str, device_ids: list[uuid.UUID]) -> None:
        ids = ", ".join(str(d) for d in device_ids)
        super().__init__(f"{username!r} has devices not vouched for by its identity key: {ids}")
        self.username = username
        self.device_ids = device_ids


class ServerUnreachableError(SdkError):
    """The server could not be reached (connection refused, timeout, broken connection)."""

    code = "server_unreachable"


class NoIdentityKeyError(SdkError):
    code = "no_identity_key"


class FingerprintMismatchError(SdkError):
    code = "fingerprint_mismatch"


class DeviceNotFoundError(SdkError):
    code = "device_not_found"
