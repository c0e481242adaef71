"""Running a command inside an image tree (the only place that enters one).

The command runs chrooted in a private mount namespace with its own /proc, /sys, /dev and /tmp:
when it ends (or is killed) those mounts vanish with the namespace, so a failed build never
leaves a mount behind on the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from flotilla.process import run

ENTER = """
root=$1; shift
mount --bind "$root" "$root"  # a mount point at /: tools that remount / (podman's untar) need one
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
exec chroot "$root" "$@"
"""


def run_in_tree(
    root: Path, argv: Sequence[str | Path], env: Mapping[str, str] | None = None
) -> str:
    """Run argv inside root; return its standard output."""
    result = run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", ENTER, "sh", root, *argv],
        env=env,
    )
    return result.stdout


@contextmanager
def host_resolver(root: Path) -> Iterator[None]:
    """Give the tree the host's resolv.conf while apt runs, then put the tree's own back.

    The image's /etc/resolv.conf points at systemd-resolved, which is not running in a chroot.
    """
    resolv = root / "etc/resolv.conf"
    saved = root / "etc/.resolv.conf.image"
    if resolv.exists() or resolv.is_symlink():
        resolv.rename(saved)
    resolv.write_bytes(Path("/etc/resolv.conf").read_bytes())
    try:
        yield
    finally:
        resolv.unlink()
        if saved.exists() or saved.is_symlink():
            saved.rename(resolv)
