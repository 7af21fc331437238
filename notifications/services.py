"""Writes of the notifications app: push targets, mutes, and the life of a notification.

A notification's life (docs/operations.md, "Push notifications"): the send path registers one
after-commit enqueue per batch (`messages_notify_on_commit`); the fan-out task opens at most one
waiting notification per device (`notifications_open`, the coalescing); after the coalescing
delay the delivery task claims it (`notification_claim`), sends, and records the outcome
(`notification_delivered` / `notification_failed`); the last failure leaves a `DeadLetter` that
`dead_letter_replay` puts back in the queue.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from conversations.selectors import access_conversation
from devices.models import Device
from devices.presence import devices_connected
from messaging.models import Message
from notifications.backends import Wake
from notifications.errors import PushTargetNotFoundError, PushTargetUrlRefusedError, WebPushNotConfiguredError
from notifications.models import ConversationMute, DeadLetter, Notification, PushTarget
from notifications.selectors import (
    device_has_undelivered,
    notification_recipients,
    notifications_open_for,
)

logger = logging.getLogger(__name__)

# (conversation id hex, highest new seq, hex ids of the devices that sent in the batch): what one
# committed batch tells the fan-out task about one conversation. JSON-serialisable on purpose.
NotifyWindow = tuple[str, int, list[str]]

# How long a claimed delivery is reserved for its worker: the request timeout and a margin for
# the two database writes around it. Past it the attempt is presumed lost with its worker and is
# given to another (the receiver deduplicates on the notification id if the first one was sent
# after all), so the margin bounds how long a killed worker delays a wake-up.
_LEASE_MARGIN_S = 5.0
# A due time this close counts as reached: ETAs are computed on another host's clock.
_DUE_SLACK_S = 1.0
_ERROR_CHARS = 500
# Notifications one sweep hands out at most (the next sweep takes the rest).
_REQUEUE_BATCH = 1000


# --- push targets and mutes ---------------------------------------------------------------------


def _address_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global or ip.is_multicast


# What a push target URL looks like (the OpenAPI schema states the same pattern): http(s), a host
# of RFC 3986 registered-name characters (no credentials; an IDN host in its punycode form), an
# optional port, then printable ASCII. ASCII classes only: JSON Schema patterns are ECMAScript
# regular expressions, whose \s is not Python's. Matched whole (fullmatch), as `$` is in ECMAScript.
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
PUSH_TARGET_URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9._~%!$&'()*+,;=-]+(?::" + _PORT + r")?(?:[/?#][!-~]*)?$"
_PUSH_TARGET_URL = re.compile(PUSH_TARGET_URL_PATTERN)


def push_target_url_check(url: str) -> None:
    """http(s) with a host; unless E2EE_NOTIFY_ALLOW_PRIVATE_URLS, every address the host
    resolves to now must be public (no loopback, private, link-local or reserved ranges)."""
    if not _PUSH_TARGET_URL.fullmatch(url):
        raise PushTargetUrlRefusedError("The URL must be http:// or https:// with a host.")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise PushTargetUrlRefusedError("The URL does not parse.") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise PushTargetUrlRefusedError("The URL must be http:// or https:// with a host.")
    if parts.username or parts.password:
        raise PushTargetUrlRefusedError("The URL must not carry credentials.")
    if settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS:
        return
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PushTargetUrlRefusedError("The URL's host does not resolve.") from exc
    if any(_address_refused(str(info[4][0])) for info in infos):
        raise PushTargetUrlRefusedError("The URL names a loopback, private or reserved address.")


@dataclass(frozen=True)
class RegisteredTarget:
    target: PushTarget
    secret: str | None  # the webhook secret, returned to the device this once


def push_target_register(*, device: Device, kind: str, url: str, p256dh: str = "", auth: str = "") -> RegisteredTarget:
    """Create or replace the device's push target. A webhook gets a fresh secret every time."""
    push_target_url_check(url)
    if kind == PushTarget.Kind.WEBPUSH and not settings.E2EE_VAPID_PRIVATE_KEY:
        raise WebPushNotConfiguredError()
    secret = secrets.token_urlsafe(32) if kind == PushTarget.Kind.WEBHOOK else ""
    with transaction.atomic(durable=True):
        target, _ = PushTarget.objects.update_or_create(
            device=device,
            defaults={
                "kind": kind,
                "url": url,
                "secret": secret,
                "p256dh": p256dh if kind == PushTarget.Kind.WEBPUSH else "",
                "auth": auth if kind == PushTarget.Kind.WEBPUSH else "",
                "created_at": timezone.now(),
            },
        )
    return RegisteredTarget(target=target, secret=secret or None)


def push_target_delete(*, device: Device) -> None:
    with transaction.atomic(durable=True):
        deleted, _ = PushTarget.objects.filter(device=device).delete()
    if not deleted:
        raise PushTargetNotFoundError()


def conversation_mute(*, device: Device, conversation_id: uuid.UUID) -> None:
    """Stop waking this device for the conversation (idempotent). Members only (else 404)."""
    access_conversation(user=device.user, conversation_id=conversation_id)
    with transaction.atomic(durable=True):
        ConversationMute.objects.get_or_create(device=device, conversation_id=conversation_id)


def conversation_unmute(*, device: Device, conversation_id: uuid.UUID) -> None:
    access_conversation(user=device.user, conversation_id=conversation_id)
    with transaction.atomic(durable=True):
        ConversationMute.objects.filter(device=device, conversation_id=conversation_id).delete()


# --- the send path's hook -------------------------------------------------------------------------


def messages_notify_on_commit(messages: Sequence[Message]) -> None:
    """Called by the send path inside its transaction with the batch's new messages, only when
    some device has a push target (the send path learns that in its conversation lock query):
    registers one after-commit callback that merges the batch into this process's window buffer
    (microseconds); the buffer hands all batches of the last E2EE_NOTIFY_FLUSH_MS to one
    fan-out task."""
    if not messages:
        return
    windows: dict[uuid.UUID, tuple[int, set[uuid.UUID]]] = {}
    for message in messages:
        top, senders = windows.get(message.conversation_id, (0, set()))
        senders.add(message.sender_device_id)
        windows[message.conversation_id] = (max(top, message.seq), senders)
    transaction.on_commit(partial(window_buffer.add, windows))


class _WindowBuffer:
    """Committed windows of this process, merged per conversation (highest seq, union of senders)
    and handed to Celery as one fan-out task per flush interval by a daemon thread: a broker
    round trip costs about a millisecond, many times what the send batch's own hook costs.

    Without a broker (eager Celery, the embedded default) the same thread runs the fan-out and the
    deliveries itself, so a slow or dead receiver never holds up a send. A process that dies
    loses at most one interval of wake-ups (never a message: the log is the truth and devices
    catch up when they connect).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, tuple[int, set[uuid.UUID]]] = {}
        self._signal = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, windows: dict[uuid.UUID, tuple[int, set[uuid.UUID]]]) -> None:
        with self._lock:
            for key, (top, senders) in windows.items():
                known_top, known_senders = self._pending.get(key, (0, set()))
                self._pending[key] = (max(top, known_top), known_senders | senders)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notify-window-flush", daemon=True)
                self._thread.start()
        self._signal.set()

    def flush(self) -> None:
        """Hand everything buffered to one fan-out task now (eager: run it, in this thread)."""
        with self._lock:
            taken, self._pending = self._pending, {}
            self._signal.clear()
        if taken:
            _enqueue("notifications.fan_out", (_payload(taken),), 0.0)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            self._signal.wait()
            time.sleep(settings.E2EE_NOTIFY_FLUSH_MS / 1000)  # let the interval's batches gather
            if self._thread is not me:  # retired (tests): the next add starts a fresh thread
                return
            try:
                self.flush()
            finally:
                if current_app.conf.task_always_eager:
                    connections.close_all()  # this thread's own; an idle thread holds none


def _payload(windows: dict[uuid.UUID, tuple[int, set[uuid.UUID]]]) -> list[NotifyWindow]:
    return [(key.hex, top, sorted(sender.hex for sender in senders)) for key, (top, senders) in windows.items()]


window_buffer = _WindowBuffer()


def _enqueue(task_name: str, args: tuple[Any, ...], countdown: float) -> None:
    """Hand a task to Celery (after commit). A broker outage loses a wake-up, never a message: the
    message log is the truth, and the device catches up when it next connects."""
    from notifications import tasks  # the tasks module imports this one

    task = {
        "notifications.fan_out": tasks.notifications_fan_out,
        "notifications.deliver": tasks.notification_deliver,
    }[task_name]
    try:
        task.apply_async(args, countdown=countdown or None)
    except Exception:
        logger.exception("notification enqueue failed", extra={"fields": {"task": task_name}})


# --- fan-out and delivery (called by notifications/tasks.py) -------------------------------------


def notifications_open(*, windows: Sequence[NotifyWindow]) -> list[uuid.UUID]:
    """Open a notification for every recipient device of these windows that is not connected
    and has none waiting; its delivery is scheduled after the coalescing delay. Returns the
    ids opened (the others joined a waiting one, or are connected)."""
    recipients: dict[uuid.UUID, int] = {}
    for conversation_hex, _, sender_hexes in windows:
        senders = {uuid.UUID(hex=h) for h in sender_hexes}
        for user_id, device_id in notification_recipients(
            conversation_id=uuid.UUID(hex=conversation_hex), senders=senders
        ):
            recipients[device_id] = user_id
    if not recipients:
        return []
    connected = devices_connected((user_id, device_id) for device_id, user_id in recipients.items())
    candidates = set(recipients) - connected
    if not candidates:
        return []
    with transaction.atomic(durable=True):
        waiting = notifications_open_for(device_ids=candidates)
        # lease_until of a waiting notification is when its next attempt is due: the sweep
        # (notifications_requeue_stalled) hands it out again soon after if its task was lost.
        # Eager (no broker) delivers at once, without the coalescing delay: due now.
        due = (
            None
            if current_app.conf.task_always_eager
            else timezone.now() + timedelta(seconds=settings.E2EE_NOTIFY_COALESCE_S)
        )
        fresh = [Notification(device_id=device_id, lease_until=due) for device_id in sorted(candidates - waiting)]
        # A concurrent fan-out may open one for the same device first: the partial unique
        # constraint (one pending per device) turns ours into a no-op.
        Notification.objects.bulk_create(fresh, ignore_conflicts=True)
        opened = list(
            Notification.objects.filter(pk__in=[n.pk for n in fresh]).order_by("pk").values_list("pk", flat=True)
        )
        for notification_id in opened:
            transaction.on_commit(
                partial(_enqueue, "notifications.deliver", (str(notification_id),), settings.E2EE_NOTIFY_COALESCE_S)
            )
    return opened


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a delivery attempt: send `wake` to `target`, wait `busy_for`
    seconds (another worker holds it, or its next attempt is not due yet), or nothing to do
    (both None)."""

    target: PushTarget | None = None
    wake: Wake | None = None
    attempt: int = 0
    busy_for: float | None = None


def _finish(notification: Notification, status: str, *, now: datetime) -> None:
    notification.status = status
    notification.finished_at = now
    notification.lease_until = None
    notification.save(update_fields=["status", "finished_at", "lease_until"])


def notification_claim(*, notification_id: uuid.UUID) -> Claim:
    """Reserve the next attempt of a notification for this worker, or say why not.

    Idempotent: a redelivered task finds the notification sent (nothing to do), leased by the
    worker still sending it, or not due yet (wait). At fire time a device that is connected, has
    acknowledged everything, lost its target or is no longer active is skipped.
    """
    now = timezone.now()
    notification = Notification.objects.filter(pk=notification_id).values("device_id", "device__user_id").first()
    if notification is None:
        return Claim()
    device_id = notification["device_id"]
    online = device_id in devices_connected([(notification["device__user_id"], device_id)])
    with transaction.atomic(durable=True):
        row = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if row is None or row.status in (
            Notification.Status.SENT,
            Notification.Status.SKIPPED,
            Notification.Status.DEAD,
        ):
            return Claim()
        if row.lease_until is not None:
            # SENDING: another worker's lease; PENDING or RETRYING: when the attempt is due. A
            # task that comes early (a copy handed out again by the sweep or the broker) waits.
            wait = (row.lease_until - now).total_seconds()
            if wait > (0 if row.status == Notification.Status.SENDING else _DUE_SLACK_S):
                return Claim(busy_for=wait)
        target = PushTarget.objects.filter(device_id=device_id).first()
        if (
            target is None
            or online
            or not Device.objects.filter(pk=device_id, status=Device.Status.ACTIVE).exists()
            or not device_has_undelivered(device_id=device_id)
        ):
            _finish(row, Notification.Status.SKIPPED, now=now)
            return Claim()
        row.status = Notification.Status.SENDING
        row.attempts += 1
        row.backend = target.kind
        row.lease_until = now + timedelta(seconds=settings.E2EE_NOTIFY_HTTP_TIMEOUT_S + _LEASE_MARGIN_S)
        row.save(update_fields=["status", "attempts", "backend", "lease_until"])
    wake = Wake(notification_id=row.pk, device_id=device_id, sent_at=now)
    return Claim(target=target, wake=wake, attempt=row.attempts)


def notification_delivered(*, notification_id: uuid.UUID) -> None:
    with transaction.atomic(durable=True):
        Notification.objects.filter(pk=notification_id).update(
            status=Notification.Status.SENT, finished_at=timezone.now(), lease_until=None, last_error=""
        )


def notification_failed(*, notification_id: uuid.UUID, error: str, retry_in: float | None) -> None:
    """Record a failed attempt: the notification waits `retry_in` seconds for its retry, or
    (None: final) becomes dead and gets its dead letter (one per notification, refreshed if a
    replay fails again)."""
    now = timezone.now()
    error = error[:_ERROR_CHARS]
    with transaction.atomic(durable=True):
        row = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if row is None:
            return
        row.last_error = error
        row.lease_until = None
        if retry_in is not None:
            row.status = Notification.Status.RETRYING
            row.lease_until = now + timedelta(seconds=retry_in)  # due then; the sweep's cue if lost
            row.save(update_fields=["status", "last_error", "lease_until"])
            return
        row.status = Notification.Status.DEAD
        row.finished_at = now
        row.save(update_fields=["status", "last_error", "lease_until", "finished_at"])
        DeadLetter.objects.update_or_create(
            notification=row,
            defaults={
                "device_id": row.device_id,
                "backend": row.backend,
                "attempts": row.attempts,
                "last_error": error,
                "created_at": now,
                "replayed_at": None,
            },
        )


def dead_letter_replay(*, dead_letter: DeadLetter) -> bool:
    """Put a dead notification back in the queue under the same id (receivers dedupe on it),
    with a fresh set of attempts. False if it is no longer dead (already replayed)."""
    with transaction.atomic(durable=True):
        updated = Notification.objects.filter(pk=dead_letter.notification_id, status=Notification.Status.DEAD).update(
            status=Notification.Status.RETRYING, attempts=0, finished_at=None, lease_until=None
        )
        if not updated:
            return False
        DeadLetter.objects.filter(pk=dead_letter.pk).update(replayed_at=timezone.now(), replays=dead_letter.replays + 1)
        transaction.on_commit(partial(_enqueue, "notifications.deliver", (str(dead_letter.notification_id),), 0.0))
    return True


def notifications_prune(*, now: datetime | None = None) -> int:
    """Delete finished (sent or skipped) notifications older than E2EE_NOTIFY_KEEP_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.E2EE_NOTIFY_KEEP_DAYS)
    with transaction.atomic(durable=True):
        deleted, _ = Notification.objects.filter(
            status__in=[Notification.Status.SENT, Notification.Status.SKIPPED], created_at__lt=cutoff
        ).delete()
    return deleted


def notifications_requeue_stalled(*, now: datetime | None = None) -> int:
    """Re-enqueue notifications whose task was lost (a worker killed while holding it, a broker
    restart, an enqueue failure): pending or retrying more than E2EE_NOTIFY_STALL_GRACE_S past
    their due time, or sending past their lease. Run by beat every E2EE_NOTIFY_SWEEP_S.

    Each one handed out gets its due time set to now, so a notification whose task is merely
    late (a worker backlog) gets at most one extra task per grace period; the claim makes any
    copy harmless. Before this, lost tasks waited for a sweep that only looked at notifications
    older than the longest backoff (362 s by default, issue 13 F3).
    """
    now = now or timezone.now()
    overdue = now - timedelta(seconds=settings.E2EE_NOTIFY_STALL_GRACE_S)
    waiting = Q(status__in=[Notification.Status.PENDING, Notification.Status.RETRYING]) & (
        Q(lease_until__lt=overdue) | Q(lease_until__isnull=True, created_at__lt=overdue)
    )
    lost_lease = Q(status=Notification.Status.SENDING, lease_until__lt=now)
    with transaction.atomic(durable=True):
        # SKIP LOCKED: a row being claimed right now is not stalled.
        ids = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(waiting | lost_lease)
            .order_by("lease_until")
            .values_list("pk", flat=True)[:_REQUEUE_BATCH]
        )
        # A lost lease becomes a retry due now: the claim then hands it to the next task.
        Notification.objects.filter(pk__in=ids, status=Notification.Status.SENDING).update(
            status=Notification.Status.RETRYING
        )
        Notification.objects.filter(pk__in=ids).update(lease_until=now)
        for notification_id in ids:
            transaction.on_commit(partial(_enqueue, "notifications.deliver", (str(notification_id),), 0.0))
    return len(ids)
