"""The production settings with one change for provisioning thousands of benchmark devices fast.

Registration and log-in hash the password (PBKDF2, ~0.5 s of CPU each by design): provisioning
5,000 devices would take most of an hour and says nothing about realtime delivery. The benchmark's
server processes run with this module, identical to `config.settings` except the password hasher.
Nothing measured (WebSocket frames, sends, pushes, acknowledgements) hashes a password.
"""

from __future__ import annotations

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
