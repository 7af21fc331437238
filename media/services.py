"""Writes on blobs: upload slots, the filesystem upload itself, completion, deletion, pruning.

Storage deletions that follow a database delete are registered with `transaction.on_commit`: a
rolled-back delete leaves the object in place. An upload slot counts against the uploader's quota
from its creation (declared length), so a client cannot reserve past the quota by never
completing; slots never referenced are pruned after `E2EE_MEDIA_ORPHAN_AGE_S`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.models import User
from devices.models import Device
from media.errors import (
    MediaAlreadyUploadedError,
    MediaLengthMismatchError,
    MediaLinkInvalidError,
    MediaNotUploadedError,
    MediaQuotaExceededError,
    MediaTooLargeError,
)
from media.models import MediaBlob, MediaReference
from media.selectors import media_blob_get_own, media_bytes_used, media_orphans_list
from media.storage import MediaLink, link_check, media_storage, storage_name, upload_link

logger = logging.getLogger(__name__)
_READ_BYTES = 1024 * 1024


class ByteSource(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class MediaUploadSlot:
    blob: MediaBlob
    link: MediaLink


def media_upload_create(*, device: Device, length: int) -> MediaUploadSlot:
    """Reserve a blob id for `length` ciphertext bytes; the link says where to PUT them."""
    max_bytes = int(settings.E2EE_MEDIA_MAX_BYTES)
    if length > max_bytes:
        raise MediaTooLargeError(max_bytes)
    quota = int(settings.E2EE_MEDIA_QUOTA_BYTES)
    with transaction.atomic(durable=True):
        # One quota decision at a time per user (SQLite's write transaction serialises anyway).
        User.objects.select_for_update().filter(pk=device.user_id).values_list("pk").first()
        used = media_bytes_used(user_id=device.user_id)
        if used + length > quota:
            raise MediaQuotaExceededError(quota_bytes=quota, used_bytes=used)
        blob = MediaBlob.objects.create(uploader_id=device.user_id, uploader_device=device, length=length)
    return MediaUploadSlot(blob=blob, link=upload_link(blob.id, length))


class _BodyTooLongError(Exception):
    pass


class _BoundedBody(File):  # type: ignore[type-arg]
    """The request body as a Django `File` whose `chunks()` stop with an error one byte past the
    declared length, so a lying client cannot fill the disk."""

    def __init__(self, source: ByteSource, limit: int) -> None:
        super().__init__(None, name="upload")
        self._source = source
        self._limit = limit
        self.received = 0

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        while True:
            piece = self._source.read(min(_READ_BYTES, self._limit + 1 - self.received))
            if not piece:
                return
            self.received += len(piece)
            if self.received > self._limit:
                raise _BodyTooLongError()
            yield piece

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return True


def media_upload_receive(*, blob_id: uuid.UUID, token: str, body: ByteSource, content_length: int | None) -> None:
    """Filesystem backend: store the PUT body of a signed upload link, exactly the declared length."""
    link_check(blob_id, token, upload=True)
    blob = MediaBlob.objects.filter(pk=blob_id).first()
    if blob is None:  # pruned since the link was made
        raise MediaLinkInvalidError()
    if blob.state == MediaBlob.State.COMPLETE:
        raise MediaAlreadyUploadedError()
    if content_length is not None and content_length != blob.length:
        raise MediaLengthMismatchError(declared_length=blob.length, received_length=content_length)
    storage, name = media_storage(), storage_name(blob.id)
    storage.delete(name)  # an earlier, refused attempt; saving must not pick another name
    bounded = _BoundedBody(body, blob.length)
    try:
        saved = storage.save(name, bounded)
    except _BodyTooLongError:
        storage.delete(name)
        raise MediaLengthMismatchError(declared_length=blob.length, received_length=None) from None
    if saved != name or bounded.received != blob.length:
        storage.delete(saved)
        raise MediaLengthMismatchError(declared_length=blob.length, received_length=bounded.received)


def media_upload_complete(*, device: Device, blob_id: uuid.UUID) -> MediaBlob:
    """Check that the stored object has exactly the declared length (S3: a HEAD) and mark the blob
    complete, attachable and downloadable. Completing twice answers the same."""
    blob = media_blob_get_own(user=device.user, blob_id=blob_id)
    if blob.state == MediaBlob.State.COMPLETE:
        return blob
    storage, name = media_storage(), storage_name(blob.id)
    try:
        size = storage.size(name)
    except FileNotFoundError:
        raise MediaNotUploadedError() from None
    if size != blob.length:
        storage.delete(name)  # the client may upload again
        raise MediaLengthMismatchError(declared_length=blob.length, received_length=size)
    with transaction.atomic(durable=True):
        MediaBlob.objects.filter(pk=blob.pk, state=MediaBlob.State.PENDING).update(
            state=MediaBlob.State.COMPLETE, completed_at=timezone.now()
        )
    blob.refresh_from_db()
    return blob


def _storage_delete(names: list[str]) -> None:
    storage = media_storage()
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # storage outage: the row is gone; an operator sweeps the bucket
            logger.exception("media object delete failed", extra={"fields": {"name": name}})


def media_blob_delete(*, blob: MediaBlob) -> None:
    """Delete a blob (operator action): the row now, the stored object after commit."""
    with transaction.atomic(durable=True):
        MediaBlob.objects.filter(pk=blob.pk).delete()
        transaction.on_commit(partial(_storage_delete, [storage_name(blob.id)]))


@dataclass(frozen=True)
class PrunedBlob:
    id: uuid.UUID
    uploader_id: int
    length: int
    state: str
    created_at: datetime


def media_orphans_prune(
    *, older_than: timedelta, dry_run: bool = False, now: datetime | None = None, limit: int = 10000
) -> list[PrunedBlob]:
    """Delete blobs (pending or complete) created more than `older_than` ago that no message
    references; with `dry_run` only list them. At most `limit` per call."""
    cutoff = (now or timezone.now()) - older_than
    with transaction.atomic(durable=True):
        orphans = media_orphans_list(created_before=cutoff)
        if not dry_run:
            orphans = orphans.select_for_update()
        pruned = [
            PrunedBlob(
                id=row["id"],
                uploader_id=row["uploader_id"],
                length=row["length"],
                state=row["state"],
                created_at=row["created_at"],
            )
            for row in orphans.values("id", "uploader_id", "length", "state", "created_at")[:limit]
        ]
        if pruned and not dry_run:
            ids = [p.id for p in pruned]
            # Re-checked in the DELETE: a message may have referenced one in the meantime.
            MediaBlob.objects.filter(pk__in=ids).exclude(
                Exists(MediaReference.objects.filter(blob_id=OuterRef("pk")))
            ).delete()
            transaction.on_commit(partial(_storage_delete, [storage_name(i) for i in ids]))
    return pruned
