"""Accounts: a user with the public half of its account identity key."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models

# \A and \Z, not ^ and $: "$" also matches before a trailing newline.
USERNAME_PATTERN = r"\A[a-z0-9_]{3,32}\Z"
username_validator = RegexValidator(USERNAME_PATTERN, "3 to 32 characters of a-z, 0-9 and _.")


class User(AbstractUser):
    username = models.CharField(max_length=32, unique=True, validators=[username_validator])
    # Ed25519 public key (32 bytes) that vouches for the account's devices (protocol.md 2.1).
    # Empty only for accounts made outside the API (e.g. createsuperuser for the admin).
    identity_key = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return self.username
