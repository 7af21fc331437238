"""`manage.py deactivate_user USERNAME`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from accounts.services import user_deactivate
from devices.models import DeviceToken


class Command(BaseCommand):
    help = (
        "Deactivate an account: it can no longer log in, every live token of its devices is "
        "revoked and their WebSocket connections are closed. Nothing is deleted; set is_active "
        "again in the admin to let it log in again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--reason", default="operator command", help="recorded in the log line")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        if not user.is_active:
            raise CommandError(f"{user.username} is deactivated already")
        live = DeviceToken.objects.filter(device__user=user, revoked_at__isnull=True).count()
        if options["dry_run"]:
            self.stdout.write(f"would deactivate {user.username} and revoke {live} live token(s)")
            return
        revoked = user_deactivate(user=user, reason=options["reason"])
        self.stdout.write(f"deactivated {user.username}; revoked {revoked} live token(s)")
