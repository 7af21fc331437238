"""Media services: attaching on the send hot path (set-based, nothing for plain sends), pruning
orphans (service, task, command), deletion, and side effects only after commit."""

from __future__ import annotations

import dataclasses
import os
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Conversation
from media.errors import MediaNotFoundError
from media.models import MediaBlob, MediaReference
from media.services import media_blob_delete, media_orphans_prune
from media.tasks import prune_orphan_media
from messaging.services import EnvelopeSendResult, SendRequest, envelope_send_batch
from tests.builders import Dev, envelope_content, make_conversation, make_dev
from tests.media.helpers import slot, upload

pytestmark = pytest.mark.django_db


def _request(dev: Dev, conversation: Conversation, *attachments: uuid.UUID) -> SendRequest:
    content = dataclasses.replace(envelope_content(conversation), attachments=tuple(attachments))
    return SendRequest(dev.device, dev.device.id, content)


def _batch_sql(requests: list[SendRequest]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        envelope_send_batch(requests)
    return [q["sql"] for q in queries.captured_queries]


def test_a_batch_without_attachments_does_no_media_work(alice: Dev, conversation: Conversation) -> None:
    sql = _batch_sql([_request(alice, conversation) for _ in range(5)])
    assert not any("media" in statement.lower() for statement in sql)


def test_attachments_cost_two_statements_per_batch_whatever_its_size(alice: Dev, conversation: Conversation) -> None:
    blobs = [upload(alice, os.urandom(100)) for _ in range(6)]
    plain = len(_batch_sql([_request(alice, conversation) for _ in range(3)]))
    one = _batch_sql([_request(alice, conversation, blobs[0])])
    many = _batch_sql([_request(alice, conversation, *blobs[1:3]), _request(alice, conversation, *blobs[3:6])])
    assert len(one) == len(many) == plain + 2
    assert MediaReference.objects.count() == 6


def test_batch_judges_attachments_per_request(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    mine, theirs = upload(alice, os.urandom(100)), upload(bob, os.urandom(100))
    outcome = envelope_send_batch(
        [_request(alice, conversation, mine), _request(alice, conversation, theirs), _request(alice, conversation)],
    )
    ok, refused, plain = outcome.results
    assert isinstance(ok, EnvelopeSendResult) and isinstance(plain, EnvelopeSendResult)
    assert isinstance(refused, MediaNotFoundError)
    assert [ok.message.seq, plain.message.seq] == [1, 2]  # no gap for the refused one
    assert list(MediaReference.objects.values_list("blob_id", "message_id")) == [(mine, ok.message.pk)]


def test_same_blob_in_two_conversations_is_referenced_by_both(alice: Dev, bob: Dev) -> None:
    first, second = make_conversation(alice, bob.user), make_conversation(alice)
    blob = upload(alice, os.urandom(100))
    envelope_send_batch([_request(alice, first, blob), _request(alice, second, blob)])
    assert set(MediaReference.objects.values_list("conversation_id", flat=True)) == {first.pk, second.pk}


def _age(blob_id: uuid.UUID, *, hours: int) -> None:
    MediaBlob.objects.filter(pk=blob_id).update(created_at=timezone.now() - timedelta(hours=hours))


def test_prune_removes_old_unreferenced_blobs_rows_and_objects(
    alice: Dev, conversation: Conversation, media_root: Path, django_capture_on_commit_callbacks: object
) -> None:
    old_orphan = upload(alice, os.urandom(100))
    old_pending = uuid.UUID(slot(alice, 100).json()["blob_id"])
    young_orphan = upload(alice, os.urandom(100))
    old_referenced = upload(alice, os.urandom(100))
    envelope_send_batch([_request(alice, conversation, old_referenced)])
    for blob_id in (old_orphan, old_pending, old_referenced):
        _age(blob_id, hours=25)

    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        pruned = media_orphans_prune(older_than=timedelta(days=1))

    assert {p.id for p in pruned} == {old_orphan, old_pending}
    assert set(MediaBlob.objects.values_list("id", flat=True)) == {young_orphan, old_referenced}
    assert not (media_root / "blobs" / str(old_orphan)).exists()
    assert (media_root / "blobs" / str(old_referenced)).exists()


def test_prune_dry_run_changes_nothing(alice: Dev) -> None:
    blob_id = upload(alice, os.urandom(100))
    _age(blob_id, hours=30)
    assert [p.id for p in media_orphans_prune(older_than=timedelta(days=1), dry_run=True)] == [blob_id]
    assert MediaBlob.objects.filter(pk=blob_id).exists()


def test_storage_is_not_touched_when_the_delete_rolls_back(alice: Dev, media_root: Path) -> None:
    blob_id = upload(alice, os.urandom(100))
    _age(blob_id, hours=30)
    # Without running on-commit callbacks (the test transaction never commits) the object stays.
    media_orphans_prune(older_than=timedelta(days=1))
    assert (media_root / "blobs" / str(blob_id)).exists()


def test_task_prunes_with_the_configured_age(alice: Dev, settings: object) -> None:
    old, young = upload(alice, os.urandom(100)), upload(alice, os.urandom(100))
    _age(old, hours=3)
    settings.E2EE_MEDIA_ORPHAN_AGE_S = 7200  # type: ignore[attr-defined]
    assert prune_orphan_media.name == "media.tasks.prune_orphan_media"
    assert prune_orphan_media.apply().get() == 1  # run here, as a worker would
    assert list(MediaBlob.objects.values_list("id", flat=True)) == [young]


def test_command_dry_run_and_older_than(alice: Dev) -> None:
    old, young = upload(alice, os.urandom(100)), upload(alice, os.urandom(200))
    _age(old, hours=2)
    out = StringIO()
    call_command("prune_orphan_media", "--dry-run", "--older-than", "3600", stdout=out)
    assert f"would remove blob {old}" in out.getvalue()
    assert "would remove 1 blob(s), 100 bytes" in out.getvalue()
    assert MediaBlob.objects.count() == 2
    out = StringIO()
    call_command("prune_orphan_media", "--older-than", "0", stdout=out)
    assert f"removed blob {old}" in out.getvalue() and f"removed blob {young}" in out.getvalue()
    assert "removed 2 blob(s), 300 bytes" in out.getvalue()
    assert not MediaBlob.objects.exists()


def test_delete_service_removes_row_then_object(
    alice: Dev, media_root: Path, django_capture_on_commit_callbacks: object
) -> None:
    blob_id = upload(alice, os.urandom(100))
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        media_blob_delete(blob=MediaBlob.objects.get(pk=blob_id))
    assert not MediaBlob.objects.exists()
    assert not (media_root / "blobs" / str(blob_id)).exists()


def test_quota_counts_pending_slots(alice: Dev, settings: object) -> None:
    settings.E2EE_MEDIA_QUOTA_BYTES = 1000  # type: ignore[attr-defined]
    assert slot(alice, 600).status_code == 201
    assert slot(alice, 600).json()["code"] == "media_quota_exceeded"
    assert slot(make_dev(), 600).status_code == 201  # per user
