"""Notifications for operators: dead letters (read-only, replayable through the service) and the
recent deliveries. Push target secrets are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin
from notifications.models import DeadLetter, Notification, PushTarget
from notifications.services import dead_letter_replay


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyModelAdmin):
    list_display = ("notification_id", "device", "backend", "attempts", "created_at", "replayed_at", "replays")
    list_filter = ("backend", "created_at", "replayed_at")
    list_select_related = ("device",)
    search_fields = ("=notification__id", "=device__id")
    fields = ("notification", "device", "backend", "attempts", "last_error", "created_at", "replayed_at", "replays")
    readonly_fields = fields
    actions = ["replay"]

    @admin.action(description="Replay the selected dead letters (same notification id, fresh attempts)")
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        replayed = skipped = 0
        for dead_letter in queryset:
            if dead_letter_replay(dead_letter=dead_letter):
                replayed += 1
            else:
                skipped += 1
        self.message_user(request, f"Replayed {replayed} dead letter(s); {skipped} already replayed.", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "device", "status", "backend", "attempts", "created_at", "finished_at")
    list_filter = ("status", "backend", "created_at")
    list_select_related = ("device",)
    search_fields = ("=id", "=device__id")
    fields = ("id", "device", "status", "backend", "attempts", "last_error", "created_at", "lease_until", "finished_at")
    readonly_fields = fields


@admin.register(PushTarget)
class PushTargetAdmin(ReadOnlyModelAdmin):
    list_display = ("device", "kind", "created_at")
    list_filter = ("kind", "created_at")
    list_select_related = ("device",)
    search_fields = ("=device__id",)
    # No secret, no URL (it may carry a receiver's own token in its path).
    fields = ("device", "kind", "created_at")
    readonly_fields = fields
