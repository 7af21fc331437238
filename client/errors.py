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


class RealtimeAuthError(SdkError):
    """The WebSocket gateway refused this device (close 4401 bad or revoked token, 4403 device not
    active, 4426 a protocol version it does not speak): reconnecting cannot help, so the realtime
    client stops."""

    code = "realtime_auth_failed"

    def __init__(self, close_code: int, error_code: str, message: str) -> None:
        super().__init__(f"the server refused this device ({close_code} {error_code}): {message}")
        self.close_code = close_code
        self.error_code = error_code


class RealtimeDisconnectedError(ServerUnreachableError):
    """The WebSocket connection ended (server restart, server error, network): reconnect."""

    code = "realtime_disconnected"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class RealtimeNotConnectedError(SdkError):
    """A request that needs a live connection (a presence query) was made while disconnected."""

    code = "realtime_not_connected"


class SendFailedError(SdkError):
    """The server definitively refused a queued message (§6.3); it is removed from the outbox."""

    code = "send_failed"

    def __init__(self, error_code: str, message: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.extra = extra or {}


class AttachmentError(SdkError):
    """An attachment cannot be sent or saved: a malformed attachment payload, a blob whose length,
    digest or chunks do not match what the (authenticated) message promised, or a transfer that
    failed. Nothing is written to the destination in that case."""

    code = "attachment_failed"


class HiddenDevicesError(SdkError):
    """The account's signed device list names devices the server does not show: it may be hiding
    them (to keep them out of a conversation), so nothing is wrapped until that is resolved."""

    code = "hidden_devices"

    def __init__(self, username: str, device_ids: list[uuid.UUID]) -> None:
        ids = ", ".join(str(d) for d in device_ids)
        super().__init__(f"{username!r} has devices on its signed device list that the server hides: {ids}")
        self.username = username
        self.device_ids = device_ids


class DeviceListInvalidError(SdkError):
    """An account's signed device list does not verify (forged, rolled back, forked, missing)."""

    code = "device_list_invalid"

    def __init__(self, username: str, reason: str) -> None:
        super().__init__(f"the device list of {username!r} cannot be trusted: {reason}")
        self.username = username
        self.reason = reason


class LinkExpiredError(SdkError):
    code = "link_expired"


class LinkApprovalInvalidError(SdkError):
    """The approval a new device received does not check out with its one-time secret."""

    code = "link_approval_invalid"


class StaleEpochError(SdkError):
    """The conversation's current epoch is wrapped for devices that are no longer on their
    owners' verified device lists (revoked) or for accounts that are no longer members, and
    starting a new epoch that excludes them did not succeed: nothing is sent under it."""

    code = "stale_epoch_recipients"

    def __init__(self, conversation_id: uuid.UUID, stale: list[tuple[str, uuid.UUID]]) -> None:
        names = ", ".join(f"{u}/{d}" for u, d in stale)
        super().__init__(f"epoch of {conversation_id} still reaches devices that must not read it: {names}")
        self.conversation_id = conversation_id
        self.stale = stale


class EpochManifestError(SdkError):
    """The conversation's current epoch has no valid manifest signed by its creator, or its
    manifest names a device not vouched for (protocol.md 2.18), and starting a new epoch did not
    succeed: nothing is sent under it. `code` is `epoch_manifest_invalid` or `epoch_manifest_unvouched`."""

    code = "epoch_manifest_invalid"

    def __init__(self, conversation_id: uuid.UUID, code: str, detail: str) -> None:
        super().__init__(f"refusing to send in {conversation_id}: {code}: {detail}")
        self.code = code
        self.conversation_id = conversation_id
        self.detail = detail
