from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm

from accounts.models import User
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
    readonly_fields = ("identity_key_preview",)
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Identity", {"fields": ("identity_key_preview",)}))

    @admin.display(description="identity key")
    def identity_key_preview(self, obj: User) -> str:
        return hex_preview(obj.identity_key)
