"""Typed failures of the crypto core.

A receiver must report every failure with its reason (docs/protocol.md 2.3 "Receiving"), so
decryption errors carry a `DecryptFailure` rather than being distinguished by message text.
"""

from __future__ import annotations

import enum


class DecryptFailure(enum.StrEnum):
    """Why an envelope or a wrapped key was not accepted; values are stable snake_case codes."""

    UNSUPPORTED_VERSION = "unsupported_version"
    UNVOUCHED_DEVICE = "unvouched_device"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_EPOCH = "unknown_epoch"
    MISSING_KEY = "missing_key"
    TAMPERED = "tampered"
    REPLAYED = "replayed"
    IDENTITY_CHANGED = "identity_changed"
    EPOCH_MANIFEST_INVALID = "epoch_manifest_invalid"
    EPOCH_MANIFEST_UNVOUCHED = "epoch_manifest_unvouched"
    DEVICE_LIST_MISMATCH = "device_list_mismatch"


class DecryptError(Exception):
    """An envelope or wrapped key was rejected; `reason` says which check failed."""

    def __init__(self, reason: DecryptFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"DecryptError({self.reason.value!r}, {self.message!r})"


class KeystoreError(Exception):
    """The local key store cannot be opened: missing, malformed, tampered with or wrong passphrase."""
