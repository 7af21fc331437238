"""Uploading blobs through the API the way a client does (filesystem backend, in process)."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework.test import APIClient

from tests.builders import Dev


def slot(dev: Dev, length: int) -> Any:
    return dev.client().post("/api/v1/media", {"length": length}, format="json")


def put(link: dict[str, Any], body: bytes) -> Any:
    """The upload link is the credential: no Authorization header."""
    return APIClient().put(link["url"], data=body, content_type="application/octet-stream")


def upload(dev: Dev, body: bytes, *, complete: bool = True) -> uuid.UUID:
    created = slot(dev, len(body))
    assert created.status_code == 201, created.json()
    answer = put(created.json()["upload"], body)
    assert answer.status_code == 204, answer.content
    blob_id = uuid.UUID(created.json()["blob_id"])
    if complete:
        done = dev.client().post(f"/api/v1/media/{blob_id}/complete")
        assert done.status_code == 200, done.json()
    return blob_id
