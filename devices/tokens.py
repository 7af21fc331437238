"""Device bearer tokens: 32 random bytes, base64url without padding (43 characters).

The server keeps only the SHA-256 (hex) of a token, so a database leak yields no credential.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def token_generate() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def token_is_well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None
