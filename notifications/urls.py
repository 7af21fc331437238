from __future__ import annotations

from django.urls import path

from notifications.apis import ConversationMuteApi, PushConfigApi, PushTargetApi

urlpatterns = [
    path("devices/me/push-target", PushTargetApi.as_view(), name="push-target"),
    path("push/config", PushConfigApi.as_view(), name="push-config"),
    path("conversations/<uuid:conversation_id>/mute", ConversationMuteApi.as_view(), name="conversation-mute"),
]
