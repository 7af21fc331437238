"""`manage.py prune_orphan_media [--dry-run] [--older-than SECONDS]`: the periodic task, by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from media.services import media_orphans_prune


class Command(BaseCommand):
    help = (
        "Delete media blobs that no message references and that are older than --older-than "
        "(default E2EE_MEDIA_ORPHAN_AGE_S), database row and stored object. Same service as the "
        "Celery task media.tasks.prune_orphan_media."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help="minimum age in seconds (default: E2EE_MEDIA_ORPHAN_AGE_S, one day)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["older_than"]
        if seconds is None:
            seconds = int(settings.E2EE_MEDIA_ORPHAN_AGE_S)
        if seconds < 0:
            raise CommandError("--older-than must be >= 0")
        pruned = media_orphans_prune(older_than=timedelta(seconds=seconds), dry_run=options["dry_run"])
        verb = "would remove" if options["dry_run"] else "removed"
        for blob in pruned:
            self.stdout.write(
                f"{verb} blob {blob.id} ({blob.length} bytes, {blob.state}, user {blob.uploader_id}, "
                f"created {blob.created_at.isoformat()})"
            )
        total = sum(b.length for b in pruned)
        self.stdout.write(f"{verb} {len(pruned)} blob(s), {total} bytes")
