"""The lab's cgroup2 subtrees: each machine (and etcd) is one subtree, found and killed whole."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup2_root() -> Path:
    """The cgroup2 hierarchy: /sys/fs/cgroup on unified hosts, .../unified on hybrid ones."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return CGROUP_FS
    return CGROUP_FS / "unified"


def lab_cgroup_root() -> Path:
    return cgroup2_root() / "fleetlab"


def pids(cgroup: Path) -> list[int]:
    """Every process in the subtree."""
    found: list[int] = []
    # os.walk, not Path.rglob: systemd inside a machine adds and removes cgroups as we walk.
    for directory, _, _ in os.walk(cgroup):
        try:
            found.extend(int(line) for line in Path(directory, "cgroup.procs").read_text().split())
        except OSError:  # a sub-cgroup vanished while we walked (ENOENT, or ENODEV mid-removal)
            continue
    return found


def is_populated(cgroup: Path) -> bool:
    try:
        return "populated 1" in (cgroup / "cgroup.events").read_text()
    except FileNotFoundError:
        return False


def namespace_init_pid(cgroup: Path) -> int | None:
    """The host PID of the process that is PID 1 of its own PID namespace in this subtree."""
    for pid in pids(cgroup):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                levels = line.split()[1:]
                if len(levels) > 1 and levels[-1] == "1":
                    return pid
    return None


def wait_until_empty(cgroup: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_populated(cgroup):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_all(cgroup: Path, timeout: float = 10.0) -> None:
    """SIGKILL every process in the subtree at once (cgroup.kill) and wait until they are gone."""
    if not cgroup.is_dir():
        return
    (cgroup / "cgroup.kill").write_text("1")
    if not wait_until_empty(cgroup, timeout):
        raise TimeoutError(f"processes in {cgroup} survived SIGKILL for {timeout:.0f}s")


def remove_tree(cgroup: Path) -> None:
    """rmdir the subtree bottom-up; it must be empty of processes."""
    if not cgroup.is_dir():
        return
    # Bottom-up; os.walk skips what vanishes while it walks instead of failing.
    for directory, _, _ in os.walk(cgroup, topdown=False):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)


def remove_if_empty(cgroup: Path) -> None:
    """rmdir a parent cgroup once its last child is gone (another lab may still use it)."""
    with contextlib.suppress(FileNotFoundError, OSError):
        cgroup.rmdir()


def unreaped_pids(cgroup: Path) -> list[int]:
    """Dead processes of a removed subtree whose exit status nobody has collected yet."""
    marker = str(cgroup.relative_to(cgroup2_root())) + "/"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "cgroup").read_text():
                found.append(int(proc.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def wait_until_reaped(cgroup: Path, timeout: float) -> None:
    """Killed machine processes are orphans, reaped by the host's init in its own time; wait for
    that so the process table is clean when a teardown returns. Leftover zombies are harmless."""
    deadline = time.monotonic() + timeout
    while unreaped_pids(cgroup) and time.monotonic() < deadline:
        time.sleep(0.1)
