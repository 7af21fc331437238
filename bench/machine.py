"""What the numbers were measured on, and CPU time of local processes read from /proc."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# /proc/<pid>/stat counts CPU time in clock ticks (usually 100 per second).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    ram_gib: float
    python: str
    kernel: str
    commit: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)  # the value is in KiB
    except OSError:
        pass
    return 0.0


def _git_commit(repo: Path) -> str:
    # Read-only: which code was measured, and whether the working tree differed from it.
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def machine_describe(repo: Path) -> Machine:
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        ram_gib=_ram_gib(),
        python=platform.python_version(),
        kernel=platform.release(),
        commit=_git_commit(repo),
    )


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (the command name in field 2 may contain spaces)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads included."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)  # the value is in KiB
    return 0.0


def process_parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def process_command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def process_tree_cpu_seconds(parent: int) -> float:
    """CPU of `parent`, of its live children, and of its children that have exited.

    Exited children that `parent` reaped are in its cutime/cstime, so the sum stays consistent
    when children come and go between two samples (a PostgreSQL backend per connection does).
    """
    fields = _stat_fields(parent)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            child = _stat_fields(int(entry.name))
        except (OSError, ValueError):
            continue  # exited while we looked
        if int(child[1]) == parent:
            total += int(child[11]) + int(child[12])
    return total / CLOCK_TICKS
