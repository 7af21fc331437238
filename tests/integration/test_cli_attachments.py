"""`send-file` and `save` as a person uses them, against a live server (filesystem backend)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _media_in_tmp(settings: Any, tmp_path: Path) -> None:
    settings.E2EE_MEDIA_BACKEND = "filesystem"
    settings.STORAGES = {
        **settings.STORAGES,
        "media": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "server-media")},
        },
    }


def test_cli_send_file_and_save_with_progress(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    alice, bob = names("alice"), names("bob")
    laptop, bobs = tmp_path / "laptop", tmp_path / "bob"
    assert cli(laptop, "register", "--server", server_url, "--username", alice)[0] == 0
    assert cli(bobs, "register", "--server", server_url, "--username", bob)[0] == 0
    conversation = cli(laptop, "create", "--direct", bob)[1].strip()
    document = tmp_path / "plans 2027.pdf"
    content = os.urandom(3 * 65536 + 123)
    document.write_bytes(content)

    code, out, err = cli(laptop, "send-file", conversation[:8], str(document))
    assert code == 0, err
    assert "sent plans 2027.pdf" in out and "as message 1" in out
    assert "upload plans 2027.pdf" in err and "100%" in err

    code, out, _ = cli(bobs, "history", conversation)
    assert "[attachment 'plans 2027.pdf', 196731 bytes]" in out

    inbox = tmp_path / "inbox"
    code, out, err = cli(bobs, "save", conversation, "1", "--dir", str(inbox))
    assert code == 0, err
    assert (inbox / "plans 2027.pdf").read_bytes() == content
    assert "100%" in err and f"saved {inbox / 'plans 2027.pdf'}" in out
    # Saving again never overwrites.
    assert cli(bobs, "save", conversation, "1", "--dir", str(inbox), "--quiet")[0] == 0
    assert sorted(p.name for p in inbox.iterdir()) == ["plans 2027 (1).pdf", "plans 2027.pdf"]


def test_cli_save_refuses_a_text_message(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "register", "--server", server_url, "--username", names("alice"))[0] == 0
    conversation = cli(home, "create", "--group", names("alice"))[1].strip()
    cli(home, "send", conversation, "just text")
    with pytest.raises(SystemExit, match="not an attachment"):
        cli(home, "save", conversation, "1", "--dir", str(tmp_path / "x"))
