"""The root filesystem recipe: a flat list of verb-named steps over a directory tree.

The lab machines boot this tree (read-only, under a per-machine overlay) and the OS image is
made from it, so what the lab tests is what the image ships.
"""

from __future__ import annotations

import glob
import shutil
import sys
from pathlib import Path

from flotilla.process import run
from flotilla.resources import data_path
from flotilla.steps import step

from .cache import cached_tree, default_cache_root, hash_inputs, tree_files
from .package_progress import installed_note
from .spec import DEFAULT_SPEC, RootfsSpec, load_spec

ROOTFS_FILES = Path(__file__).with_name("rootfs-files")
UNITS = data_path("units")
# Where fleetd's Python dependencies live inside the tree, and where its source appears.
PYTHON_LIB = "usr/lib/flotilla/python"
SOURCE_MOUNTPOINT = "usr/lib/flotilla/src"
# Wheels matching the tree's CPython 3.11 on glibc 2.36 (Debian 12).
WHEEL_PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 37)]


def default_rootfs_cache() -> Path:
    return default_cache_root() / "rootfs"


def rootfs_key(spec: RootfsSpec) -> str:
    """Hash of everything that shapes the tree: the manifest, the files copied in, this recipe."""
    # Only the unit files install_units copies: templates, examples and docs under units/ are
    # not in the tree, so editing them must not force a rebuild.
    units = [(f"units/{path.name}", path) for path in installed_units()]
    files = [*tree_files(ROOTFS_FILES), *units, ("recipe", Path(__file__))]
    return hash_inputs(spec.as_dict(), files)


def build_rootfs(spec_path: Path = DEFAULT_SPEC, cache_root: Path | None = None) -> Path:
    """Return the cached tree for this manifest, building it first if needed."""
    spec = load_spec(spec_path)
    return cached_tree(
        cache_root or default_rootfs_cache(), rootfs_key(spec), lambda d: build(spec, d)
    )


def build(spec: RootfsSpec, root: Path) -> None:
    bootstrap_packages(spec, root)
    install_python_packages(spec, root)
    remove_excluded_paths(spec, root)
    copy_files(root)
    create_system_groups(root)
    install_units(root)
    mask_units(spec, root)
    remove_machine_identity(root)
    make_mountpoints(root)


def bootstrap_packages(spec: RootfsSpec, root: Path) -> None:
    bootstrap = f"bootstrap {spec.suite} {spec.variant} + {len(spec.packages)} packages"
    with step(bootstrap, detail=installed_note(root)):
        excludes = [f"--dpkgopt=path-exclude={pattern}" for pattern in spec.path_exclude]
        # A private mount namespace: if the build is killed, the /proc, /sys and /dev mounts
        # mmdebstrap makes inside the tree die with it instead of staying on the host.
        run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "mmdebstrap",
                "--quiet",
                f"--variant={spec.variant}",
                '--aptopt=APT::Install-Recommends "false"',
                f"--include={','.join(spec.packages)}",
                *excludes,
                spec.suite,
                root,
                *spec.sources,
            ]
        )


def install_python_packages(spec: RootfsSpec, root: Path) -> None:
    if not spec.python_packages:
        return
    with step(f"install {len(spec.python_packages)} Python packages"):
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
                "--target",
                root / PYTHON_LIB,
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                *platforms,
                *spec.python_packages,
            ]
        )


def remove_excluded_paths(spec: RootfsSpec, root: Path) -> None:
    """dpkg's path-exclude skips packaged files only; maintainer scripts still write a few
    (install-info's usr/share/info/dir, for one)."""
    with step("remove files under excluded paths"):
        remove_matching(root, spec.path_exclude)


def remove_matching(root: Path, patterns: tuple[str, ...]) -> None:
    """Remove what the shell globs (absolute, as the machine sees them) match inside root."""
    for pattern in patterns:
        # glob.glob, not Path.glob: it also finds dangling symlinks.
        for name in glob.glob(pattern.lstrip("/"), root_dir=root):
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def copy_files(root: Path) -> None:
    with step("copy Flotilla files into the tree"):
        shutil.copytree(ROOTFS_FILES, root, dirs_exist_ok=True, symlinks=True)


def installed_units() -> list[Path]:
    """The unit files under units/ that the tree carries (the rest are templates and docs)."""
    return sorted([*UNITS.glob("*.service"), *UNITS.glob("*.socket")])


def install_units(root: Path) -> None:
    """Copy the units, and link each [Install] Alias= to its unit, so an alias works before
    the unit is enabled (`systemctl start fleet.service`, as on CoreOS)."""
    with step("install Flotilla's unit files"):
        unit_dir = root / "usr/lib/systemd/system"
        for path in installed_units():
            shutil.copy2(path, unit_dir / path.name)
            for line in path.read_text().splitlines():
                if line.startswith("Alias="):
                    for alias in line.removeprefix("Alias=").split():
                        (unit_dir / alias).unlink(missing_ok=True)
                        (unit_dir / alias).symlink_to(path.name)


def create_system_groups(root: Path) -> None:
    """The groups of the tree's sysusers.d files (the fleet group, for the API socket), now:
    the image adds its users to them at build time, and a socket unit needs its group at boot."""
    with step("create system users and groups"):
        run(["systemd-sysusers", f"--root={root}"])


def mask_units(spec: RootfsSpec, root: Path) -> None:
    with step(f"mask {len(spec.masked_units)} units"):
        unit_dir = root / "etc/systemd/system"
        for unit in spec.masked_units:
            link = unit_dir / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")


def remove_machine_identity(root: Path) -> None:
    """Each machine makes its own machine-id and SSH host keys; the shared tree carries none."""
    with step("remove machine identity"):
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (root / "etc/machine-id").write_text("")
        (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def make_mountpoints(root: Path) -> None:
    with step("make mount points"):
        (root / SOURCE_MOUNTPOINT).mkdir(parents=True, exist_ok=True)
