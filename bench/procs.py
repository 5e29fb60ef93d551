"""The kqi server a bench started, as processes: `kqi_app.py serve` runs the scheduler and starts its
web workers as child processes, so what the server costs (CPU) or holds (memory) is summed over
that process tree, read from /proc."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")


def descendants(parents: Mapping[int, int], roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them, given each process's parent pid."""
    found = set(roots)
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): field 0 is the
    state, 1 the parent pid, 11 and 12 user and system CPU in clock ticks."""
    return (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()


def _is_serve(pid: int) -> bool:
    argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    return b"serve" in argv and any(arg.endswith(b"kqi_app.py") for arg in argv)


def parent_pids() -> dict[int, int]:
    """Every process's parent pid, as /proc lists them now."""
    parents = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return parents


def server_pids(owner: int | None = None) -> set[int]:
    """The `kqi_app.py serve` children of `owner` (this process by default) and every process below
    them (the web workers)."""
    owner = os.getpid() if owner is None else owner
    parents = parent_pids()
    roots = []
    for pid, parent in parents.items():
        try:
            if parent == owner and _is_serve(pid):
                roots.append(pid)
        except OSError:  # gone meanwhile
            continue
    return descendants(parents, roots)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def vm_rss_kib(status: str) -> int:
    """VmRSS from the text of /proc/PID/status, in KiB (0 without one: a kernel thread, a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    try:
        return vm_rss_kib((PROC / str(pid) / "status").read_text())
    except OSError:
        return 0


def server_cpu_s() -> float:
    """CPU seconds used so far by the server this process started, web workers included: its cost per
    request, which a busy machine disturbs far less than it does latencies."""
    return sum(cpu_s(pid) for pid in server_pids())


def server_rss_mib() -> float:
    """Resident memory of the server this process started, summed over its processes."""
    return sum(rss_kib(pid) for pid in server_pids()) / 1024


def kill_server() -> None:
    """SIGKILL the server this process started and its workers (a bench protecting a shared machine)."""
    for pid in server_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
