"""Conversations, memberships and ChatKey epochs for operators: read-only (changes would break
epoch coverage and the message log); wrapped keys appear only as counts."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin
from conversations.models import ChatKeyEpoch, Conversation, Membership


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    fields = ("user", "joined_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "kind", "member_count", "current_epoch", "last_seq", "created_by", "created_at")
    list_filter = ("kind", "created_at")
    list_select_related = ("created_by",)
    search_fields = ("=id", "members__username")
    fields = ("id", "kind", "created_by", "created_at", "current_epoch", "last_seq", "member_count", "wrapped_keys")
    readonly_fields = ("member_count", "wrapped_keys")
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        conversations: QuerySet[Conversation] = super().get_queryset(request)
        return conversations.select_related("created_by").annotate(
            members_n=Count("memberships", distinct=True),
            wrapped_keys_n=Count("epochs__wrapped_keys", distinct=True),
        )

    @admin.display(description="members", ordering="members_n")
    def member_count(self, obj: Conversation) -> int:
        return int(obj.members_n)  # type: ignore[attr-defined]

    @admin.display(description="wrapped keys (all epochs)")
    def wrapped_keys(self, obj: Conversation) -> int:
        return int(obj.wrapped_keys_n)  # type: ignore[attr-defined]


@admin.register(Membership)
class MembershipAdmin(ReadOnlyModelAdmin):
    list_display = ("conversation_id", "conversation_kind", "user", "joined_at")
    list_filter = ("conversation__kind", "joined_at")
    list_select_related = ("conversation", "user")
    search_fields = ("=conversation__id", "user__username")
    fields = ("conversation", "user", "joined_at")

    @admin.display(description="kind", ordering="conversation__kind")
    def conversation_kind(self, obj: Membership) -> str:
        return obj.conversation.kind


@admin.register(ChatKeyEpoch)
class ChatKeyEpochAdmin(ReadOnlyModelAdmin):
    # Wrapped keys themselves are not shown: opaque, and of no use to an operator. Their count
    # says whether the epoch reached every device.
    list_display = ("conversation", "number", "wrapped_key_count", "created_by", "created_at")
    list_filter = ("created_at",)
    list_select_related = ("conversation", "created_by")
    search_fields = ("=conversation__id",)
    fields = ("conversation", "number", "wrapped_key_count", "created_by", "created_at")
    readonly_fields = ("wrapped_key_count",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChatKeyEpoch]:
        epochs: QuerySet[ChatKeyEpoch] = super().get_queryset(request)
        return epochs.select_related("conversation", "created_by").annotate(wrapped_keys_n=Count("wrapped_keys"))

    @admin.display(description="wrapped keys", ordering="wrapped_keys_n")
    def wrapped_key_count(self, obj: ChatKeyEpoch) -> int:
        return int(obj.wrapped_keys_n)  # type: ignore[attr-defined]
