"""Operator commands and the services behind them: stats, revoke_device, deactivate_user,
purge_user (each with --help, and a dry run that changes nothing)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import User
from common.testing import PublishedEvent
from conversations.models import Membership, WrappedKey
from devices.models import Device, DeviceToken
from messaging.models import Message
from messaging.services import TOMBSTONE_CIPHERTEXT, envelope_send
from tests.builders import Dev, envelope_content, make_dev

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("command", ["stats", "revoke_device", "deactivate_user", "purge_user"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        call_command(command, "--help")
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _send(sender: Dev, conversation: Any, size: int) -> Message:
    content = envelope_content(conversation, ciphertext=bytes(size))
    return envelope_send(device=sender.device, sender_device_id=sender.device.id, content=content).message


def test_stats_counts_everything_and_the_stored_bytes(alice: Dev, bob: Dev, conversation: Any) -> None:
    make_dev(user=alice.user, status=Device.Status.PENDING)
    _send(alice, conversation, 100)
    _send(bob, conversation, 28)

    stats = json.loads(run("stats", "--json"))

    assert stats["users"] == 2 and stats["users_active"] == 2
    assert stats["devices_by_status"] == {"pending": 1, "active": 2, "revoked": 0}
    assert stats["live_tokens"] == 3  # the pending device has one too
    assert stats["conversations_by_kind"] == {"direct": 0, "group": 1}
    assert stats["memberships"] == 2
    assert (stats["epochs"], stats["wrapped_keys"]) == (1, 2)
    assert (stats["messages"], stats["ciphertext_bytes"]) == (2, 128)
    assert "ciphertext bytes: 128" in run("stats")


def test_revoke_device_dry_run_changes_nothing_then_revokes(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    dev = make_dev()
    assert "would revoke" in run("revoke_device", str(dev.device.id), "--dry-run")
    dev.device.refresh_from_db()
    assert dev.device.status == Device.Status.ACTIVE

    with django_capture_on_commit_callbacks(execute=True):
        assert "revoked device" in run("revoke_device", str(dev.device.id))
    dev.device.refresh_from_db()
    assert dev.device.status == Device.Status.REVOKED
    assert not DeviceToken.objects.filter(device=dev.device, revoked_at__isnull=True).exists()
    assert [e.event for e in published] == [{"type": "device.revoked", "device_id": str(dev.device.id)}]

    with pytest.raises(CommandError, match="revoked already"):
        run("revoke_device", str(dev.device.id))
    with pytest.raises(CommandError, match="no device"):
        run("revoke_device", str(uuid.uuid4()))


def test_deactivate_user_dry_run_then_deactivates(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    dev = make_dev()
    make_dev(user=dev.user)
    assert "would deactivate" in run("deactivate_user", dev.user.username, "--dry-run")
    assert User.objects.get(pk=dev.user.pk).is_active

    with django_capture_on_commit_callbacks(execute=True):
        assert "revoked 2 live token(s)" in run("deactivate_user", dev.user.username)
    assert not User.objects.get(pk=dev.user.pk).is_active
    assert dev.client().get("/api/v1/accounts/me").status_code == 401
    assert sorted(e.event["type"] for e in published) == ["device.signed_out", "device.signed_out"]
    with pytest.raises(CommandError, match="deactivated already"):
        run("deactivate_user", dev.user.username)


def test_purge_user_needs_yes_and_dry_run_changes_nothing(alice: Dev, bob: Dev, conversation: Any) -> None:
    _send(alice, conversation, 50)
    before = run("stats", "--json")
    out = run("purge_user", alice.user.username)
    assert "would purge" in out and "add --yes" in out
    assert "messages tombstoned: 1" in run("purge_user", alice.user.username, "--dry-run")
    assert run("stats", "--json") == before


def test_purge_erases_the_account_and_keeps_other_members_history_gap_free(
    alice: Dev,
    bob: Dev,
    conversation: Any,
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    phone = make_dev(user=alice.user)
    sent = [_send(alice, conversation, 80), _send(bob, conversation, 40), _send(alice, conversation, 60)]
    username = alice.user.username

    with django_capture_on_commit_callbacks(execute=True):
        out = run("purge_user", username, "--yes")

    assert f"purged {username}, now purged_{alice.user.pk}" in out
    user = User.objects.get(pk=alice.user.pk)
    assert (user.username, bytes(user.identity_key), user.is_active) == (f"purged_{user.pk}", b"", False)
    assert not user.has_usable_password()
    assert not User.objects.filter(username=username).exists()
    assert set(Device.objects.filter(user=user).values_list("status", "name")) == {("revoked", "purged")}
    assert not DeviceToken.objects.filter(device__user=user).exists()
    assert not Membership.objects.filter(user=user).exists()
    assert not WrappedKey.objects.filter(recipient_device__user=user).exists()
    # Bob's copy of the ChatKey, wrapped by alice's device, stays: his history still opens.
    assert WrappedKey.objects.filter(recipient_device=bob.device).count() == 1
    assert {e.event["device_id"] for e in published} == {str(alice.device.id), str(phone.device.id)}

    # Bob still reads a gap-free log: alice's messages are zeroed tombstones, his own is intact.
    page = bob.client().get(f"/api/v1/conversations/{conversation.pk}/messages").json()
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
    by_seq = {m.seq: m for m in Message.objects.filter(conversation=conversation)}
    for original in (sent[0], sent[2]):
        assert bytes(by_seq[original.seq].ciphertext) == TOMBSTONE_CIPHERTEXT
        assert bytes(by_seq[original.seq].nonce) == bytes(12)
    assert bytes(by_seq[2].ciphertext) == bytes(sent[1].ciphertext)
    assert bob.client().get(f"/api/v1/conversations/{conversation.pk}").json()["members"] == [bob.user.username]
    # The username is free again, and the purged account can no longer be found.
    assert bob.client().get(f"/api/v1/users/{username}").status_code == 404
