from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from accounts.models import User
from accounts.services import user_deactivate
from common.admin import hex_preview


class AccountCreationForm(UserCreationForm):  # type: ignore[type-arg]
    class Meta(UserCreationForm.Meta):
        model = User


class AccountChangeForm(UserChangeForm):  # type: ignore[type-arg]
    class Meta(UserChangeForm.Meta):
        model = User


@admin.register(User)
class AccountAdmin(UserAdmin):  # type: ignore[type-arg]
    form = AccountChangeForm
    add_form = AccountCreationForm
    list_display = ("username", "is_active", "active_devices", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("username", "email")
    readonly_fields = ("identity_key_preview",)
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Identity", {"fields": ("identity_key_preview",)}))
    actions = ["deactivate_users"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        users: QuerySet[User] = super().get_queryset(request)
        return users.annotate(active_devices_n=Count("devices", filter=Q(devices__status="active")))

    @admin.display(description="active devices", ordering="active_devices_n")
    def active_devices(self, obj: User) -> int:
        return int(obj.active_devices_n)  # type: ignore[attr-defined]

    @admin.display(description="identity key")
    def identity_key_preview(self, obj: User) -> str:
        return hex_preview(obj.identity_key)

    @admin.action(description="Deactivate the selected accounts (tokens revoked, sockets closed)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        operator = getattr(request.user, "username", "?")
        count = 0
        for user in queryset.filter(is_active=True):
            user_deactivate(user=user, reason=f"admin action by {operator}")
            count += 1
        self.message_user(request, f"Deactivated {count} account(s).", messages.SUCCESS)
