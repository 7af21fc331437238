"""Reads of blobs: who may download one, how much a user stores, which ones nobody references."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Exists, OuterRef, QuerySet, Sum

from accounts.models import User
from conversations.models import Membership
from media.errors import MediaNotFoundError
from media.models import MediaBlob, MediaReference


def access_media_blob(*, user: User, blob_id: uuid.UUID) -> MediaBlob:
    """A complete blob this user uploaded or that a message of one of their conversations
    references; anything else (unknown, pending, someone else's) is `media_not_found`."""
    referenced_to_user = MediaReference.objects.filter(
        blob_id=OuterRef("pk"),
        conversation_id__in=Membership.objects.filter(user=user).values("conversation_id"),
    )
    blob = (
        MediaBlob.objects.filter(pk=blob_id, state=MediaBlob.State.COMPLETE)
        .filter(Exists(referenced_to_user) | Exists(MediaBlob.objects.filter(pk=OuterRef("pk"), uploader=user)))
        .first()
    )
    if blob is None:
        raise MediaNotFoundError()
    return blob


def media_blob_get_own(*, user: User, blob_id: uuid.UUID) -> MediaBlob:
    """One of this user's own blobs, in any state."""
    blob = MediaBlob.objects.filter(pk=blob_id, uploader=user).first()
    if blob is None:
        raise MediaNotFoundError()
    return blob


def media_bytes_used(*, user_id: int) -> int:
    """What counts against the quota: every blob of the user that exists, pending ones included."""
    total = MediaBlob.objects.filter(uploader_id=user_id).aggregate(total=Sum("length"))["total"]
    return int(total or 0)


def media_orphans_list(*, created_before: datetime) -> QuerySet[MediaBlob]:
    """Blobs created before the cutoff that no message references (pending or complete)."""
    return (
        MediaBlob.objects.filter(created_at__lt=created_before)
        .exclude(Exists(MediaReference.objects.filter(blob_id=OuterRef("pk"))))
        .order_by("created_at")
    )
