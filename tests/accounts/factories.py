from __future__ import annotations

import os

import factory
from factory.django import DjangoModelFactory

from accounts.models import User

PASSWORD = "correct horse battery staple 9"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    identity_key = factory.LazyFunction(lambda: os.urandom(32))
    password = factory.django.Password(PASSWORD)
