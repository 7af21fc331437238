"""Encrypted attachments on the device side (protocol.md 2.7 and 4.5): the `attachment` payload,
streaming a file through the chunked encryption into an upload, and a download through the
decryption into a file that appears under its (sanitised) name only once everything verified.

Files are read and written in chunks: a 1 GiB attachment never sits in memory.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from client.crypto.attachment import (
    DIGEST_BYTES,
    FILE_KEY_BYTES,
    AttachmentDecryptor,
    AttachmentEncryptor,
    attachment_ciphertext_length,
)
from client.crypto.encoding import b64e
from client.crypto.errors import DecryptError
from client.errors import AttachmentError
from client.protocol import MediaLink

Progress = Callable[[int, int], None]
_READ_BYTES = 1024 * 1024
MAX_NAME_BYTES = 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


@runtime_checkable
class BlobTransport(Protocol):
    def upload_blob(
        self, link: MediaLink, chunks: Iterable[bytes], length: int, *, progress: Progress | None = None
    ) -> None: ...

    def download_blob(
        self,
        link: MediaLink,
        sink: Callable[[bytes], None],
        *,
        expected_length: int,
        progress: Progress | None = None,
    ) -> int: ...


@dataclass(frozen=True)
class AttachmentInfo:
    """What an `attachment` payload carries; only ever inside an encrypted message."""

    blob_id: uuid.UUID
    key: bytes
    digest: bytes
    size: int
    mime: str
    name: str

    def to_payload(self, *, sent_at_ms: int) -> dict[str, Any]:
        return {
            "type": "attachment",
            "blob_id": str(self.blob_id),
            "key": b64e(self.key),
            "digest": b64e(self.digest),
            "size": self.size,
            "mime": self.mime,
            "name": self.name,
            "sent_at_ms": sent_at_ms,
        }

    @property
    def ciphertext_length(self) -> int:
        return attachment_ciphertext_length(self.size)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> AttachmentInfo:
        """Validate an `attachment` payload; `AttachmentError` names what is wrong."""
        if payload.get("type") != "attachment":
            raise AttachmentError("this message is not an attachment")
        try:
            blob_id = uuid.UUID(str(payload["blob_id"]))
            key = _b64(payload["key"], FILE_KEY_BYTES)
            digest = _b64(payload["digest"], DIGEST_BYTES)
            size, mime, name = payload["size"], payload.get("mime", "application/octet-stream"), payload["name"]
        except (KeyError, ValueError) as exc:
            raise AttachmentError(f"malformed attachment payload: {exc}") from None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise AttachmentError("malformed attachment payload: size")
        if not isinstance(mime, str) or not isinstance(name, str):
            raise AttachmentError("malformed attachment payload: mime or name")
        return cls(blob_id=blob_id, key=key, digest=digest, size=size, mime=mime, name=name)


def _b64(value: Any, length: int) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    if len(raw) != length:
        raise ValueError(f"expected {length} bytes")
    return raw


def safe_filename(name: str) -> str:
    """A name that stays inside the destination folder: the last path component only (either
    slash), no control or reserved characters, no leading dots, at most 255 bytes."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    while len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{ext}" if stem and len(ext) < 16 else name[:-1]
    return name or "attachment"


def free_path(directory: Path, name: str) -> Path:
    """`directory/name`, or `name (1)`, `name (2)`… if taken: never overwrite a file."""
    candidate = directory / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({counter}){suffix}"
        counter += 1
    return candidate


def guess_mime(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def encrypted_file_chunks(path: Path, encryptor: AttachmentEncryptor, *, size: int) -> Iterator[bytes]:
    """The ciphertext of the file, produced while it is read; the file must keep its size."""
    read = 0
    with path.open("rb") as source:
        while piece := source.read(_READ_BYTES):
            read += len(piece)
            if read > size:
                raise AttachmentError(f"{path} grew while it was being sent")
            out = encryptor.update(piece)
            if out:
                yield out
    if read != size:
        raise AttachmentError(f"{path} shrank while it was being sent")
    yield encryptor.finalize()


def download_decrypt_to(
    transport: BlobTransport,
    link: MediaLink,
    info: AttachmentInfo,
    directory: Path,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, verify and decrypt into a hidden temporary file beside the destination, and only
    when the length, every chunk, the final chunk, the digest and the size all check out move it to
    its sanitised name. On any failure nothing is left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = info.ciphertext_length
    decryptor = AttachmentDecryptor(info.key)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".e2ee-partial-", delete=False)
    temporary = Path(handle.name)
    received = 0

    def sink(data: bytes) -> None:
        nonlocal received
        received += len(data)
        if received > expected:
            raise AttachmentError("the blob is longer than the message says")
        handle.write(decryptor.update(data))

    try:
        try:
            transport.download_blob(link, sink, expected_length=expected, progress=progress)
            if received != expected:
                raise AttachmentError(f"the blob has {received} bytes, the message says {expected}")
            handle.write(decryptor.finalize())
        except DecryptError as exc:
            raise AttachmentError(f"the blob was tampered with: {exc}") from exc
        if decryptor.digest != info.digest:
            raise AttachmentError("the blob's digest does not match the message")
        if decryptor.plaintext_bytes != info.size:
            raise AttachmentError("the decrypted size does not match the message")
        handle.close()
        target = free_path(directory, safe_filename(info.name))
        os.replace(temporary, target)
        return target
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
