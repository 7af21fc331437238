from __future__ import annotations

import os
import uuid

from factory.declarations import LazyAttribute, LazyFunction, Sequence, SubFactory
from factory.django import DjangoModelFactory

from devices.models import Device
from tests.accounts.factories import UserFactory


class DeviceFactory(DjangoModelFactory[Device]):
    """An active device by default; random bytes stand in for keys (the server never checks)."""

    class Meta:
        model = Device

    id = LazyFunction(uuid.uuid4)
    user = SubFactory(UserFactory)
    name = Sequence(lambda n: f"device{n}")
    x25519_public_key = LazyFunction(lambda: os.urandom(32))
    ed25519_public_key = LazyFunction(lambda: os.urandom(32))
    status = Device.Status.ACTIVE
    vouch_signature = LazyAttribute(lambda o: None if o.status == Device.Status.PENDING else os.urandom(64))
