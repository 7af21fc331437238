"""Integration fixtures: real SDK devices talking HTTP to a live server on a real socket."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client.cli.main import main as cli_main
from client.session import Session
from client.transport.http import HttpTransport


@pytest.fixture
def server_url(live_server: object, transactional_db: None) -> str:
    return str(live_server.url)  # type: ignore[attr-defined]


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique usernames per test, so tests never depend on each other's accounts."""
    tag = uuid.uuid4().hex[:6]
    return lambda base: f"{base}_{tag}"


PASSWORD = "integration-password-2026!"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run one CLI command on a home folder (one machine): exit code, stdout and stderr."""
    monkeypatch.setenv("E2EE_PASSWORD", "cli-password-2026!")
    monkeypatch.setenv("E2EE_PASSPHRASE", "cli passphrase")

    def run(home: Path, *argv: str) -> tuple[int, str, str]:
        code = cli_main(["--home", str(home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@contextmanager
def _session_factory(url: str) -> Iterator[Callable[..., Session]]:
    """Register (or, with `login=True`, log in a new device of) an account at `url`; every
    transport opened is closed on leaving."""
    made: list[Session] = []

    def _make(username: str, device_name: str = "device", *, login: bool = False) -> Session:
        factory = Session.login if login else Session.register
        session = factory(
            HttpTransport(url),
            server_url=url,
            username=username,
            password=PASSWORD,
            device_name=device_name,
        )
        made.append(session)
        return session

    yield _make
    for session in made:
        session.transport.close()  # type: ignore[attr-defined]


@pytest.fixture
def register(server_url: str) -> Iterator[Callable[[str, str], Session]]:
    with _session_factory(server_url) as make:
        yield make


@pytest.fixture
def sessions(daphne_url: str) -> Iterator[Callable[..., Session]]:
    """Register (or, with `login=True`, log in a new device of) an account on the daphne server."""
    with _session_factory(daphne_url) as make:
        yield make


@pytest.fixture
def link(server_url: str) -> Callable[[Session, str], Session]:
    """Log in a second device of `existing`'s account and link it: its code approved by `existing`."""

    def _link(existing: Session, device_name: str) -> Session:
        new = Session.login(
            HttpTransport(server_url),
            server_url=server_url,
            username=existing.username,
            password=PASSWORD,
            device_name=device_name,
        )
        code = new.request_link()
        existing.approve_link(code)
        assert new.complete_link()
        return new

    return _link


def restart(session: Session) -> Session:
    """The same device after a restart: same secrets, nothing cached (no ChatKeys in memory)."""
    return Session(session.secrets, HttpTransport(session.secrets.server_url))
