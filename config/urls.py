"""Root URLconf. The API lives under /api/v1/ (docs/protocol.md section 4)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from common.apis import SchemaApi, SchemaDocsApi
from common.health import live_view, ready_view
from common.metrics import metrics_view

api_v1: list[URLPattern | URLResolver] = [
    path("", include("accounts.urls")),
    path("", include("devices.urls")),
    path("", include("conversations.urls")),
    path("", include("messaging.urls")),
    path("", include("media.urls")),
    path("", include("notifications.urls")),
    path("schema", SchemaApi.as_view(), name="schema"),
    path("docs", SchemaDocsApi.as_view(), name="docs"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("metrics", metrics_view, name="metrics"),
    path("health/live", live_view, name="health-live"),
    path("health/ready", ready_view, name="health-ready"),
]

# A client must never get an HTML page from the API, even for an unknown URL or a crash.
handler400 = "common.http_errors.bad_request"
handler403 = "common.http_errors.permission_denied"
handler404 = "common.http_errors.not_found"
handler500 = "common.http_errors.server_error"
