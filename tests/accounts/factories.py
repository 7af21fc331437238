from __future__ import annotations

import os

from factory.declarations import LazyFunction, Sequence
from factory.django import DjangoModelFactory, Password

from accounts.models import User

PASSWORD = "correct horse battery staple 9"


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User

    username = Sequence(lambda n: f"user{n}")
    identity_key = LazyFunction(lambda: os.urandom(32))
    password = Password(PASSWORD)
