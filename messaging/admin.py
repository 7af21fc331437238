from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin
from messaging.models import Message


@admin.register(Message)
class MessageAdmin(ReadOnlyModelAdmin):
    # Metadata only: the ciphertext is shown as its size, never as content.
    list_display = ("conversation", "seq", "epoch", "sender_device", "ciphertext_size", "created_at")
    fields = ("conversation", "seq", "version", "epoch", "sender_device", "ciphertext_size", "created_at")
    readonly_fields = ("ciphertext_size",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # The size is computed by the database; the blob itself is never loaded.
        messages: QuerySet[Message] = super().get_queryset(request)
        return messages.defer("ciphertext").annotate(ciphertext_bytes=Length("ciphertext"))

    @admin.display(description="ciphertext bytes")
    def ciphertext_size(self, obj: Message) -> int:
        return int(obj.ciphertext_bytes)  # type: ignore[attr-defined]
