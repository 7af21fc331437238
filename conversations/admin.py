from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyModelAdmin
from conversations.models import ChatKeyEpoch, Conversation, Membership


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    fields = ("user", "joined_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "kind", "created_at", "current_epoch", "last_seq")
    list_filter = ("kind",)
    fields = ("id", "kind", "created_by", "created_at", "current_epoch", "last_seq")
    inlines = [MembershipInline]


@admin.register(ChatKeyEpoch)
class ChatKeyEpochAdmin(ReadOnlyModelAdmin):
    # Wrapped keys themselves are not shown: opaque, and of no use to an operator.
    list_display = ("conversation", "number", "created_by", "created_at")
    fields = list_display
