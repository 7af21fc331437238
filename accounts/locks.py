"""Row locks on users: the serialisation point for changes to an account's set of active devices.

Whoever changes which devices of an account are active (`device_link_approve`, `device_revoke`) and
whoever relies on that set staying put until commit (the epoch coverage check of
`conversation_create` and `chat_key_epoch_upload`) lock the users' rows first. Lock order, to
stay free of deadlocks: users by ascending pk, then a conversation row.
On SQLite `select_for_update` is a no-op; there IMMEDIATE transactions serialise all writers.
"""

from __future__ import annotations

from collections.abc import Iterable

from accounts.models import User


def users_lock(*, user_ids: Iterable[int]) -> None:
    """Lock these users' rows until the current transaction ends (call inside one)."""
    ids = sorted(set(user_ids))
    # list() forces the query; the rows are locked in pk order.
    list(User.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
