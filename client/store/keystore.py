"""The device's key store on disk: passphrase-sealed JSON (docs/protocol.md 2.5), mode 0600.

`save` replaces the file atomically, so a crash mid-write leaves either the old store or the new
one, never a truncated file that would lock the user out of their keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from client.crypto.errors import KeystoreError
from client.crypto.keys import Rng
from client.crypto.passphrase import open_with_passphrase, seal_with_passphrase

FILE_MODE = 0o600


def save(path: Path, passphrase: str, secrets: dict[str, Any], *, n: int = 32768, rng: Rng = os.urandom) -> None:
    """Seal `secrets` (a JSON-serialisable dict) under `passphrase` and write it to `path`.

    The parent directory must exist. The temporary file is created in the same directory (so
    `os.replace` is atomic) with mode 0600 from the start, so the secret never sits in a
    world-readable file even briefly.
    """
    path = Path(path)
    plaintext = json.dumps(secrets, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    document = seal_with_passphrase(passphrase, plaintext, rng=rng, n=n)
    data = json.dumps(document, sort_keys=True, indent=1).encode("ascii") + b"\n"
    _write_atomically(path, data)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)  # mkstemp uses 0600 already; be explicit
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)  # cleanup only: the exception propagates unchanged
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, passphrase: str) -> dict[str, Any]:
    """Read and open the key store; KeystoreError if it is missing, unreadable, malformed,
    modified, or the passphrase is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"no key store at {path}") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read the key store at {path}: {exc.strerror}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise KeystoreError(f"{path} is not a key store (not JSON)") from None
    plaintext = open_with_passphrase(document, passphrase)
    try:
        secrets = json.loads(plaintext.decode("utf-8"))
    except ValueError:
        raise KeystoreError(f"{path} holds no valid secrets") from None
    if not isinstance(secrets, dict):
        raise KeystoreError(f"{path} holds no valid secrets")
    return secrets
