from __future__ import annotations

from typing import Any

from accounts.models import username_validator
from common.fields import StrictCharField


class UsernameField(StrictCharField):
    """A username exactly as given: 3 to 32 of a-z, 0-9 and _ (no trimming, no case folding)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("validators", [username_validator])
        super().__init__(**kwargs)
