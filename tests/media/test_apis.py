"""Media endpoints on the filesystem backend (the embedded default): limits, the declared length,
who may download, and attaching blobs to messages over REST."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from media.models import MediaBlob, MediaReference
from tests.builders import Dev, envelope_json, make_dev
from tests.media.helpers import put, slot, upload

pytestmark = pytest.mark.django_db


def _download(dev: Dev, blob_id: uuid.UUID) -> Any:
    return dev.client().get(f"/api/v1/media/{blob_id}")


def _content(answer: Any) -> bytes:
    link = answer.json()["download"]
    response: Any = APIClient().get(link["url"])
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def _send(dev: Dev, conversation: Conversation, attachments: list[str], **overrides: Any) -> Any:
    body = envelope_json(dev, attachments=attachments, **overrides)
    return dev.client().post(f"/api/v1/conversations/{conversation.pk}/messages", body, format="json")


def test_upload_complete_and_download_round_trip(alice: Dev, media_root: Path) -> None:
    body = os.urandom(100_000)
    blob_id = upload(alice, body)
    blob = MediaBlob.objects.get(pk=blob_id)
    assert (blob.state, blob.length, blob.uploader_id) == (MediaBlob.State.COMPLETE, len(body), alice.user.pk)
    assert (media_root / "blobs" / str(blob_id)).read_bytes() == body
    answer = _download(alice, blob_id)  # the uploader may read it before any message names it
    assert answer.status_code == 200
    assert answer.json()["length"] == len(body)
    assert _content(answer) == body


def test_create_answers_an_upload_link_without_the_bearer_token(alice: Dev) -> None:
    answer = slot(alice, 1000)
    assert answer.status_code == 201
    upload_link = answer.json()["upload"]
    assert upload_link["method"] == "PUT"
    assert upload_link["url"].startswith("http://testserver/api/v1/media/")
    assert alice.token not in upload_link["url"]
    assert upload_link["headers"]["Content-Length"] == "1000"


def test_oversize_declaration_is_refused(alice: Dev, settings: Any) -> None:
    settings.E2EE_MEDIA_MAX_BYTES = 1000
    answer = slot(alice, 1001)
    assert answer.status_code == 413
    assert answer.json()["code"] == "media_too_large"
    assert answer.json()["extra"] == {"max_bytes": 1000}
    assert not MediaBlob.objects.exists()


def test_upload_over_the_quota_is_refused(alice: Dev, settings: Any) -> None:
    settings.E2EE_MEDIA_QUOTA_BYTES = 5000
    upload(alice, os.urandom(3000))
    answer = slot(alice, 2001)
    assert answer.status_code == 409
    assert answer.json()["code"] == "media_quota_exceeded"
    assert answer.json()["extra"] == {"quota_bytes": 5000, "used_bytes": 3000}
    assert slot(alice, 2000).status_code == 201  # exactly up to the quota is fine
    assert MediaBlob.objects.count() == 2


@pytest.mark.parametrize("length", [0, 15, -1, "100", 1.5, None, True])
def test_malformed_length_is_invalid_request(alice: Dev, length: Any) -> None:
    answer = slot(alice, length)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_request"
    assert "length" in answer.json()["extra"]["fields"]


@pytest.mark.parametrize("actual", [999, 1001])
def test_body_of_another_length_is_refused_and_not_kept(alice: Dev, media_root: Path, actual: int) -> None:
    created = slot(alice, 1000).json()
    answer = put(created["upload"], os.urandom(actual))
    assert answer.status_code == 400
    assert answer.json()["code"] == "media_length_mismatch"
    assert answer.json()["extra"]["declared_length"] == 1000
    assert not (media_root / "blobs" / created["blob_id"]).exists()
    # A correct upload afterwards works.
    assert put(created["upload"], os.urandom(1000)).status_code == 204


def test_body_longer_than_its_content_length_header_claims_is_cut_and_refused(alice: Dev) -> None:
    """A lying Content-Length: the server reads at most the declared length plus one byte."""
    created = slot(alice, 1000).json()
    client = APIClient()
    answer = client.generic(
        "PUT",
        created["upload"]["url"],
        data=cast(Any, os.urandom(5000)),
        content_type="application/octet-stream",
        CONTENT_LENGTH="1000",
    )
    # Exactly 1000 bytes are read (the header), which is the declared length: stored.
    assert answer.status_code == 204
    assert MediaBlob.objects.get(pk=created["blob_id"]).length == 1000


def test_complete_without_upload_is_refused(alice: Dev) -> None:
    blob_id = slot(alice, 1000).json()["blob_id"]
    answer = alice.client().post(f"/api/v1/media/{blob_id}/complete")
    assert answer.status_code == 409
    assert answer.json()["code"] == "media_not_uploaded"


def test_complete_is_idempotent_and_upload_after_it_is_refused(alice: Dev) -> None:
    created = slot(alice, 100).json()
    assert put(created["upload"], os.urandom(100)).status_code == 204
    for _ in range(2):
        assert alice.client().post(f"/api/v1/media/{created['blob_id']}/complete").json()["state"] == "complete"
    answer = put(created["upload"], os.urandom(100))
    assert answer.status_code == 409
    assert answer.json()["code"] == "media_already_uploaded"


def test_someone_elses_blob_cannot_be_completed(alice: Dev, bob: Dev) -> None:
    created = slot(alice, 100).json()
    put(created["upload"], os.urandom(100))
    answer = bob.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    assert answer.status_code == 404
    assert answer.json()["code"] == "media_not_found"


@pytest.mark.parametrize("mutate", ["forged", "other_blob", "download_token", "missing"])
def test_upload_link_tokens_are_checked(alice: Dev, mutate: str) -> None:
    created = slot(alice, 100).json()
    other = slot(alice, 100).json()
    url = created["upload"]["url"]
    if mutate == "forged":
        url = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    elif mutate == "other_blob":
        url = url.replace(created["blob_id"], other["blob_id"])
    elif mutate == "download_token":
        url = url.split("?")[0] + "?token=" + created["blob_id"]
    else:
        url = url.split("?")[0]
    answer = APIClient().put(url, data=os.urandom(100), content_type="application/octet-stream")
    assert answer.status_code == 404
    assert answer.json()["code"] == "media_link_invalid"


def test_expired_links_are_refused(alice: Dev, settings: Any) -> None:
    blob_id = upload(alice, os.urandom(100))
    link = _download(alice, blob_id).json()["download"]
    settings.E2EE_MEDIA_URL_EXPIRY_S = -1
    answer = APIClient().get(link["url"])
    assert answer.status_code == 404
    assert answer.json()["code"] == "media_link_invalid"


def test_upload_link_does_not_download(alice: Dev) -> None:
    created = slot(alice, 100).json()
    put(created["upload"], os.urandom(100))
    alice.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    answer = APIClient().get(created["upload"]["url"])
    assert answer.status_code == 404


def test_members_of_a_referencing_conversation_may_download(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    body = os.urandom(5000)
    blob_id = upload(alice, body)
    assert _download(bob, blob_id).status_code == 404  # not referenced yet
    sent = _send(alice, conversation, [str(blob_id)])
    assert sent.status_code == 201
    assert MediaReference.objects.filter(blob_id=blob_id, conversation=conversation).count() == 1
    answer = _download(bob, blob_id)
    assert answer.status_code == 200
    assert _content(answer) == body


def test_non_member_cannot_download(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    blob_id = upload(alice, os.urandom(500))
    _send(alice, conversation, [str(blob_id)])
    mallory = make_dev()
    answer = _download(mallory, blob_id)
    assert answer.status_code == 404
    assert answer.json() == {"code": "media_not_found", "message": "No such media blob.", "extra": {}}
    assert _download(mallory, uuid.uuid4()).json()["code"] == "media_not_found"


def test_pending_blob_is_not_downloadable_nor_attachable(alice: Dev, conversation: Conversation) -> None:
    created = slot(alice, 100).json()
    put(created["upload"], os.urandom(100))
    assert _download(alice, created["blob_id"]).status_code == 404
    answer = _send(alice, conversation, [created["blob_id"]])
    assert answer.status_code == 404
    assert answer.json()["code"] == "media_not_found"


def test_only_own_blobs_can_be_attached(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    blob_id = upload(bob, os.urandom(100))
    answer = _send(alice, conversation, [str(blob_id)])
    assert answer.status_code == 404
    assert answer.json()["code"] == "media_not_found"
    assert not MediaReference.objects.exists()
    assert conversation.messages.count() == 0


def test_idempotent_resend_with_attachments_adds_no_reference(alice: Dev, conversation: Conversation) -> None:
    blob_id = upload(alice, os.urandom(100))
    body = envelope_json(alice, attachments=[str(blob_id), str(blob_id)])
    url = f"/api/v1/conversations/{conversation.pk}/messages"
    assert alice.client().post(url, body, format="json").status_code == 201
    assert alice.client().post(url, body, format="json").status_code == 200
    assert MediaReference.objects.count() == 1


@pytest.mark.parametrize(
    "attachments", ["x", [1], ["not-a-uuid"], [str(uuid.uuid4()).upper()], [str(uuid.uuid4()) for _ in range(17)]]
)
def test_malformed_attachments_are_invalid_request(alice: Dev, conversation: Conversation, attachments: Any) -> None:
    answer = _send(alice, conversation, attachments)
    assert answer.status_code == 400
    assert all(name.startswith("attachments") for name in answer.json()["extra"]["fields"])


def test_no_log_line_holds_a_link_token_or_blob_bytes(alice: Dev, every_log_line: Any) -> None:
    """Links are capabilities: the request log names the path, never the query with the token."""
    body = os.urandom(2000)
    created = slot(alice, len(body)).json()
    put(created["upload"], body)
    alice.client().post(f"/api/v1/media/{created['blob_id']}/complete")
    link = _download(alice, uuid.UUID(created["blob_id"])).json()["download"]
    assert _content(_download(alice, uuid.UUID(created["blob_id"]))) == body
    tokens = [created["upload"]["url"].split("token=")[1], link["url"].split("token=")[1]]
    text = "\n".join(every_log_line.lines)
    assert created["blob_id"] in text  # the capture works: the paths are logged
    for token in tokens:
        assert token.split(":")[-1] not in text
    assert base64.b64encode(body[:300]).decode()[:40] not in text and body[:300].hex()[:40] not in text
