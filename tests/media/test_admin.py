"""Operator admin for media blobs: metadata only, no N+1, deletion through the service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from media.models import MediaBlob
from tests.builders import make_conversation, make_dev
from tests.media.helpers import upload

pytestmark = pytest.mark.django_db
URL = "/admin/media/mediablob/"


def _populate(n: int) -> None:
    for _ in range(n):
        dev = make_dev()
        blob_id = upload(dev, os.urandom(100))
        conversation = make_conversation(dev)
        dev.client().post(
            f"/api/v1/conversations/{conversation.pk}/messages",
            {
                "version": 1,
                "epoch": 1,
                "sender_device_id": str(dev.device.id),
                "client_message_id": "AAAAAAAAAAAAAAAAAAAAAA==",
                "nonce": "AAAAAAAAAAAAAAAA",
                "ciphertext": "A" * 24,
                "signature": "A" * 86 + "==",
                "attachments": [str(blob_id)],
            },
            format="json",
        )
        upload(dev, os.urandom(50))  # and one unreferenced


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_changelist_shows_metadata_with_constant_queries(admin_client: Client) -> None:
    _populate(2)
    few = _queries(admin_client, URL)
    _populate(6)
    assert _queries(admin_client, URL) == few
    page = admin_client.get(URL).content.decode()
    assert "referenced" in page and "complete" in page
    assert admin_client.get(URL, {"q": "user", "state": "complete"}).status_code == 200


def test_detail_page_renders_read_only(admin_client: Client) -> None:
    dev = make_dev()
    blob_id = upload(dev, os.urandom(100))
    response = admin_client.get(f"{URL}{blob_id}/change/")
    assert response.status_code == 200
    assert dev.user.username in response.content.decode()
    assert admin_client.get(f"{URL}add/").status_code == 403


def test_delete_action_goes_through_the_service(admin_client: Client, media_root: Path) -> None:
    dev = make_dev()
    keep, gone = upload(dev, os.urandom(100)), upload(dev, os.urandom(100))
    response = admin_client.post(URL, {"action": "delete_blobs", "_selected_action": [str(gone)]}, follow=True)
    assert response.status_code == 200
    assert "Deleted 1 blob(s)." in response.content.decode()
    assert list(MediaBlob.objects.values_list("id", flat=True)) == [keep]
