"""The image tree: the shared rootfs plus a kernel, a container runtime and the boot chain,
then stripped. A flat recipe of verb-named steps; the finished tree is cached by its inputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from flotilla.process import CommandError, run
from flotilla.resources import MACHINE_PACKAGES, MissingResource, data_path, package_dir
from flotilla.steps import step

from .cache import hash_inputs, tree_files
from .chroot import host_resolver, run_in_tree
from .image_spec import ImageSpec
from .kmodules import modules_to_keep, parse_modules_dep, unmatched_patterns
from .package_progress import installed_note
from .rootfs import PYTHON_LIB, SOURCE_MOUNTPOINT, remove_matching

IMAGE_FILES = Path(__file__).with_name("image-files")
# A wheel cannot carry a symlink, so the image's links are made here rather than kept in
# image-files (an installed imagebuild would otherwise copy a file where the image needs a link).
DEFAULT_TARGET = "multi-user.target"
PACKAGE_LIST = "usr/share/flotilla/packages.txt"
# The read-only image store podman lists beside its own (etc/containers/storage.conf).
CONTAINER_STORE = "usr/lib/containers/storage"
CONTAINER_IMAGE_LIST = "usr/share/flotilla/container-images.txt"
BAKE_DIR = "var/tmp/flotilla-bake"
APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "INITRD": "No",
}  # INITRD=No: dracut runs once, below


class ImageError(RuntimeError):
    """The image cannot be built as asked; the message says why and where."""


def machine_sources() -> dict[str, Path]:
    """Each package the machines run, from wherever this imagebuild imports it: the checkout,
    or site-packages after `pip install`."""
    found = {package: package_dir(package) for package in MACHINE_PACKAGES}
    missing = [package for package, path in found.items() if path is None]
    if missing:
        raise ImageError(f"cannot find the package(s) {', '.join(missing)} to copy into the image")
    return {package: path for package, path in found.items() if path is not None}


def tree_key(spec: ImageSpec, rootfs_key: str) -> str:
    sources = [
        (f"{package}/{name}", path)
        for package, directory in machine_sources().items()
        for name, path in tree_files(directory)
        if "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    files = [*tree_files(IMAGE_FILES), *sources, ("recipe", Path(__file__))]
    return hash_inputs({"rootfs": rootfs_key, **spec.tree_inputs()}, files)


def build_tree(spec: ImageSpec, rootfs: Path, root: Path) -> None:
    copy_rootfs(rootfs, root)
    install_packages(spec, root)
    bake_container_images(spec, root)
    kernel = find_kernel(spec, root)
    copy_image_files(root)
    write_os_release(spec, root)
    add_users(spec, root)
    enable_units(spec, root)
    write_presets(spec, root)
    trim_kernel_modules(spec, root, kernel)
    make_initramfs(spec, root, kernel)
    install_fleetd_source(root)
    write_package_list(root)
    remove_package_manager(spec, root)
    remove_paths(spec, root)
    remove_orphaned_scripts(root)
    drop_dead_tmpfiles_links(root)
    compile_python(root)
    reset_machine_identity(root)


def copy_rootfs(rootfs: Path, root: Path) -> None:
    with step("copy the shared rootfs"):
        root.rmdir()
        run(["cp", "-a", "--reflink=auto", rootfs, root])


def install_packages(spec: ImageSpec, root: Path) -> None:
    with host_resolver(root):
        with step("update package lists"):
            run_in_tree(root, ["apt-get", "update", "-qq"], APT_ENV)
        with step(f"check {len(spec.packages)} package names"):
            check_package_names(spec, root)
        with step(f"install {len(spec.packages)} packages", detail=installed_note(root)):
            run_in_tree(
                root,
                [
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "-o",
                    "Dpkg::Use-Pty=0",
                    *spec.packages,
                ],
                APT_ENV,
            )
            if spec.purge_packages:
                purge = ["apt-get", "purge", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"]
                run_in_tree(root, [*purge, *spec.purge_packages], APT_ENV)
            run_in_tree(root, ["apt-get", "clean"], APT_ENV)


def check_package_names(spec: ImageSpec, root: Path) -> None:
    """Fail before installing anything if a package does not exist, naming its manifest line."""
    try:
        run_in_tree(root, ["apt-get", "install", "--simulate", "-qq", *spec.packages], APT_ENV)
    except CommandError as error:
        missing = re.findall(r"Unable to locate package (\S+)", error.stderr)
        missing += re.findall(r"Package '?(\S+?)'? has no installation candidate", error.stderr)
        if not missing:
            raise
        name = missing[0]
        line = spec.package_lines.get(name, 1)
        raise ImageError(f"{spec.path}:{line}: packages: no package named {name!r}") from error


def bake_container_images(spec: ImageSpec, root: Path) -> None:
    """Each image: a Debian package's files as one layer, imported by the image's own podman
    into the store under /usr, so machines list and run it with no registry."""
    if not spec.container_images:
        return
    bake = root / BAKE_DIR
    for image in spec.container_images:
        with step(f"bake container image {image.name}"):
            bake.mkdir(parents=True)
            with host_resolver(root):
                run_in_tree(root, ["sh", "-ec", f'cd /{BAKE_DIR} && apt-get download -qq "$1"',
                                   "sh", image.package], APT_ENV)  # fmt: skip
            (deb,) = bake.glob("*.deb")
            layer = bake / "root"
            run(["dpkg-deb", "--extract", deb, layer])
            add_busybox_applets(layer)
            write_layer_tar(layer, bake / "layer.tar")
            command = "CMD " + json.dumps(list(image.command))
            run_in_tree(root, [*PODMAN_BUILD, "import", "--quiet", "--change", command,
                               f"/{BAKE_DIR}/layer.tar", image.name])  # fmt: skip
            shutil.rmtree(bake)
    names = "".join(f"{image.name}\n" for image in spec.container_images)
    (root / CONTAINER_IMAGE_LIST).parent.mkdir(parents=True, exist_ok=True)
    (root / CONTAINER_IMAGE_LIST).write_text(names)


# podman as the build runs it: no systemd, no events journal, the store under /usr.
PODMAN_BUILD = [
    "podman", "--root", f"/{CONTAINER_STORE}", "--runroot", "/tmp/podman-run",
    "--storage-driver", "overlay", "--network-backend", "netavark",
    "--cgroup-manager", "cgroupfs", "--events-backend", "none",
]  # fmt: skip


def add_busybox_applets(layer: Path) -> None:
    """busybox-static installs only the binary: link every applet into /bin, as busybox's own
    `--install -s` would inside the container."""
    busybox = layer / "bin/busybox"
    if not busybox.is_file():
        return
    for applet in run([busybox, "--list"]).stdout.split():
        link = layer / "bin" / applet
        if not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")
    for directory in ("etc", "tmp", "proc", "sys", "dev", "www"):
        (layer / directory).mkdir(exist_ok=True)
    (layer / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (layer / "etc/group").write_text("root:x:0:\n")


def write_layer_tar(layer: Path, tar: Path) -> None:
    """A reproducible layer: sorted, owned by root, every timestamp 0."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        return info

    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(layer.rglob("*")):
            archive.add(
                path, arcname=str(path.relative_to(layer)), recursive=False, filter=normalize
            )


def find_kernel(spec: ImageSpec, root: Path) -> str:
    versions = sorted(p.name for p in (root / "usr/lib/modules").glob("*") if p.is_dir())
    if len(versions) != 1 or not (root / f"boot/vmlinuz-{versions[0]}").is_file():
        found = ", ".join(versions) or "none"
        raise ImageError(
            f"{spec.path}: packages: exactly one kernel is needed (found: {found}); "
            "list one kernel package such as linux-image-amd64"
        )
    return versions[0]


def copy_image_files(root: Path) -> None:
    with step("copy the image's own files"):
        shutil.copytree(IMAGE_FILES, root, dirs_exist_ok=True, symlinks=True)
        default_target = root / "etc/systemd/system/default.target"
        default_target.unlink(missing_ok=True)
        default_target.symlink_to(f"/usr/lib/systemd/system/{DEFAULT_TARGET}")
        # linux-base's convenience links at / point into /boot, which is the ESP on this image.
        for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
            (root / link).unlink(missing_ok=True)


def write_os_release(spec: ImageSpec, root: Path) -> None:
    with step("write os-release"):
        text = (
            f'NAME="Flotilla"\nPRETTY_NAME="Flotilla {spec.version}"\nID={spec.name}\n'
            f"ID_LIKE=debian\nVERSION={spec.version}\nVERSION_ID={spec.version}\n"
            'HOME_URL="https://github.com/flotilla/flotilla"\n'
        )
        os_release = root / "usr/lib/os-release"
        os_release.unlink()
        os_release.write_text(text)
        (root / "etc/issue").write_text(f"Flotilla {spec.version} \\n \\l\n\n")
        (root / "etc/issue.net").write_text(f"Flotilla {spec.version}\n")


def add_users(spec: ImageSpec, root: Path) -> None:
    for user in spec.users:
        with step(f"add user {user.name}"):
            groups = ["--groups", ",".join(user.groups)] if user.groups else []
            run_in_tree(
                root,
                [
                    "useradd",
                    "--create-home",
                    "--user-group",
                    "--shell",
                    "/bin/bash",
                    *groups,
                    user.name,
                ],
            )
            # '*': no password login, but not "locked", so key logins work.
            run_in_tree(root, ["usermod", "--password", "*", user.name])


def enable_units(spec: ImageSpec, root: Path) -> None:
    with step(f"enable {len(spec.enable_units)} units, disable {len(spec.disable_units)}"):
        if spec.disable_units:
            run_in_tree(root, ["systemctl", "disable", "--quiet", *spec.disable_units])
        run_in_tree(root, ["systemctl", "enable", "--quiet", *spec.enable_units])


def write_presets(spec: ImageSpec, root: Path) -> None:
    """The first boot applies presets (enable-only); without this file Debian's default is to
    enable every unit, fleetd and etcd included, before they have a config."""
    with step("write unit presets"):
        lines = [f"enable {unit}" for unit in spec.enable_units]
        preset = root / "usr/lib/systemd/system-preset/90-flotilla.preset"
        preset.parent.mkdir(parents=True, exist_ok=True)
        preset.write_text("\n".join(["# Written by imagebuild", *lines, "disable *"]) + "\n")


def trim_kernel_modules(spec: ImageSpec, root: Path, kernel: str) -> None:
    with step("trim kernel modules"):
        base = root / "usr/lib/modules" / kernel
        dependencies = parse_modules_dep((base / "modules.dep").read_text())
        unmatched = unmatched_patterns(dependencies, spec.kernel_modules)
        if unmatched:
            line = spec.module_lines.get(unmatched[0], 1)
            raise ImageError(
                f"{spec.path}:{line}: kernel_modules: {unmatched[0]!r} matches no module"
            )
        keep = modules_to_keep(dependencies, spec.kernel_modules)
        for module in dependencies:
            if module not in keep:
                (base / module).unlink()
        run(["find", base / "kernel", "-depth", "-type", "d", "-empty", "-delete"])
        run_in_tree(root, ["depmod", "-a", kernel])


def make_initramfs(spec: ImageSpec, root: Path, kernel: str) -> None:
    with step("make the initramfs (dracut)"):
        initramfs = spec.initramfs
        run_in_tree(
            root,
            [
                "dracut",
                "--quiet",
                "--force",
                "--no-hostonly",
                "--no-hostonly-cmdline",
                "--no-early-microcode",
                "--modules",
                " ".join(initramfs.dracut_modules),
                "--drivers",
                " ".join(initramfs.drivers),
                "--compress",
                initramfs.compress,
                "--kver",
                kernel,
                f"/boot/initrd.img-{kernel}",
            ],
        )


def install_fleetd_source(root: Path) -> None:
    with step("install fleetd"):
        target = root / SOURCE_MOUNTPOINT
        for package, directory in machine_sources().items():
            shutil.copytree(
                directory,
                target / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        # The units' Documentation= points here; the package carries a copy of the document.
        try:
            shutil.copy2(data_path("ARCHITECTURE.md"), target / "ARCHITECTURE.md")
        except MissingResource as error:
            raise ImageError(str(error)) from error


def write_package_list(root: Path) -> None:
    with step("write the package list"):
        listing = run_in_tree(root, ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"])
        path = root / PACKAGE_LIST
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(sorted(listing.splitlines(keepends=True))))


def remove_package_manager(spec: ImageSpec, root: Path) -> None:
    with step("remove apt and dpkg"):
        remove_matching(root, spec.package_manager_paths)


def remove_paths(spec: ImageSpec, root: Path) -> None:
    with step("remove docs, headers and build-time files"):
        remove_matching(root, spec.remove_paths)
        run(["find", root / "usr", "-name", "*.a", "-type", "f", "-delete"])


def remove_orphaned_scripts(root: Path) -> None:
    """Scripts whose interpreter was removed (perl's, with dpkg) would only fail when run."""
    with step("remove scripts whose interpreter is gone"):
        for directory in ("usr/bin", "usr/sbin"):
            for path in sorted((root / directory).iterdir()):
                interpreter = script_interpreter(path)
                if interpreter and not exists_in_tree(root, interpreter):
                    path.unlink()
            for path in sorted((root / directory).iterdir()):  # links to what went above
                if path.is_symlink() and not exists_in_tree(root, f"/{directory}/{path.name}"):
                    path.unlink()


def exists_in_tree(root: Path, path: str) -> bool:
    """Whether `path` (absolute, as the machine sees it) exists in the tree at `root`, following
    symlinks inside the tree: an absolute link target means the tree's /, not the host's."""
    current = PurePosixPath("/")
    parts = list(PurePosixPath(path).parts[1:])
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent
            continue
        on_host = root / str(current / part).lstrip("/")
        if on_host.is_symlink():
            hops += 1
            if hops > 40:
                return False
            target = PurePosixPath(os.readlink(on_host))
            if target.is_absolute():
                current = PurePosixPath("/")
            parts = [p for p in target.parts if p != "/"] + parts
        elif on_host.exists():
            current = current / part
        else:
            return False
    return True


def drop_dead_tmpfiles_links(root: Path) -> None:
    """tmpfiles.d `L` lines whose target was stripped (systemd's /var/log/README points at its
    docs) would make a dead symlink on every boot."""
    with step("drop tmpfiles links to removed files"):
        for conf in sorted((root / "usr/lib/tmpfiles.d").glob("*.conf")):
            lines = conf.read_text().splitlines(keepends=True)
            kept = [line for line in lines if not dead_tmpfiles_link(root, line)]
            if kept != lines:
                conf.write_text("".join(kept))


def dead_tmpfiles_link(root: Path, line: str) -> bool:
    fields = line.split()
    if len(fields) < 7 or not fields[0].startswith("L"):
        return False
    link, target = PurePosixPath(fields[1]), fields[6]
    resolved = target if target.startswith("/") else str(link.parent / target)
    return not exists_in_tree(root, resolved)


def script_interpreter(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file():
        return None
    with open(path, "rb") as handle:
        first = handle.readline(256)
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else None


def compile_python(root: Path) -> None:
    """/usr is read-only on the machine, so Python must find its bytecode ready."""
    with step("compile Python bytecode"):
        run_in_tree(
            root,
            [
                "python3",
                "-m",
                "compileall",
                "-q",
                "-j0",
                "--invalidation-mode",
                "unchecked-hash",
                f"/{PYTHON_LIB}",
                f"/{SOURCE_MOUNTPOINT}",
                "/usr/lib/python3/dist-packages",
            ],
        )


def reset_machine_identity(root: Path) -> None:
    """'uninitialized' makes the first boot a first boot (ConditionFirstBoot, presets)."""
    with step("reset machine identity"):
        (root / "etc/machine-id").write_text("uninitialized\n")
        (root / "etc/hostname").unlink(missing_ok=True)
