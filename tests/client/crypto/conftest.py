"""Fixtures for the crypto tests: the external test vectors and deterministic randomness.

The vectors are vendored in tests/vectors (see its README for sources and licences), so a clone of
the repository alone runs them; E2EE_VECTORS_DIR points elsewhere to check another copy. A missing
directory is an error, not a skip: silently skipping the known-answer tests would let a broken
crypto core pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _repo_root() -> Path:
    for directory in Path(__file__).resolve().parents:
        if (directory / "pytest.ini").is_file():
            return directory
    raise RuntimeError("no pytest.ini above the tests: cannot locate the repository root")


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    path = Path(os.environ.get("E2EE_VECTORS_DIR") or _repo_root() / "tests" / "vectors")
    if not path.is_dir():
        pytest.fail(f"test vectors not found at {path}; set E2EE_VECTORS_DIR", pytrace=False)
    return path


@pytest.fixture(scope="session")
def wycheproof(vectors_dir: Path) -> Callable[[str], dict[str, Any]]:
    """Load `wycheproof/<name>.json`, checking that the file holds as many tests as it claims."""

    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((vectors_dir / "wycheproof" / f"{name}.json").read_text())
        found = sum(len(group["tests"]) for group in data["testGroups"])
        assert found == data["numberOfTests"], f"{name}: {found} tests, header says {data['numberOfTests']}"
        return data

    return load


def counter_rng(seed: str) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom: SHA-256 in counter mode over a seed."""
    state = {"counter": 0}

    def rng(size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}/{state['counter']}".encode()).digest()
            state["counter"] += 1
        return out[:size]

    return rng


@pytest.fixture
def make_rng() -> Callable[[str], Callable[[int], bytes]]:
    return counter_rng
