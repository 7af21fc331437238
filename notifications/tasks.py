"""Background work of the notifications app (thin: ids in, services do the work).

Retries live here: exponential backoff with full jitter, E2EE_NOTIFY_MAX_RETRIES after the first
attempt, then a dead letter. Tasks are acknowledged late, so a worker killed mid-task leaves the
task to be redelivered; `notification_claim` makes the redelivery send nothing twice. A retry
waiting in a worker's memory (a countdown) dies with that worker and comes back from the broker
only after the visibility timeout: the database knows when each attempt is due, and the beat's
sweep (`notifications.requeue_stalled`, every E2EE_NOTIFY_SWEEP_S) hands out again within
seconds whatever is overdue.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from celery import Task, shared_task
from django.conf import settings

from notifications.backends import wake_send
from notifications.errors import DeliveryFailedError
from notifications.services import (
    NotifyWindow,
    notification_claim,
    notification_delivered,
    notification_failed,
    notifications_open,
    notifications_prune,
    notifications_requeue_stalled,
)

_LATE = {"acks_late": True, "reject_on_worker_lost": True}


def retry_delay(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(settings.E2EE_NOTIFY_RETRY_MAX_S, settings.E2EE_NOTIFY_RETRY_BASE_S * 2 ** max(attempt - 1, 0))
    return random.uniform(0, ceiling)


@shared_task(name="notifications.fan_out", **_LATE)  # type: ignore[untyped-decorator]  # celery is untyped
def notifications_fan_out(windows: list[NotifyWindow]) -> None:
    notifications_open(windows=[(str(c), int(s), [str(d) for d in senders]) for c, s, senders in windows])


@shared_task(bind=True, name="notifications.deliver", max_retries=None, **_LATE)  # type: ignore[untyped-decorator]  # celery is untyped
def notification_deliver(self: Task[Any, Any], notification_id: str) -> None:
    while True:
        delay = _attempt(uuid.UUID(notification_id), eager=bool(self.request.is_eager))
        if delay is None:
            return
        if not self.request.is_eager:
            raise self.retry(countdown=abs(delay))
        # Eager (the embedded default, no broker): nothing can schedule a later try, so the
        # retries run at once, in the sending process; a lease held elsewhere cannot happen.
        if delay < 0:
            return


def _attempt(pk: uuid.UUID, *, eager: bool) -> float | None:
    """One delivery attempt: None when finished (sent, skipped, dead), else the delay before
    the next look (negative: only waiting for another worker's lease or the due time)."""
    claim = notification_claim(notification_id=pk)
    if claim.busy_for is not None:
        # Another worker holds the attempt (a redelivered copy of this task): look again after
        # its lease, in case that worker died.
        return -(claim.busy_for + 1)
    if claim.target is None or claim.wake is None:
        return None
    try:
        wake_send(target=claim.target, wake=claim.wake)
    except DeliveryFailedError as exc:
        if exc.permanent or claim.attempt > settings.E2EE_NOTIFY_MAX_RETRIES:
            notification_failed(notification_id=pk, error=str(exc), retry_in=None)
            return None
        # Eager retries run back to back (see notification_deliver): due at once.
        delay = 0.0 if eager else retry_delay(claim.attempt)
        notification_failed(notification_id=pk, error=str(exc), retry_in=delay)
        return delay
    notification_delivered(notification_id=pk)
    return None


@shared_task(name="notifications.prune")  # type: ignore[untyped-decorator]  # celery is untyped
def notifications_prune_task() -> int:
    return notifications_prune()


@shared_task(name="notifications.requeue_stalled")  # type: ignore[untyped-decorator]  # celery is untyped
def notifications_requeue_stalled_task() -> int:
    return notifications_requeue_stalled()
