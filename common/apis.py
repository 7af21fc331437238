"""The API's own description: the OpenAPI schema and its Swagger UI (common/schema.py)."""

from __future__ import annotations

from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


class SchemaApi(SpectacularAPIView):
    """`GET /api/v1/schema`: the schema as JSON (the API's content negotiation always picks the
    first renderer, and JSON is what the API speaks)."""

    renderer_classes = [OpenApiJsonRenderer]


class SchemaDocsApi(SpectacularSwaggerView):
    """`GET /api/v1/docs`: Swagger UI, its files served locally (drf-spectacular-sidecar)."""

    url_name = "schema"
