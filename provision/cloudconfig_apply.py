"""Applying a planned cloud-config: the machine snapshot the plan is made against, and a thin
executor for the plan (see cloudconfig_plan.py).

`execute` performs the actions one by one: files atomically (a temporary file in the same
directory, renamed over the target), commands through `flotilla.process.run`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from flotilla.process import run

from .cloudconfig_plan import Action, Machine, MakeDirectory, PutFile

log = logging.getLogger(__name__)


def read_machine(root: Path = Path("/")) -> Machine:
    """The snapshot of the machine (or the tree at `root`) that the plan is made against."""
    homes = {fields[0]: fields[5] for fields in read_database(root / "etc/passwd", 7)}
    groups = frozenset(fields[0] for fields in read_database(root / "etc/group", 4))
    hostname_file = root / "etc/hostname"
    if root == Path("/") or not hostname_file.exists():
        hostname = os.uname().nodename  # the live name, which may differ from /etc/hostname
    else:
        hostname = hostname_file.read_text().strip()
    return Machine(hostname, homes, groups)


def read_database(path: Path, width: int) -> list[list[str]]:
    """The entries of /etc/passwd or /etc/group (colon-separated, `width` fields each)."""
    if not path.exists():
        return []
    entries = (line.split(":") for line in path.read_text().splitlines())
    return [fields for fields in entries if len(fields) == width]


def execute(
    actions: Sequence[Action],
    root: Path = Path("/"),
    runner: Callable[..., object] = run,
) -> None:
    """Perform the plan in order; files go under `root`, commands run on this machine."""
    for action in actions:
        log.info("%s", action)
        if isinstance(action, PutFile):
            put_file(root, action)
        elif isinstance(action, MakeDirectory):
            make_directory(root, action)
        else:
            runner(list(action.argv), input=action.input)


def under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def put_file(root: Path, action: PutFile) -> None:
    target = under(root, action.path)
    make_parents(target.parent)
    uid, gid = resolve_owner(root, action.owner)
    # Readers see the old file or the new one, never a part: write beside it, then rename.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(action.content)
            out.flush()
            os.fchmod(out.fileno(), action.mode)
            os.fchown(out.fileno(), uid, gid)
            os.fsync(out.fileno())
        os.rename(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def make_directory(root: Path, action: MakeDirectory) -> None:
    target = under(root, action.path)
    make_parents(target.parent)
    target.mkdir(exist_ok=True)
    os.chmod(target, action.mode)
    os.chown(target, *resolve_owner(root, action.owner))


def make_parents(directory: Path) -> None:
    # coreos-cloudinit makes missing parents 0755, whatever the umask.
    missing = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    for parent in reversed(missing):
        parent.mkdir()
        os.chmod(parent, 0o755)


def resolve_owner(root: Path, owner: str | None) -> tuple[int, int]:
    """uid and gid for chown(2); -1 leaves one as it is. Read now: users may be new."""
    if not owner:
        return -1, -1
    user, colon, group = owner.partition(":")
    accounts = {fields[0]: fields for fields in read_database(root / "etc/passwd", 7)}
    groups = {fields[0]: fields for fields in read_database(root / "etc/group", 4)}
    uid = int(user) if user.isdigit() else int(accounts[user][2]) if user else -1
    if group:
        gid = int(group) if group.isdigit() else int(groups[group][2])
    elif colon and user:  # "user:": the user's login group, as chown(1) does
        gid = int(accounts[user][3]) if user in accounts else -1
    else:
        gid = -1
    return uid, gid
