from __future__ import annotations

from django.urls import path

from conversations.apis import (
    ChatKeyEpochDetailApi,
    ChatKeyEpochUploadApi,
    ConversationDetailApi,
    ConversationListCreateApi,
    ConversationMemberApi,
    ConversationMembersApi,
    KeyRequestAnswerApi,
    KeyRequestFileApi,
    KeyRequestListApi,
    LinkKeysUploadApi,
    LinkMissingKeysApi,
    WrappedKeyListApi,
)

urlpatterns = [
    path("conversations", ConversationListCreateApi.as_view(), name="conversations"),
    path("conversations/<uuid:conversation_id>", ConversationDetailApi.as_view(), name="conversation"),
    path("conversations/<uuid:conversation_id>/epochs", ChatKeyEpochUploadApi.as_view(), name="conversation-epochs"),
    path(
        "conversations/<uuid:conversation_id>/epochs/<int:number>",
        ChatKeyEpochDetailApi.as_view(),
        name="conversation-epoch",
    ),
    path("conversations/<uuid:conversation_id>/members", ConversationMembersApi.as_view(), name="conversation-members"),
    path(
        "conversations/<uuid:conversation_id>/members/<str:username>",
        ConversationMemberApi.as_view(),
        name="conversation-member",
    ),
    path("conversations/<uuid:conversation_id>/keys", WrappedKeyListApi.as_view(), name="conversation-keys"),
    path(
        "conversations/<uuid:conversation_id>/key-requests",
        KeyRequestFileApi.as_view(),
        name="conversation-key-requests",
    ),
    path("key-requests", KeyRequestListApi.as_view(), name="key-requests"),
    path("key-requests/<uuid:request_id>/answer", KeyRequestAnswerApi.as_view(), name="key-request-answer"),
    path("devices/<uuid:device_id>/link/missing-keys", LinkMissingKeysApi.as_view(), name="device-link-missing-keys"),
    path("devices/<uuid:device_id>/link/keys", LinkKeysUploadApi.as_view(), name="device-link-keys"),
]
