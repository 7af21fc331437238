"""The architecture's boundaries, checked on the source: the server has no cryptography and never
imports the client; the client imports nothing of the server; only `client/transport` talks to the
network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_PACKAGES = ["config", "common", "accounts", "devices", "conversations", "messaging", "media", "notifications"]
SERVER_ONLY = set(SERVER_PACKAGES) | {"django", "rest_framework", "channels", "channels_redis", "daphne", "celery"}
NETWORK = {"httpx", "websockets", "socket", "urllib", "http", "requests", "aiohttp"}


def _sources(*packages: str) -> list[Path]:
    files = [p for package in packages for p in sorted((ROOT / package).rglob("*.py")) if "migrations" not in p.parts]
    assert files, packages
    return files


def _imported_tops(path: Path) -> set[str]:
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("path", _sources(*SERVER_PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_server_code_has_no_cryptography_and_no_client(path: Path) -> None:
    tops = _imported_tops(path)
    assert "cryptography" not in tops
    assert "client" not in tops


@pytest.mark.parametrize("path", _sources("client"), ids=lambda p: str(p.relative_to(ROOT)))
def test_client_code_imports_nothing_of_the_server(path: Path) -> None:
    assert not (_imported_tops(path) & SERVER_ONLY)


@pytest.mark.parametrize("path", _sources("client"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_transport_touches_the_network(path: Path) -> None:
    if "transport" in path.relative_to(ROOT).parts:
        return
    assert not (_imported_tops(path) & NETWORK)
