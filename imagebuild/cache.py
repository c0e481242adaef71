"""A directory cache keyed by a hash of every input, safe against failed and interrupted builds.

A tree only ever appears under its key by an atomic rename of a finished build, so a key that
exists is always complete; partial builds live under a dot-name and are removed before the next try.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from flotilla.process import run

PARTIAL_PREFIX = ".partial-"
SYSTEM_CACHE = Path("/var/cache/flotilla")


def default_cache_root(environ: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """$FLOTILLA_CACHE if set; else /var/cache/flotilla for root (builds need root, and the
    lab and the image share one rootfs there); else $XDG_CACHE_HOME/flotilla (~/.cache)."""
    if environ.get("FLOTILLA_CACHE"):
        return Path(environ["FLOTILLA_CACHE"])
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_CACHE
    xdg = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~"), ".cache"))
    return Path(xdg).expanduser() / "flotilla"


def hash_inputs(values: object, files: Iterable[tuple[str, Path]]) -> str:
    """A short stable hash of JSON-able `values` plus the names, modes and bytes of `files`."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    for name, path in sorted(files):
        digest.update(f"\0{name}\0{path.stat().st_mode & 0o7777:o}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under root, named relative to it."""
    return [(str(p.relative_to(root)), p) for p in sorted(root.rglob("*")) if p.is_file()]


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two builds of the same cache never interleave."""
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_tree(cache_root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Return cache_root/key, calling build(partial_dir) first if no finished tree exists."""
    final = cache_root / key
    if final.is_dir():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    with locked(cache_root / ".lock"):
        if final.is_dir():  # another process finished it while we waited for the lock
            return final
        for stale in cache_root.glob(PARTIAL_PREFIX + "*"):
            remove_build_dir(stale)
        partial = cache_root / (PARTIAL_PREFIX + key)
        partial.mkdir()
        try:
            build(partial)
        except BaseException:
            remove_build_dir(partial)
            raise
        partial.rename(final)
    return final


def cached_keys(cache_root: Path) -> list[str]:
    """The finished trees in this cache."""
    if not cache_root.is_dir():
        return []
    return sorted(p.name for p in cache_root.iterdir() if p.is_dir() and p.name[0] != ".")


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or under path, deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and friends escaped as octal.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_build_dir(path: Path) -> None:
    """Remove a build tree without ever reaching through a mount into the host (/proc, /dev)."""
    for mount in mounts_below(path):
        run(["umount", "--lazy", mount])
    run(["rm", "-rf", "--one-file-system", path])
