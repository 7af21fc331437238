"""The one DRF exception handler: every API error is `{"code", "message", "extra"}`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from common.errors import ApiError, RequestTooLargeError
from common.ratelimit import RateLimitedError

# DRF exception class -> (our code, message). Codes are protocol.md section 3.1.
_FIXED_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication credentials were not provided."),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed."),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "The body must be JSON (application/json)."),
}


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "extra": extra or {}}


def _path(prefix: str, key: object) -> str:
    """`epoch` + `number` -> `epoch.number`; `wrapped_keys` + 0 -> `wrapped_keys[0]`; a nested
    object's or list's own errors (`non_field_errors`) are its path's."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if key == api_settings.NON_FIELD_ERRORS_KEY and prefix:
        return prefix
    return f"{prefix}.{key}" if prefix else str(key)


def flatten_validation_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error structure into field paths to messages, e.g.
    `{"epoch.wrapped_keys[1].signature": [msg, ...]}` (protocol.md 3.1): object members joined
    with `.`, list items as `[index]`. A list serializer reports one entry per item (`{}` for
    the valid ones), a list field `{index: messages}` for the bad items only."""
    fields: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            fields.update(flatten_validation_errors(value, _path(prefix, key)))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            if detail:
                fields[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                fields.update(flatten_validation_errors(item, _path(prefix, index)))
    else:
        fields[prefix or "non_field_errors"] = [str(detail)]
    return fields


def _render_drf(exc: exceptions.APIException) -> Response:
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_validation_errors(exc.detail)
        body = error_body("invalid_request", "The request is invalid.", {"fields": fields})
    elif isinstance(exc, exceptions.ParseError):
        body = error_body("invalid_request", str(exc.detail), {"fields": {}})
    elif isinstance(exc, exceptions.AuthenticationFailed):
        # Our authenticator raises it with the protocol code `invalid_token`; whatever else fails
        # authentication (DRF's generic code) is reported as an invalid token too.
        code = exc.get_codes()
        if not isinstance(code, str) or code == exceptions.AuthenticationFailed.default_code:
            code = "invalid_token"
        body = error_body(code, str(exc.detail))
    else:
        code, message = _FIXED_CODES.get(type(exc), (str(exc.default_code), str(exc.detail)))
        body = error_body(code, message)
    return Response(body, status=exc.status_code, headers=headers)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF `EXCEPTION_HANDLER`. Returns None (-> 500, rendered by handler500) for real bugs."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django refuses to read such a body at all; say so instead of a bare 400.
        exc = RequestTooLargeError(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

    if isinstance(exc, ApiError):
        set_rollback()
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimitedError) else None
        return Response(error_body(exc.code, exc.message, exc.extra), status=exc.status, headers=headers)
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        return _render_drf(exc)
    return None
