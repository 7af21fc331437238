"""Linking on the server (protocol.md 4.7): link requests, the approval with its code checks, the
signed device list's chain checks, expiry, and the wrapped-key uploads for a device being linked.
Keys, signatures and MACs are random bytes: the server checks none of them."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from common.realtime import device_group
from common.testing import PublishedEvent
from conversations.errors import EpochNotFoundError
from conversations.models import WrappedKey
from conversations.services import LinkWrappedKeyUpload, link_keys_upload
from devices.device_list import (
    GENESIS_PREV_HASH,
    DeviceListEntryData,
    ListedDevice,
    device_list_entry_hash,
)
from devices.errors import (
    DeviceListMismatchError,
    DeviceNotFoundError,
    DeviceNotPendingError,
    LinkCodeExpiredError,
    LinkCodeInvalidError,
    LinkCodeUsedError,
    LinkKeysIncompleteError,
    LinkRequestNotFoundError,
    StaleDeviceListError,
)
from devices.models import Device, DeviceListEntry, LinkRequest
from devices.selectors import device_list_entry_data, device_list_head
from devices.services import device_link_approve, device_list_append, link_codes_expire, link_request_open
from devices.tasks import link_codes_expire as link_codes_expire_task
from tests.builders import Dev, make_conversation, make_dev

pytestmark = pytest.mark.django_db

VERIFIER = os.urandom(32)


def _listed(device: Device) -> ListedDevice:
    return ListedDevice(device.id, bytes(device.x25519_public_key), bytes(device.ed25519_public_key), device.name)


def _entry(
    *, user_devices: Sequence[Device], change: str, subject: Device, actor: Device, head: DeviceListEntry | None
) -> DeviceListEntryData:
    username = subject.user.username
    return DeviceListEntryData(
        version=head.version + 1 if head else 1,
        prev_hash=device_list_entry_hash(username=username, entry=device_list_entry_data(head))
        if head
        else GENESIS_PREV_HASH,
        change=change,
        subject_device_id=subject.id,
        actor_device_id=actor.id,
        timestamp_ms=1764115200000,
        devices=tuple(sorted((_listed(d) for d in user_devices), key=lambda d: d.device_id.bytes)),
        signature=os.urandom(64),
    )


@pytest.fixture
def account() -> tuple[Dev, Device]:
    """An active laptop (with the account's first device-list entry) and a pending phone."""
    laptop = make_dev()
    device_list_append(
        user=laptop.user,
        entry=_entry(
            user_devices=[laptop.device], change="created", subject=laptop.device, actor=laptop.device, head=None
        ),
        change=DeviceListEntry.Change.CREATED,
        subject=laptop.device,
        actor=laptop.device,
        devices_after=[laptop.device],
    )
    phone = make_dev(user=laptop.user, status=Device.Status.PENDING).device
    return laptop, phone


def _approve(
    laptop: Dev, phone: Device, *, verifier: bytes = VERIFIER, entry: DeviceListEntryData | None = None
) -> Any:
    if entry is None:
        entry = _entry(
            user_devices=[laptop.device, phone],
            change="linked",
            subject=phone,
            actor=laptop.device,
            head=device_list_head(user_id=laptop.user.pk),
        )
    return device_link_approve(
        approver=laptop.device,
        device_id=phone.id,
        verifier=verifier,
        vouch_signature=os.urandom(64),
        entry=entry,
        wrapped_identity_key=os.urandom(80),
        approval_mac=os.urandom(32),
    )


def _open(phone: Device, **kwargs: Any) -> LinkRequest:
    return link_request_open(device=phone, verifier_hash=hashlib.sha256(VERIFIER).digest(), **kwargs)


def _unchanged(phone: Device, *, entries: int = 1) -> None:
    phone.refresh_from_db()
    assert phone.status == Device.Status.PENDING and phone.vouch_signature is None
    assert DeviceListEntry.objects.filter(user_id=phone.user_id).count() == entries


def test_open_link_request_tells_the_accounts_active_devices_only(
    account: tuple[Dev, Device],
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    laptop, phone = account
    make_dev()  # another account's device hears nothing
    with django_capture_on_commit_callbacks(execute=True):
        request = _open(phone)
    assert request.status == LinkRequest.Status.WAITING
    assert timedelta(seconds=599) < request.expires_at - request.created_at <= timedelta(seconds=600)
    assert [p.group for p in published] == [device_group(laptop.device.id)]
    event = published[0].event
    assert event["type"] == "device.link_requested" and event["device"]["device_id"] == str(phone.id)


def test_a_new_link_request_ends_the_previous_one(account: tuple[Dev, Device]) -> None:
    _, phone = account
    first = _open(phone)
    second = _open(phone)
    first.refresh_from_db()
    assert (first.status, second.status) == (LinkRequest.Status.EXPIRED, LinkRequest.Status.WAITING)


def test_only_a_pending_device_opens_a_link_request(account: tuple[Dev, Device]) -> None:
    laptop, _ = account
    with pytest.raises(DeviceNotPendingError):
        _open(laptop.device)


def test_approve_activates_the_device_appends_the_list_and_tells_observers(
    account: tuple[Dev, Device],
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    laptop, phone = account
    bob = make_dev()
    make_conversation(laptop, bob.user)
    _open(phone)
    # Epoch 1 of the conversation must be wrapped for the phone before approval.
    with pytest.raises(LinkKeysIncompleteError) as excinfo:
        _approve(laptop, phone)
    assert excinfo.value.extra == {"missing": 1}
    _unchanged(phone)
    stored = link_keys_upload(
        uploader=laptop.device,
        device_id=phone.id,
        keys=[_key(laptop)],
    )
    assert stored == 1
    with django_capture_on_commit_callbacks(execute=True):
        request = _approve(laptop, phone)
    phone.refresh_from_db()
    assert phone.status == Device.Status.ACTIVE and phone.vouched_by_id == laptop.device.id
    assert request.status == LinkRequest.Status.APPROVED and request.device_list_version == 2
    head = device_list_head(user_id=laptop.user.pk)
    assert head is not None and head.version == 2 and head.change == "linked"
    list_events = [p for p in published if p.event["type"] == "device.list_changed"]
    assert {p.group for p in list_events} == {device_group(d) for d in (laptop.device.id, phone.id, bob.device.id)}
    assert list_events[0].event == {"type": "device.list_changed", "username": laptop.user.username, "version": 2}


def _key(laptop: Dev, *, conversation_id: uuid.UUID | None = None, epoch: int = 1) -> LinkWrappedKeyUpload:
    from conversations.models import Conversation

    cid = conversation_id or Conversation.objects.filter(memberships__user=laptop.user).values_list("pk", flat=True)[0]
    return LinkWrappedKeyUpload(conversation_id=cid, epoch=epoch, wrapped_key=os.urandom(80), signature=os.urandom(64))


def test_a_wrong_code_changes_nothing(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    _open(phone)
    with pytest.raises(LinkCodeInvalidError):
        _approve(laptop, phone, verifier=os.urandom(32))
    _unchanged(phone)
    assert LinkRequest.objects.get(device=phone).status == LinkRequest.Status.WAITING
    _approve(laptop, phone)  # the right code still works afterwards


def test_an_expired_code_changes_nothing(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    _open(phone, now=timezone.now() - timedelta(seconds=601))
    with pytest.raises(LinkCodeExpiredError):
        _approve(laptop, phone)
    _unchanged(phone)


def test_a_code_works_once(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    _open(phone)
    _approve(laptop, phone)
    with pytest.raises(LinkCodeUsedError):
        _approve(laptop, phone)
    assert DeviceListEntry.objects.filter(user_id=phone.user_id).count() == 2


def test_approve_without_a_link_request_is_refused(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    with pytest.raises(LinkRequestNotFoundError):
        _approve(laptop, phone)
    _unchanged(phone)


def test_an_entry_that_does_not_follow_the_head_is_stale(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    _open(phone)
    good = _entry(
        user_devices=[laptop.device, phone],
        change="linked",
        subject=phone,
        actor=laptop.device,
        head=device_list_head(user_id=laptop.user.pk),
    )
    for bad in (
        DeviceListEntryData(**{**good.__dict__, "version": 3}),
        DeviceListEntryData(**{**good.__dict__, "prev_hash": os.urandom(32)}),
    ):
        with pytest.raises(StaleDeviceListError) as excinfo:
            _approve(laptop, phone, entry=bad)
        assert excinfo.value.extra == {"current_version": 1}
    _unchanged(phone)


def test_an_entry_that_adds_or_hides_a_device_is_refused(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    stranger = make_dev(user=laptop.user).device  # active on the server, but not on the signed list
    _open(phone)
    head = device_list_head(user_id=laptop.user.pk)
    for devices in (
        [laptop.device, phone],
        [laptop.device, stranger],
        [laptop.device, phone, stranger, make_dev().device],
    ):
        entry = _entry(user_devices=devices, change="linked", subject=phone, actor=laptop.device, head=head)
        with pytest.raises(DeviceListMismatchError):
            _approve(laptop, phone, entry=entry)
    _unchanged(phone)


def test_link_codes_expire_marks_only_expired_waiting_requests(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    old = _open(phone, now=timezone.now() - timedelta(hours=1))
    other = make_dev(user=laptop.user, status=Device.Status.PENDING).device
    fresh = _open(other)
    assert link_codes_expire() == 1
    assert link_codes_expire_task() == 0  # the Celery task calls the service (run in this process)
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.status, fresh.status) == (LinkRequest.Status.EXPIRED, LinkRequest.Status.WAITING)


def test_link_keys_upload_is_idempotent_and_only_for_the_accounts_epochs(account: tuple[Dev, Device]) -> None:
    laptop, phone = account
    bob = make_dev()
    make_conversation(laptop, bob.user)
    foreign = make_conversation(bob, make_dev().user)
    with pytest.raises(LinkRequestNotFoundError):  # no live link request yet
        link_keys_upload(uploader=laptop.device, device_id=phone.id, keys=[_key(laptop)])
    _open(phone)
    key = _key(laptop)
    assert link_keys_upload(uploader=laptop.device, device_id=phone.id, keys=[key]) == 1
    assert link_keys_upload(uploader=laptop.device, device_id=phone.id, keys=[_key(laptop)]) == 0
    assert bytes(WrappedKey.objects.get(recipient_device=phone).wrapped_key) == key.wrapped_key
    for bad in (_key(laptop, conversation_id=foreign.pk), _key(laptop, epoch=2)):
        with pytest.raises(EpochNotFoundError):
            link_keys_upload(uploader=laptop.device, device_id=phone.id, keys=[bad])
    with pytest.raises(DeviceNotFoundError):  # another account's device, like an unknown one
        link_keys_upload(uploader=laptop.device, device_id=bob.device.id, keys=[key])
    with pytest.raises(DeviceNotPendingError):
        link_keys_upload(uploader=laptop.device, device_id=laptop.device.id, keys=[key])


def test_revoke_with_a_signed_entry_appends_it_and_a_wrong_entry_revokes_nothing(
    account: tuple[Dev, Device],
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    from devices.services import device_revoke_own

    laptop, phone = account
    _open(phone)
    _approve(laptop, phone)
    phone.refresh_from_db()
    head = device_list_head(user_id=laptop.user.pk)
    hides_laptop = _entry(user_devices=[phone], change="revoked", subject=phone, actor=laptop.device, head=head)
    with pytest.raises(DeviceListMismatchError):
        device_revoke_own(revoker=laptop.device, device_id=phone.id, entry=hides_laptop)
    phone.refresh_from_db()
    assert phone.status == Device.Status.ACTIVE
    good = _entry(user_devices=[laptop.device], change="revoked", subject=phone, actor=laptop.device, head=head)
    with django_capture_on_commit_callbacks(execute=True):
        device_revoke_own(revoker=laptop.device, device_id=phone.id, entry=good)
    phone.refresh_from_db()
    assert phone.status == Device.Status.REVOKED
    head = device_list_head(user_id=laptop.user.pk)
    assert head is not None and (head.version, head.change, head.subject_device_id) == (3, "revoked", phone.id)
    assert {"type": "device.list_changed", "username": laptop.user.username, "version": 3} in [
        p.event for p in published
    ]


def test_approve_for_another_accounts_or_an_unknown_device_is_not_found(account: tuple[Dev, Device]) -> None:
    laptop, _ = account
    strangers = make_dev(status=Device.Status.PENDING).device
    _open(strangers)
    for device_id in (strangers.id, uuid.uuid4()):
        with pytest.raises(DeviceNotFoundError):
            device_link_approve(
                approver=laptop.device,
                device_id=device_id,
                verifier=VERIFIER,
                vouch_signature=os.urandom(64),
                entry=_entry(user_devices=[], change="linked", subject=strangers, actor=laptop.device, head=None),
                wrapped_identity_key=os.urandom(80),
                approval_mac=os.urandom(32),
            )
    strangers.refresh_from_db()
    assert strangers.status == Device.Status.PENDING


def test_approve_by_a_device_revoked_meanwhile_is_refused(account: tuple[Dev, Device]) -> None:
    from devices.errors import DeviceNotActiveError

    laptop, phone = account
    _open(phone)
    Device.objects.filter(pk=laptop.device.pk).update(status=Device.Status.REVOKED)
    with pytest.raises(DeviceNotActiveError):
        _approve(laptop, phone)
    _unchanged(phone)


def test_an_entry_revoking_an_unlisted_or_linking_a_listed_device_is_refused(account: tuple[Dev, Device]) -> None:
    from devices.services import device_revoke_own

    laptop, phone = account
    unlisted = make_dev(user=laptop.user).device  # active on the server, never on the signed list
    head = device_list_head(user_id=laptop.user.pk)
    entry = _entry(user_devices=[laptop.device], change="revoked", subject=unlisted, actor=laptop.device, head=head)
    with pytest.raises(DeviceListMismatchError):
        device_revoke_own(revoker=laptop.device, device_id=unlisted.id, entry=entry)
    unlisted.refresh_from_db()
    assert unlisted.status == Device.Status.ACTIVE
    relink = _entry(user_devices=[laptop.device], change="linked", subject=laptop.device, actor=phone, head=head)
    with pytest.raises(DeviceListMismatchError):
        device_list_append(
            user=laptop.user,
            entry=relink,
            change=DeviceListEntry.Change.LINKED,
            subject=laptop.device,
            actor=phone,
            devices_after=[laptop.device],
        )
    assert DeviceListEntry.objects.filter(user=laptop.user).count() == 1
