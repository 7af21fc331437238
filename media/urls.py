from __future__ import annotations

from django.urls import path

from media.apis import MediaCompleteApi, MediaContentApi, MediaCreateApi, MediaDetailApi

urlpatterns = [
    path("media", MediaCreateApi.as_view(), name="media"),
    path("media/<uuid:blob_id>", MediaDetailApi.as_view(), name="media-blob"),
    path("media/<uuid:blob_id>/complete", MediaCompleteApi.as_view(), name="media-complete"),
    path("media/<uuid:blob_id>/content", MediaContentApi.as_view(), name="media-content"),
]
