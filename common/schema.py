"""OpenAPI 3 schema generation (drf-spectacular): the `Error` component, our strict fields, unique
component names for the views' nested serializers, and the error responses each view declares.

Served at `/api/v1/schema` (JSON) and `/api/v1/docs` (Swagger UI from local static files).
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

# Base64 is canonical standard base64 with padding (protocol.md conventions): the unused low bits
# of the last character before the padding are zero; see `base64_pattern`.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error response: protocol.md section 3.1."""

    code = serializers.CharField(help_text="Stable machine-readable snake_case code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    extra = serializers.DictField(help_text="Details; keys depend on the code (e.g. `fields`, `retry_after_s`).")


# What each status means for this API (protocol.md 3.1 has the full table).
_ERROR_DESCRIPTIONS = {
    400: "`invalid_request` (malformed JSON, bad field or query parameter: `extra.fields`; a Host header "
    "the server does not serve), or an operation-specific code",
    401: "`not_authenticated` (no token) or `invalid_token` (unknown, revoked, malformed); `invalid_credentials`",
    403: "`device_not_active`: the device is pending or revoked; `link_code_invalid`",
    404: "`not_found`, or the resource is unknown or not visible to this device",
    405: "`method_not_allowed`",
    409: "a conflict with the current state (operation-specific code)",
    410: "`link_code_expired`: the link request has expired",
    413: "`request_too_large` (body above `E2EE_MAX_REQUEST_BYTES`) or `envelope_too_large`",
    415: "`unsupported_media_type`: the body is not JSON",
    429: "`rate_limited`: retry after `extra.retry_after_s` seconds (also the `Retry-After` header)",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """`responses=` entries for these error statuses, all with the `Error` body. 400 is always
    included: any request can be refused before a view runs (a Host header not served)."""
    return {
        status: OpenApiResponse(response=ErrorSerializer, description=_ERROR_DESCRIPTIONS[status])
        for status in sorted({400, *statuses})
    }


# Statuses every view can answer, by kind of view.
AUTH_ERRORS = (401, 403, 405)  # an active device is required
BODY_ERRORS = (400, 413, 415)  # the view reads a JSON body


class AutoSchema(SpectacularAutoSchema):
    """Component names from the serializer's qualified name: `RegisterApi.InputSerializer` becomes
    `RegisterInput`, so the views' nested `InputSerializer`s do not collide."""

    def _get_serializer_field_meta(self, field: Any, direction: Any) -> dict[str, Any]:
        meta: dict[str, Any] = super()._get_serializer_field_meta(field, direction)  # type: ignore[no-untyped-call]
        # A field extension states the field's whole schema: drf-spectacular's minLength 1 for a
        # non-blank string would overwrite a longer one (a new password's 8).
        if OpenApiSerializerFieldExtension.get_match(field) is not None:
            meta.pop("minLength", None)
        return meta

    def get_serializer_name(self, serializer: serializers.Serializer[Any], direction: Any) -> str:
        name = type(serializer).__qualname__
        if "." in name:
            outer, inner = name.rsplit(".", 1)
            name = outer.removesuffix("Api") + inner
        return name


_B64 = "[A-Za-z0-9+/]"
_B64_TAIL = {1: f"{_B64}[AQgw]==", 2: f"{_B64}{{2}}[AEIMQUYcgkosw048]="}


def base64_pattern(*, length: int | None = None, min_length: int | None = None) -> str:
    """A regular expression for exactly the canonical encodings of `length` bytes (or of at least
    about `min_length`): lengths live in the pattern, so generators need not filter."""
    if length is not None:
        tail = _B64_TAIL.get(length % 3, "")
        return f"^(?:{_B64}{{4}}){{{length // 3}}}{tail}$"
    groups = math.ceil(min_length / 3) if min_length else 0
    return f"^(?:{_B64}{{4}}){{{groups},}}(?:{_B64_TAIL[1]}|{_B64_TAIL[2]})?$"


class Base64FieldExtension(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = "common.fields.Base64Field"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        field = self.target
        # No `format: byte`: generators would draw any base64 and filter it by the pattern.
        schema: dict[str, Any] = {"type": "string", "description": "standard base64 with padding"}
        if field.length is not None:
            schema["pattern"] = base64_pattern(length=field.length)
            schema["minLength"] = schema["maxLength"] = 4 * math.ceil(field.length / 3)
        else:
            schema["pattern"] = base64_pattern(min_length=field.min_length)
            if field.max_length is not None:
                schema["maxLength"] = 4 * math.ceil(field.max_length / 3)
        return schema


class CanonicalUUIDFieldExtension(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = "common.fields.CanonicalUUIDField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}


class DeviceTokenAuthenticationExtension(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "devices.authentication.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A device token (43 characters of base64url), issued at registration or log-in.",
        }


# DRF's CharField refuses NUL characters in any string it reads ("Null characters are not
# allowed."): the schema says so for every string of a request that has no stricter pattern.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _no_nul_strings(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _no_nul_strings(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "format", "enum"} & node.keys():
        node["pattern"] = NO_NUL_PATTERN
    for value in node.values():
        _no_nul_strings(value)


def postprocess_request_strings(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: request bodies' strings refuse NUL (with
    COMPONENT_SPLIT_REQUEST every request component's name ends in `Request`), and so do string
    query parameters."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            _no_nul_strings(component)
    components = result.get("components", {}).get("schemas", {})
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query":
                    _no_nul_strings(parameter.get("schema"))
            _body_required_when_fields_are(operation.get("requestBody"), components)
    return result


def _body_required_when_fields_are(body: dict[str, Any] | None, components: dict[str, Any]) -> None:
    """A body of alternatives (oneOf, by `kind`) each with required fields is itself required;
    drf-spectacular says so only for a single serializer."""
    if not body or body.get("required"):
        return
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    component = components.get(schema.get("$ref", "").rsplit("/", 1)[-1], {})
    choices = [components.get(c.get("$ref", "").rsplit("/", 1)[-1], {}) for c in component.get("oneOf", [])]
    if choices and all(choice.get("required") for choice in choices):
        body["required"] = True
