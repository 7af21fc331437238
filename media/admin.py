"""Media blobs for operators: metadata only (a blob is ciphertext), and deletion through the service."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin
from media.models import MediaBlob, MediaReference
from media.services import media_blob_delete


@admin.register(MediaBlob)
class MediaBlobAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "uploader", "length", "state", "created_at", "referenced")
    list_filter = ("state", "created_at")
    list_select_related = ("uploader",)
    search_fields = ("=id", "uploader__username")
    fields = ("id", "uploader", "uploader_device", "length", "state", "created_at", "completed_at", "referenced")
    readonly_fields = fields
    ordering = ("-created_at",)
    actions = ["delete_blobs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MediaBlob]:
        blobs: QuerySet[MediaBlob] = super().get_queryset(request)
        return blobs.select_related("uploader").annotate(
            is_referenced=Exists(MediaReference.objects.filter(blob_id=OuterRef("pk")))
        )

    @admin.display(description="referenced", boolean=True)
    def referenced(self, obj: MediaBlob) -> bool:
        return bool(obj.is_referenced)  # type: ignore[attr-defined]

    @admin.action(description="Delete the selected blobs (row and stored object)")
    def delete_blobs(self, request: HttpRequest, queryset: QuerySet[MediaBlob]) -> None:
        count = 0
        for blob in queryset:
            media_blob_delete(blob=blob)
            count += 1
        self.message_user(request, f"Deleted {count} blob(s).", messages.SUCCESS)
