"""`manage.py stats`: users, devices, conversations, messages and storage at a glance."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.selectors import service_stats


class Command(BaseCommand):
    help = (
        "Print counts of users, devices (by status), live tokens, conversations (by kind), "
        "memberships, ChatKey epochs, wrapped keys and messages, and the total ciphertext bytes "
        "stored. Read-only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object instead of text")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = service_stats()
        if options["json"]:
            self.stdout.write(json.dumps(asdict(stats), sort_keys=True))
            return
        devices = ", ".join(f"{n} {status}" for status, n in stats.devices_by_status.items())
        kinds = ", ".join(f"{n} {kind}" for kind, n in stats.conversations_by_kind.items())
        lines = [
            f"users:            {stats.users} ({stats.users_active} active)",
            f"devices:          {sum(stats.devices_by_status.values())} ({devices})",
            f"live tokens:      {stats.live_tokens}",
            f"conversations:    {sum(stats.conversations_by_kind.values())} ({kinds})",
            f"memberships:      {stats.memberships}",
            f"chatkey epochs:   {stats.epochs} ({stats.wrapped_keys} wrapped keys)",
            f"messages:         {stats.messages}",
            f"ciphertext bytes: {stats.ciphertext_bytes}",
        ]
        self.stdout.write("\n".join(lines))
