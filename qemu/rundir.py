"""A VM's run directory, claimed safely: it lives under /var/tmp, where any local user can
create names, so a directory someone else made (or a symlink planted there) must never be
used: QEMU's pid file, sockets and disk overlays would be written or removed through it."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class RunDirError(Exception):
    """The run directory cannot be used safely; the message says why."""


def claim_run_dir(directory: Path) -> None:
    """Create the run directory and its parent as 0700 directories of this user when missing,
    then check both: each must be a real directory (no symlink), owned by this user (or, for
    the parent, a root-owned sticky directory such as /tmp), and writable by nobody else."""
    for path in (directory.parent, directory):
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # someone else's: checked below
                path.mkdir(mode=0o700)
        check_private(path)


def check_private(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise RunDirError(f"run directory {path} is a symlink; refusing to follow it")
    if not stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"run directory {path} is not a directory")
    if info.st_uid == 0 and info.st_mode & stat.S_ISVTX:
        return  # /tmp, /var/tmp: others may add names, never take ours
    if info.st_uid != os.geteuid():
        raise RunDirError(
            f"run directory {path} belongs to uid {info.st_uid}, not to you;"
            " remove it or pass another --run-dir"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RunDirError(f"run directory {path} is writable by others; refusing to use it")
