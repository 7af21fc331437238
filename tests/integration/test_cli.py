"""The CLI as a person uses it: two homes (two machines), register, link, talk, read."""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_cli_register_link_create_send_and_read(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    alice, bob = names("alice"), names("bob")
    laptop, phone, bobs = tmp_path / "laptop", tmp_path / "phone", tmp_path / "bob"

    assert cli(laptop, "register", "--server", server_url, "--username", alice, "--device-name", "laptop")[0] == 0
    assert stat.S_IMODE((laptop / "keystore.json").stat().st_mode) == 0o600
    assert cli(bobs, "register", "--server", server_url, "--username", bob)[0] == 0

    code, out, _ = cli(
        phone, "link", "--server", server_url, "--username", alice, "--device-name", "phone", "--wait-s", "0"
    )
    assert code == 2 and "still waiting" in out
    phone_id = out.split("this device is ")[1].split()[0]
    approve_line = next(line for line in out.splitlines() if " approve " in line)
    link_code = approve_line.split(" approve ")[1].strip()
    assert "\u2588" in out or "\u2580" in out or "\u2584" in out  # the QR code, drawn with block characters

    # The pending phone can do nothing yet.
    code, _, err = cli(phone, "conversations")
    assert code == 1 and "device_not_active" in err
    # A mistyped code is refused before anything is sent; the right one activates the phone.
    typo = ("B" if link_code[0] != "B" else "C") + link_code[1:]
    code, _, err = cli(laptop, "approve", typo)
    assert code == 3 and "link code" in err
    code, out, _ = cli(laptop, "approve", link_code)
    assert code == 0 and "is now active" in out
    code, out, _ = cli(phone, "link", "--wait-s", "5")
    assert code == 0 and "linked" in out
    code, out, _ = cli(laptop, "devices")
    assert out.count("active") == 2 and out.count(" verified") == 2
    code, out, _ = cli(phone, "device-log")
    assert code == 0 and "account created with laptop" in out and "linked phone" in out

    code, out, _ = cli(laptop, "create", "--direct", bob)
    assert code == 0
    conversation = out.strip()
    assert cli(bobs, "send", conversation[:8], "hello", "alice")[0] == 0
    assert cli(phone, "send", conversation, "hi bob, from my phone")[0] == 0

    for home in (laptop, phone, bobs):
        code, out, _ = cli(home, "history", conversation)
        assert code == 0
        assert f"{bob}/" in out and "hello alice" in out
        assert f"{alice}/" in out and "hi bob, from my phone" in out
        assert "UNDECRYPTABLE" not in out

    _, alice_sees, _ = cli(laptop, "safety-number", bob)
    _, bob_sees, _ = cli(bobs, "safety-number", alice, "--mark-verified")
    assert alice_sees.splitlines()[1] == bob_sees.splitlines()[1]
    assert "marked verified" in bob_sees

    # The laptop revokes the phone: signed out of the device list, and the log says who did it.
    code, out, _ = cli(laptop, "revoke", phone_id)
    assert code == 0 and "revoked" in out
    assert "1 conversations moved to a new epoch" in out
    code, out, _ = cli(laptop, "device-log")
    assert f"laptop ({laptop_id(out)}) revoked phone ({phone_id})" in out
    assert cli(bobs, "rotate", conversation)[0] == 0  # Bob's client sees no hidden device


def laptop_id(log: str) -> str:
    return log.split("account created with laptop (")[1].split(")")[0]


def test_cli_refuses_a_wrong_passphrase(
    cli: Callable[..., tuple[int, str, str]],
    server_url: str,
    tmp_path: Path,
    names: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "register", "--server", server_url, "--username", names("alice"))[0] == 0
    monkeypatch.setenv("E2EE_PASSPHRASE", "not the passphrase")
    code, _, err = cli(home, "whoami")
    assert code == 3 and "error" in err


def test_cli_logout_stops_the_token(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    from client import protocol
    from client.store import keystore
    from client.transport.http import HttpTransport

    home = tmp_path / "alice"
    assert cli(home, "register", "--server", server_url, "--username", names("alice"))[0] == 0
    old_token = keystore.load(home / "keystore.json", "cli passphrase")["token"]
    assert cli(home, "logout")[0] == 0
    code, _, err = cli(home, "whoami")
    assert code == 1 and "not_authenticated" in err
    with pytest.raises(protocol.ApiError) as excinfo:  # the server no longer honours the old token
        HttpTransport(server_url, token=old_token).execute(protocol.me_request())
    assert (excinfo.value.status, excinfo.value.code) == (401, "invalid_token")


def test_cli_says_when_the_server_cannot_be_reached(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli(tmp_path / "a", "register", "--server", f"http://127.0.0.1:{port}", "--username", "alice")
    assert code == 4 and "cannot reach" in err
    assert not (tmp_path / "a" / "keystore.json").exists()


def test_cli_add_remove_and_leave_members(
    cli: Callable[..., tuple[int, str, str]], server_url: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    people = {name: names(name) for name in ("alice", "bob", "carol")}
    homes = {name: tmp_path / name for name in people}
    for name, username in people.items():
        assert cli(homes[name], "register", "--server", server_url, "--username", username)[0] == 0
    code, out, _ = cli(homes["alice"], "create", "--group", people["bob"])
    conversation = out.strip()
    assert cli(homes["alice"], "send", conversation, "before carol")[0] == 0

    code, out, _ = cli(homes["alice"], "add-member", conversation, people["carol"])
    assert code == 0 and "with the history" in out
    code, out, _ = cli(homes["carol"], "history", conversation)
    assert "before carol" in out and "UNDECRYPTABLE" not in out
    code, out, _ = cli(homes["bob"], "remove-member", conversation, people["carol"])
    assert code == 0 and "now at epoch 2" in out
    code, out, _ = cli(homes["bob"], "leave", conversation)
    assert code == 0 and "you left" in out
    code, _, err = cli(homes["alice"], "add-member", conversation, people["alice"])
    assert code == 1 and "already_member" in err


def test_cli_push_target_and_mute(
    cli: Callable[..., tuple[int, str, str]],
    server_url: str,
    tmp_path: Path,
    names: Callable[[str], str],
    settings: object,
) -> None:
    from notifications.models import ConversationMute, PushTarget

    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = True  # type: ignore[attr-defined]  # the relay is on loopback here
    alice, bob = names("alice"), names("bob")
    laptop, bobs = tmp_path / "laptop", tmp_path / "bob"
    assert cli(laptop, "register", "--server", server_url, "--username", alice)[0] == 0
    assert cli(bobs, "register", "--server", server_url, "--username", bob)[0] == 0
    code, out, _ = cli(laptop, "create", "--direct", bob)
    assert code == 0
    conversation = out.strip()

    code, out, _ = cli(laptop, "push")
    assert (code, out.strip()) == (0, "no push target")
    code, out, _ = cli(laptop, "push", "--webhook", "http://127.0.0.1:9/wake/laptop")
    assert code == 0
    secret = out.split("(shown once; your relay checks X-E2EE-Signature with it): ")[1].strip()
    assert len(secret) >= 32
    (target,) = PushTarget.objects.filter(url="http://127.0.0.1:9/wake/laptop")
    assert target.kind == "webhook"
    code, out, _ = cli(laptop, "push")
    assert code == 0 and "webhook http://127.0.0.1:9/wake/laptop" in out and secret not in out

    code, out, _ = cli(laptop, "mute", conversation)
    assert code == 0 and "muted" in out
    assert ConversationMute.objects.filter(device_id=target.device_id, conversation_id=conversation).exists()
    assert cli(laptop, "mute", conversation, "--off")[0] == 0
    assert not ConversationMute.objects.filter(device_id=target.device_id).exists()

    # A refused URL is a clear error, not a traceback.
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = False  # type: ignore[attr-defined]
    code, _, err = cli(laptop, "push", "--webhook", "http://127.0.0.1:9/other")
    assert code != 0 and "push_target_url_refused" in err

    code, out, _ = cli(laptop, "push", "--off")
    assert code == 0 and "removed" in out
    assert not PushTarget.objects.filter(device_id=target.device_id).exists()
