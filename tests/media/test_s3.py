"""The S3 backend for real: presigned upload and download against moto's S3 server on loopback,
through boto3 and plain HTTP, the declared length checked with a HEAD at completion."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from media.models import MediaBlob
from media.services import media_orphans_prune
from tests.builders import Dev, envelope_json, make_dev
from tests.media.helpers import slot
from tests.media.s3server import S3Bucket

pytestmark = pytest.mark.django_db


def _put(link: dict[str, Any], body: bytes) -> httpx.Response:
    return httpx.request(
        link["method"], link["url"], content=body, headers=link["headers"] | {"Content-Length": str(len(body))}
    )


def _upload(dev: Dev, body: bytes) -> uuid.UUID:
    created = slot(dev, len(body)).json()
    assert _put(created["upload"], body).status_code == 200
    blob_id = uuid.UUID(created["blob_id"])
    assert dev.client().post(f"/api/v1/media/{blob_id}/complete").status_code == 200
    return blob_id


def test_presigned_upload_and_download_go_straight_to_the_bucket(alice: Dev, s3_media: S3Bucket) -> None:
    body = os.urandom(300_000)
    created = slot(alice, len(body)).json()
    link = created["upload"]
    assert link["url"].startswith(f"{s3_media.endpoint}/{s3_media.name}/blobs/{created['blob_id']}?")
    assert "X-Amz-Signature=" in link["url"] and "X-Amz-Expires=300" in link["url"]
    assert _put(link, body).status_code == 200
    done = alice.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    assert done.status_code == 200 and done.json()["state"] == "complete"
    assert s3_media.objects() == {f"blobs/{created['blob_id']}": body}

    download = alice.client().get(f"/api/v1/media/{created['blob_id']}").json()["download"]
    assert download["url"].startswith(f"{s3_media.endpoint}/{s3_media.name}/blobs/")
    assert "X-Amz-Signature=" in download["url"]
    assert httpx.get(download["url"]).content == body


@pytest.mark.parametrize("actual", [999, 1001])
def test_wrong_length_is_caught_at_completion_and_the_object_deleted(
    alice: Dev, s3_media: S3Bucket, actual: int
) -> None:
    created = slot(alice, 1000).json()
    link = created["upload"]
    httpx.request("PUT", link["url"], content=os.urandom(actual), headers={"Content-Type": "application/octet-stream"})
    answer = alice.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    assert answer.status_code == 400
    assert answer.json()["code"] == "media_length_mismatch"
    assert answer.json()["extra"] == {"declared_length": 1000, "received_length": actual}
    assert s3_media.objects() == {}
    assert MediaBlob.objects.get(pk=created["blob_id"]).state == MediaBlob.State.PENDING


def test_completion_before_upload_is_refused(alice: Dev, s3_media: S3Bucket) -> None:
    created = slot(alice, 1000).json()
    answer = alice.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    assert answer.status_code == 409
    assert answer.json()["code"] == "media_not_uploaded"


def test_members_download_and_non_members_do_not(
    alice: Dev, bob: Dev, conversation: Conversation, s3_media: S3Bucket
) -> None:
    body = os.urandom(5000)
    blob_id = _upload(alice, body)
    sent = alice.client().post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        envelope_json(alice, attachments=[str(blob_id)]),
        format="json",
    )
    assert sent.status_code == 201
    link = bob.client().get(f"/api/v1/media/{blob_id}").json()["download"]
    assert httpx.get(link["url"]).content == body
    assert make_dev().client().get(f"/api/v1/media/{blob_id}").json()["code"] == "media_not_found"


def test_server_content_urls_are_off_with_s3(alice: Dev, s3_media: S3Bucket) -> None:
    blob_id = slot(alice, 100).json()["blob_id"]
    answer = APIClient().put(
        f"/api/v1/media/{blob_id}/content?token=x", data=b"x" * 100, content_type="application/octet-stream"
    )
    assert answer.status_code == 404


def test_prune_deletes_the_bucket_object_after_commit(
    alice: Dev, s3_media: S3Bucket, django_capture_on_commit_callbacks: Any
) -> None:
    blob_id = _upload(alice, os.urandom(100))
    with django_capture_on_commit_callbacks(execute=True):
        pruned = media_orphans_prune(older_than=timedelta(0), now=MediaBlob.objects.get().created_at + timedelta(1))
    assert [p.id for p in pruned] == [blob_id]
    assert s3_media.objects() == {}
