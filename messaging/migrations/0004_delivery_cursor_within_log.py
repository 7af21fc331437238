"""Cursors stored beyond their conversation's last seq (an `ack` or `read` of a seq that did not
exist was stored as is, issue 13 F2) come back to the last seq: past it, catch-up skipped every
later message and receipts claimed deliveries that never happened."""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.models import F, OuterRef, Subquery


def cursors_within_log(apps: Any, schema_editor: Any) -> None:
    cursor_model = apps.get_model("messaging", "DeliveryCursor")
    conversation_model = apps.get_model("conversations", "Conversation")
    last_seq = Subquery(conversation_model.objects.filter(pk=OuterRef("conversation_id")).values("last_seq")[:1])
    for field in ("delivered_seq", "read_seq"):
        beyond = cursor_model.objects.filter(**{f"{field}__gt": F("conversation__last_seq")})
        beyond.update(**{field: last_seq})


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0003_message_device_lists"),
        ("conversations", "0001_initial"),
    ]

    operations = [migrations.RunPython(cursors_within_log, migrations.RunPython.noop)]
