"""The crypto core stays pure: no network, files or clock, and no imports outside its allowance."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import client.crypto

CRYPTO_DIR = Path(client.crypto.__file__).parent
# Standard-library modules that would let the core do I/O or read the clock.
FORBIDDEN_STDLIB = {
    "socket",
    "ssl",
    "http",
    "urllib",
    "asyncio",
    "select",
    "selectors",
    "subprocess",
    "io",
    "pathlib",
    "tempfile",
    "shutil",
    "glob",
    "time",
    "datetime",
    "random",
    "secrets",
    "threading",
    "multiprocessing",
    "logging",
    "sqlite3",
    "pickle",
}
FORBIDDEN_CALLS = {"open", "print", "input", "eval", "exec", "__import__"}


def _modules() -> list[Path]:
    files = sorted(CRYPTO_DIR.glob("*.py"))
    assert len(files) >= 10
    return files


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "use absolute imports"
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_imports_only_stdlib_cryptography_and_client_crypto(path: Path) -> None:
    for name in _imports(ast.parse(path.read_text())):
        top = name.split(".")[0]
        if top == "client":
            assert name == "client.crypto" or name.startswith("client.crypto."), name
        elif top != "cryptography":
            assert top in sys.stdlib_module_names, f"{path.name} imports {name}"
            assert top not in FORBIDDEN_STDLIB, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_calls_no_io_builtins(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"
