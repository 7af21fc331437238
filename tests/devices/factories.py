from __future__ import annotations

import os
import uuid

import factory
from factory.django import DjangoModelFactory

from devices.models import Device
from tests.accounts.factories import UserFactory


class DeviceFactory(DjangoModelFactory):
    """An active device by default; random bytes stand in for keys (the server never checks)."""

    class Meta:
        model = Device

    id = factory.LazyFunction(uuid.uuid4)
    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"device{n}")
    x25519_public_key = factory.LazyFunction(lambda: os.urandom(32))
    ed25519_public_key = factory.LazyFunction(lambda: os.urandom(32))
    status = Device.Status.ACTIVE
    vouch_signature = factory.LazyAttribute(lambda o: None if o.status == Device.Status.PENDING else os.urandom(64))
