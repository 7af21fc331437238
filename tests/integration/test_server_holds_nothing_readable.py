"""After a full scenario, no table row and no log line holds a plaintext, a ChatKey or a private key,
in raw bytes, base64 (any alignment, either alphabet) or hex."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from client.crypto.encoding import b64d
from client.session import ReceivedMessage, Session

pytestmark = pytest.mark.django_db(transaction=True)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(levelname)s %(message)s").format(record))
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def every_log_line() -> Iterator[_Capture]:
    """Capture every record of every logger, including ones that do not propagate."""
    capture = _Capture()
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    yield capture
    for lg, level in saved:
        lg.removeHandler(capture)
        lg.setLevel(level)


def _dump_every_table() -> bytes:
    chunks: list[bytes] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - introspected names
            for row in cursor.fetchall():
                for cell in row:
                    if isinstance(cell, (bytes, bytearray, memoryview)):
                        chunks.append(bytes(cell))
                    else:
                        chunks.append(str(cell).encode())
    return b"\n".join(chunks)


def _forms(secret: bytes) -> list[bytes]:
    """The secret as raw bytes, hex, and base64 at every alignment in both alphabets."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + secret)
            # Drop the characters that depend on neighbouring bytes at either end.
            start = (shift * 4 + 2) // 3 + 1
            forms.append(encoded[start : start + max(8, len(secret) * 4 // 3 - 4)])
    return forms


def test_no_table_or_log_line_reveals_plaintexts_chatkeys_or_private_keys(
    register: Callable[..., Session],
    link: Callable[[Session, str], Session],
    names: Callable[[str], str],
    every_log_line: _Capture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    alice = register(names("alice"), "laptop")
    alice_phone = link(alice, "phone")
    bob = register(names("bob"), "phone")
    direct = alice.create_conversation([bob.username], kind="direct")
    group = bob.create_conversation([alice.username], kind="group")
    plaintexts = [
        "The eagle lands at midnight behind the old mill.",
        "Bank PIN is 4711-0815, do not tell anyone else.",
        "Dinner with Margarethe postponed to Thursday evening.",
    ]
    alice.send_text(direct.conversation_id, plaintexts[0])
    bob.send_text(direct.conversation_id, plaintexts[1])
    alice_phone.send_text(group.conversation_id, plaintexts[2])
    for device in (alice, alice_phone, bob):
        for conversation in (direct, group):
            assert all(isinstance(r, ReceivedMessage) for r in device.history(conversation.conversation_id))

    secrets: dict[str, bytes] = {f"plaintext {i}": p.encode() for i, p in enumerate(plaintexts)}
    for who, device in (("alice laptop", alice), ("alice phone", alice_phone), ("bob", bob)):
        for (conversation_id, epoch), chat_key in device._chat_keys.items():
            secrets[f"{who} chatkey {conversation_id}/{epoch}"] = chat_key
        for name, value in device.secrets.device.to_private_dict().items():
            if name.endswith("private_key") or name.endswith("private"):
                secrets[f"{who} device {name}"] = b64d(value)
        if device.secrets.identity is not None:
            for name, value in device.secrets.identity.to_private_dict().items():
                if "private" in name:
                    secrets[f"{who} identity {name}"] = b64d(value)
    assert sum("chatkey" in k for k in secrets) >= 6  # both conversations on all three devices
    assert sum("private" in k for k in secrets) >= 7  # 3 devices x 2 keys + alice's identity key

    tables = _dump_every_table()
    out, err = capfd.readouterr()
    logs = "\n".join(every_log_line.lines).encode() + out.encode() + err.encode()
    # The dump really holds the scenario's binary columns: a stored ciphertext is found verbatim.
    assert bob.envelopes(direct.conversation_id)[0].ciphertext in tables
    for label, secret in secrets.items():
        for form in _forms(secret):
            assert form not in tables, f"{label} found in the database"
            assert form not in logs, f"{label} found in a log line"
