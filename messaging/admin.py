from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin
from messaging.models import Message


@admin.register(Message)
class MessageAdmin(ReadOnlyModelAdmin):
    # Metadata only: the ciphertext is shown as its size, never as content (nor nonce, signature).
    list_display = ("conversation_id", "seq", "epoch", "sender_device", "ciphertext_size", "created_at")
    list_filter = ("created_at", "version")
    list_select_related = ("sender_device",)
    search_fields = ("=conversation__id", "=sender_device__id", "sender_device__user__username")
    fields = ("conversation", "seq", "version", "epoch", "sender_device", "ciphertext_size", "created_at")
    readonly_fields = ("ciphertext_size",)
    ordering = ("-id",)  # newest first, on the primary key (no index on created_at)
    show_full_result_count = False  # no COUNT(*) over the whole log on each page

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # The size is computed by the database; the blobs themselves are never loaded.
        messages: QuerySet[Message] = super().get_queryset(request)
        return (
            messages.select_related("sender_device", "conversation")
            .defer("ciphertext", "nonce", "signature", "client_message_id")
            .annotate(ciphertext_bytes=Length("ciphertext"))
        )

    @admin.display(description="ciphertext bytes")
    def ciphertext_size(self, obj: Message) -> int:
        return int(obj.ciphertext_bytes)  # type: ignore[attr-defined]
