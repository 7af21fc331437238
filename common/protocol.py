"""The numbers of the wire protocol every app shares (docs/protocol.md), defined once.

The SDK has its own copies (client/protocol.py, client/crypto/): it must not import the server.
tests/messaging/test_protocol_numbers.py holds the two sides together.
"""

from __future__ import annotations

from typing import Final

# The protocol version: envelopes' `version`, the `hello` frame's `v`, the signed encodings' byte.
PROTOCOL_VERSION: Final = 1
# Sequence numbers are 64-bit; a bigger cursor cannot be stored or compared by the database.
MAX_SEQ: Final = 2**63 - 1
# Epoch numbers are stored as 32-bit signed integers; bigger ones could never match. (The SDK's
# encodings carry an epoch in 4 unsigned bytes: they can hold every epoch the server accepts.)
MAX_EPOCH: Final = 2**31 - 1
