"""Media endpoints (protocol.md 4.5): upload slots, completion, download links, and the filesystem
backend's own upload and download URLs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.fields import CanonicalUUIDField, StrictIntegerField
from common.ratelimit import ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from devices.authentication import request_device
from media.errors import MediaLinkInvalidError, MediaNotFoundError
from media.models import MediaBlob
from media.selectors import access_media_blob
from media.services import media_upload_complete, media_upload_create, media_upload_receive
from media.storage import MediaLink, download_link, link_check, media_is_s3, media_storage, storage_name

# The smallest blob: one empty final chunk, a bare AES-GCM tag (protocol.md 2.7).
MIN_BLOB_BYTES = 16
_STREAM_BYTES = 256 * 1024
_TOKEN_PARAMETER = OpenApiParameter(
    "token", str, OpenApiParameter.QUERY, required=True, description="signed link token"
)


class MediaLinkSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(help_text="Absolute URL; send no Authorization header to it.")
    method = serializers.CharField()
    headers = serializers.DictField(child=serializers.CharField(), help_text="Headers to send with the request.")
    expires_in_s = serializers.IntegerField()


def _link_data(request: Request, link: MediaLink) -> dict[str, Any]:
    url = link.url if link.url.startswith(("http://", "https://")) else request.build_absolute_uri(link.url)
    return {"url": url, "method": link.method, "headers": link.headers, "expires_in_s": link.expires_in_s}


class MediaBlobSerializer(serializers.Serializer[Any]):
    blob_id = CanonicalUUIDField(source="id")
    length = serializers.IntegerField()
    state = serializers.ChoiceField(choices=MediaBlob.State.choices)
    created_at = serializers.DateTimeField()


@extend_schema_field(
    {
        "type": "integer",
        "minimum": MIN_BLOB_BYTES,
        "maximum": settings.E2EE_MEDIA_MAX_BYTES,
        "description": "ciphertext bytes; above the server's E2EE_MEDIA_MAX_BYTES (this maximum) 413 media_too_large",
    }
)
class BlobLengthField(StrictIntegerField):
    """Read up to 2**63 - 1: the service answers 413 media_too_large above its limit."""


class MediaCreateApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        length = BlobLengthField(min_value=MIN_BLOB_BYTES, max_value=2**63 - 1)

    class OutputSerializer(serializers.Serializer[Any]):
        blob_id = CanonicalUUIDField()
        length = serializers.IntegerField()
        upload = MediaLinkSerializer()

    @extend_schema(
        operation_id="media_create",
        summary="Reserve a blob id for `length` ciphertext bytes and get the URL to upload them to",
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        device = request_device(request)
        ratelimit_hit("upload_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        slot = media_upload_create(device=device, length=payload.validated_data["length"])
        data = {"blob_id": slot.blob.id, "length": slot.blob.length, "upload": _link_data(request, slot.link)}
        return Response(self.OutputSerializer(data).data, status=status.HTTP_201_CREATED)


class MediaCompleteApi(APIView):
    @extend_schema(
        operation_id="media_complete",
        summary="Confirm the upload: the stored object must have exactly the declared length",
        request=None,
        responses={200: MediaBlobSerializer, **error_responses(*AUTH_ERRORS, 404, 409)},
    )
    def post(self, request: Request, blob_id: uuid.UUID) -> Response:
        blob = media_upload_complete(device=request_device(request), blob_id=blob_id)
        return Response(MediaBlobSerializer(blob).data)


class MediaDetailApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        blob_id = CanonicalUUIDField()
        length = serializers.IntegerField()
        download = MediaLinkSerializer()

    @extend_schema(
        operation_id="media_download_link",
        summary="A short-lived download URL for a blob this device may read",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request, blob_id: uuid.UUID) -> Response:
        blob = access_media_blob(user=request_device(request).user, blob_id=blob_id)
        data = {"blob_id": blob.id, "length": blob.length, "download": _link_data(request, download_link(blob.id))}
        return Response(self.OutputSerializer(data).data)


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    read = sync_to_async(handle.read, thread_sensitive=False)
    try:
        while piece := await read(_STREAM_BYTES):
            yield piece
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


class MediaContentApi(APIView):
    """The filesystem backend's upload and download URLs; the signed `token` is the credential."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="media_content_upload",
        summary="Filesystem backend: upload the ciphertext (exactly the declared length)",
        parameters=[_TOKEN_PARAMETER],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={204: OpenApiResponse(description="Stored."), **error_responses(404, 405, 409, 413)},
        auth=[],
    )
    def put(self, request: Request, blob_id: uuid.UUID) -> Response:
        if media_is_s3():
            raise MediaLinkInvalidError()
        raw = request._request
        header = raw.META.get("CONTENT_LENGTH") or ""
        media_upload_receive(
            blob_id=blob_id,
            token=request.query_params.get("token", ""),
            body=raw,
            content_length=int(header) if header.isdigit() else None,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="media_content_download",
        summary="Filesystem backend: download the ciphertext",
        parameters=[_TOKEN_PARAMETER],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **error_responses(404, 405)},
        auth=[],
    )
    def get(self, request: Request, blob_id: uuid.UUID) -> HttpResponseBase:
        if media_is_s3():
            raise MediaLinkInvalidError()
        link_check(blob_id, request.query_params.get("token", ""), upload=False)
        if not MediaBlob.objects.filter(pk=blob_id, state=MediaBlob.State.COMPLETE).exists():
            raise MediaNotFoundError()
        try:
            handle = media_storage().open(storage_name(blob_id), "rb")
        except FileNotFoundError:
            raise MediaNotFoundError() from None
        size = media_storage().size(storage_name(blob_id))
        headers = {"Cache-Control": f"private, max-age={int(settings.E2EE_MEDIA_URL_EXPIRY_S)}"}
        if isinstance(request._request, ASGIRequest):
            # Under ASGI a synchronous file iterator would be read whole into memory first.
            response: HttpResponseBase = StreamingHttpResponse(
                _file_chunks(handle), content_type="application/octet-stream", headers=headers
            )
            response["Content-Length"] = str(size)
        else:
            response = FileResponse(handle, content_type="application/octet-stream", headers=headers)
        return response
