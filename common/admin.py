"""Admin building blocks. The admin is for looking, not for writing: changes go through
services (with their locks and checks), so model admins here are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyModelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def hex_preview(value: bytes | memoryview | None) -> str:
    """Public keys and signatures as short hex, for recognising them (never ciphertext)."""
    if value is None:
        return "-"
    raw = bytes(value)
    return f"{raw[:8].hex()}… ({len(raw)} bytes)" if raw else "-"
