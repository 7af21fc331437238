"""Where blobs live: the `"media"` storage alias (settings.STORAGES) and its two kinds of links.

With the S3 backend clients talk to the bucket directly through presigned URLs. With the
filesystem backend the server itself serves `/api/v1/media/{id}/content`, and the links carry a
signed, expiring token instead of the device's bearer token, so both backends hand out the same
kind of capability URL and a client treats them alike (it never sends its token to them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import Storage, storages

from media.errors import MediaLinkInvalidError

_UPLOAD_SALT = "media.upload.v1"
_DOWNLOAD_SALT = "media.download.v1"


def media_storage() -> Storage:
    return storages["media"]


def media_is_s3() -> bool:
    return str(settings.E2EE_MEDIA_BACKEND) == "s3"


def storage_name(blob_id: uuid.UUID) -> str:
    return f"blobs/{blob_id}"


@dataclass(frozen=True)
class MediaLink:
    """A URL to PUT or GET, absolute (S3) or a path on this server (filesystem: the view makes it
    absolute); `headers` the client must send with it."""

    url: str
    method: str
    expires_in_s: int
    headers: dict[str, str]


def _s3_client(storage: Any) -> Any:
    return storage.connection.meta.client


def upload_link(blob_id: uuid.UUID, length: int) -> MediaLink:
    expiry = int(settings.E2EE_MEDIA_URL_EXPIRY_S)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    if media_is_s3():
        storage: Any = media_storage()
        url = _s3_client(storage).generate_presigned_url(
            "put_object",
            Params={
                "Bucket": storage.bucket_name,
                "Key": storage_name(blob_id),
                "ContentType": headers["Content-Type"],
            },
            ExpiresIn=expiry,
        )
        return MediaLink(url=str(url), method="PUT", expires_in_s=expiry, headers=headers)
    token = signing.TimestampSigner(salt=_UPLOAD_SALT).sign(str(blob_id))
    return MediaLink(
        url=f"/api/v1/media/{blob_id}/content?token={token}", method="PUT", expires_in_s=expiry, headers=headers
    )


def download_link(blob_id: uuid.UUID) -> MediaLink:
    expiry = int(settings.E2EE_MEDIA_URL_EXPIRY_S)
    if media_is_s3():
        storage: Any = media_storage()
        url = _s3_client(storage).generate_presigned_url(
            "get_object", Params={"Bucket": storage.bucket_name, "Key": storage_name(blob_id)}, ExpiresIn=expiry
        )
        return MediaLink(url=str(url), method="GET", expires_in_s=expiry, headers={})
    token = signing.TimestampSigner(salt=_DOWNLOAD_SALT).sign(str(blob_id))
    return MediaLink(
        url=f"/api/v1/media/{blob_id}/content?token={token}", method="GET", expires_in_s=expiry, headers={}
    )


def link_check(blob_id: uuid.UUID, token: str, *, upload: bool) -> None:
    """Raise `MediaLinkInvalidError` unless `token` was signed by this server for this blob and
    purpose and has not expired."""
    signer = signing.TimestampSigner(salt=_UPLOAD_SALT if upload else _DOWNLOAD_SALT)
    try:
        value = signer.unsign(token, max_age=int(settings.E2EE_MEDIA_URL_EXPIRY_S))
    except signing.BadSignature:  # SignatureExpired is a subclass
        raise MediaLinkInvalidError() from None
    if value != str(blob_id):
        raise MediaLinkInvalidError()
