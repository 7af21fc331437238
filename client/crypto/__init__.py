"""The SDK's cryptographic core (docs/protocol.md section 2).

Pure by design: no network, files or clock, and imports only the standard library and
`cryptography`. Randomness is injected as `rng(n) -> n bytes` (default `os.urandom`), except
the HPKE ephemeral key, which OpenSSL draws itself.
"""

from __future__ import annotations

from client.crypto.encoding import b64d, b64e
from client.crypto.errors import DecryptError, DecryptFailure, KeystoreError
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair, ed25519_verify
from client.crypto.labels import PROTOCOL_VERSION
from client.crypto.message import (
    SealedMessage,
    message_encrypt,
    message_header,
    message_open,
    message_signature_verify,
    pad,
    unpad,
)
from client.crypto.passphrase import open_with_passphrase, seal_with_passphrase
from client.crypto.safety import fingerprint, format_safety_number, safety_number
from client.crypto.symmetric import hkdf_sha256
from client.crypto.vouch import vouch_message, vouch_sign, vouch_verify
from client.crypto.wrap import WrappedChatKey, chatkey_generate, chatkey_unwrap, chatkey_wrap

__all__ = [
    "PROTOCOL_VERSION",
    "DecryptError",
    "DecryptFailure",
    "DeviceKeyPair",
    "IdentityKeyPair",
    "KeystoreError",
    "SealedMessage",
    "WrappedChatKey",
    "b64d",
    "b64e",
    "chatkey_generate",
    "chatkey_unwrap",
    "chatkey_wrap",
    "ed25519_verify",
    "fingerprint",
    "format_safety_number",
    "hkdf_sha256",
    "message_encrypt",
    "message_header",
    "message_open",
    "message_signature_verify",
    "open_with_passphrase",
    "pad",
    "safety_number",
    "seal_with_passphrase",
    "unpad",
    "vouch_message",
    "vouch_sign",
    "vouch_verify",
]
