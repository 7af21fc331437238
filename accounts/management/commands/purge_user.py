"""`manage.py purge_user USERNAME --yes`: erase a person's data on request."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from accounts.selectors import PurgeCounts, user_purge_plan
from accounts.services import user_purge


def _describe(counts: PurgeCounts) -> str:
    return ", ".join(f"{name.replace('_', ' ')}: {n}" for name, n in asdict(counts).items())


class Command(BaseCommand):
    help = (
        "Purge an account on its owner's request: revoke its devices and delete their tokens, "
        "remove it from every conversation, erase the content of every message it sent (the rows "
        "stay, as tombstones, so sequence numbers stay gap-free for the other members), delete "
        "the ChatKeys wrapped for its devices, and anonymise the account (renamed purged_<id>, "
        "identity key, password, names and e-mail erased). See docs/operations.md. Without --yes "
        "it only shows what it would do."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--dry-run", action="store_true", help="show what would be erased (the default)")
        parser.add_argument("--yes", action="store_true", help="really purge; cannot be undone")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        plan = user_purge_plan(user=user)
        if options["dry_run"] or not options["yes"]:
            self.stdout.write(f"would purge {user.username} ({_describe(plan)})")
            if not options["dry_run"]:
                self.stdout.write("nothing done: add --yes to purge")
            return
        username = user.username
        done = user_purge(user=user)
        self.stdout.write(f"purged {username}, now {user.username} ({_describe(done)})")
