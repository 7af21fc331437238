"""The protocol version and every domain-separation label (docs/protocol.md 2).

Kept in one place so that an audit can see at a glance that no two constructions share a label:
each signature or key derivation is bound to exactly one purpose.
"""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1

VOUCH_LABEL: Final = b"e2ee-msg/v1/device-vouch"
CHATKEY_WRAP_LABEL: Final = b"e2ee-msg/v1/chatkey-wrap"
CHATKEY_WRAP_SIG_LABEL: Final = b"e2ee-msg/v1/chatkey-wrap-sig"
MESSAGE_KEY_LABEL: Final = b"e2ee-msg/v1/message-key"
MESSAGE_SIG_LABEL: Final = b"e2ee-msg/v1/message-sig"
KEYSTORE_AAD: Final = b"e2ee-msg/v1/keystore"
ATTACHMENT_KEY_LABEL: Final = b"e2ee-msg/v1/attachment-key"
ATTACHMENT_AAD: Final = b"e2ee-msg/v1/attachment-chunk"
DEVICE_LIST_LABEL: Final = b"e2ee-msg/v1/device-list"
DEVICE_LIST_HASH_LABEL: Final = b"e2ee-msg/v1/device-list-hash"
LINK_CODE_LABEL: Final = b"e2ee-msg/v1/link-code"
LINK_VERIFIER_LABEL: Final = b"e2ee-msg/v1/link-verifier"
LINK_MAC_LABEL: Final = b"e2ee-msg/v1/link-mac"
LINK_APPROVAL_LABEL: Final = b"e2ee-msg/v1/link-approval"
IDENTITY_WRAP_LABEL: Final = b"e2ee-msg/v1/identity-wrap"
EPOCH_MANIFEST_LABEL: Final = b"e2ee-msg/v1/epoch-manifest"
DEVICE_LISTS_SEEN_LABEL: Final = b"e2ee-msg/v1/device-lists-seen"
