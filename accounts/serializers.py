from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension

from accounts.models import username_validator
from common.fields import StrictCharField


class UsernameField(StrictCharField):
    """A username exactly as given: 3 to 32 of a-z, 0-9 and _ (no trimming, no case folding)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("validators", [username_validator])
        super().__init__(**kwargs)


class NewPasswordField(StrictCharField):
    """A password being set. Checked by Django's password validators in the service (400
    password_invalid with their messages), not here: the schema states what they check."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


class NewPasswordFieldExtension(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    """What Django's validators check that a schema can say: at least 8 characters, not only
    digits (and no NUL). A common password or one too like the username is refused too (400
    password_invalid), which no schema can say."""

    target_class = "accounts.serializers.NewPasswordField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": 8,
            "pattern": "^[^\\u0000]*[^\\u00000-9][^\\u0000]*$",
            "description": "At least 8 characters, not all digits, not a common password, not like the username.",
        }
