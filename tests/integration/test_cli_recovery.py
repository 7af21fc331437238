"""Recovery with the CLI: every device lost, identity reset, the contact accepts the new safety
number, keys are asked for and re-shared, history readable again (protocol.md 4.8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_cli_identity_reset_history_returns_only_after_the_contact_accepts(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    alice, bob = names("alice"), names("bob")
    lost, new, bobs = tmp_path / "lost", tmp_path / "new", tmp_path / "bob"
    assert cli(lost, "register", "--server", server_url, "--username", alice)[0] == 0
    assert cli(bobs, "register", "--server", server_url, "--username", bob)[0] == 0
    conversation = cli(lost, "create", "--direct", bob)[1].strip()
    assert cli(bobs, "send", conversation, "the code is 4711")[0] == 0
    assert cli(bobs, "safety-number", alice, "--mark-verified")[0] == 0

    code, out, _ = cli(new, "reset-identity", "--server", server_url, "--username", alice)
    assert code == 0 and "reset" in out
    code, _, err = cli(lost, "conversations")
    assert code == 1 and "invalid_token" in err  # the lost device is signed out

    # Before Bob accepts the new identity, Alice's request gets nothing.
    assert "1 key requests open" in cli(new, "request-keys")[1]
    code, out, _ = cli(bobs, "answer-keys")
    assert code == 0 and "refused" in out and "answered" not in out
    assert "missing_key" in cli(new, "history", conversation)[1]

    code, out, _ = cli(bobs, "safety-number", alice)
    assert code == 5 and "CHANGED" in out
    code, out, _ = cli(bobs, "safety-number", alice, "--accept-new")
    assert code == 0 and "accepted" in out
    code, out, _ = cli(bobs, "answer-keys")
    assert code == 0 and "answered" in out
    code, out, _ = cli(new, "history", conversation)
    assert code == 0 and "the code is 4711" in out and "UNDECRYPTABLE" not in out
