"""The hot path's hand-written SQL (messaging/sql.py), statement by statement, on whichever
database the suite runs on (CI runs both SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from conversations.models import Conversation
from devices.models import Device
from messaging import sql
from messaging.models import DeliveryCursor
from tests.builders import Dev, make_dev

pytestmark = pytest.mark.django_db


def test_members_and_active_name_memberships_and_the_devices_that_may_send(
    alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    stranger = make_dev()
    Device.objects.filter(pk=bob.device.pk).update(status=Device.Status.REVOKED)
    with connection.cursor() as cursor:
        members, active = sql.members_and_active(
            cursor,
            {conversation.id},
            {alice.user.id, bob.user.id, stranger.user.id},
            {alice.device.id, bob.device.id, stranger.device.id},
        )
    assert members == {(conversation.id, alice.user.id), (conversation.id, bob.user.id)}
    assert active == {alice.device.id, stranger.device.id}


def test_conversations_lock_reads_epoch_and_last_seq(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=41)
    with connection.cursor() as cursor:
        locked, push_targets = sql.conversations_lock(cursor, {conversation.id, uuid.uuid4()})
    assert locked == {conversation.id: [conversation.current_epoch, 41]}
    assert push_targets is False


def test_existing_sends_finds_a_resend_by_its_idempotency_key(alice: Dev, conversation: Conversation) -> None:
    from tests.messaging.test_services import _send

    sent = _send(alice, conversation)
    with connection.cursor() as cursor:
        found = sql.existing_sends(cursor, {alice.device.id}, [bytes(sent.message.client_message_id), bytes(16)])
    assert list(found) == [(alice.device.id, bytes(sent.message.client_message_id))]


def test_cursors_upsert_creates_then_only_ever_raises(bob: Dev, conversation: Conversation) -> None:
    with connection.cursor() as cursor:
        sql.cursors_upsert(cursor, [(bob.device.id, conversation.id, 5, 2)])
        sql.cursors_upsert(cursor, [(bob.device.id, conversation.id, 3, 4)])
    cursor_row = DeliveryCursor.objects.get(device=bob.device, conversation=conversation)
    assert (cursor_row.delivered_seq, cursor_row.read_seq) == (5, 4)
