from __future__ import annotations

from django.urls import path

from messaging.apis import MessageListCreateApi

urlpatterns = [
    path("conversations/<uuid:conversation_id>/messages", MessageListCreateApi.as_view(), name="conversation-messages"),
]
