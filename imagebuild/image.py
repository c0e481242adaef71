"""`imagebuild build`: the OS disk image, as a flat recipe of verb-named steps.

rootfs (shared with the lab, cached) -> image tree (cached) -> /usr filesystem (cached) ->
ESP, OEM, ROOT -> GPT disk -> qcow2. Everything is made in a partial directory next to the
outputs and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flotilla.process import CommandError, run
from flotilla.resources import code_root
from flotilla.steps import step

from .cache import cached_tree, default_cache_root, hash_inputs, remove_build_dir
from .disk import allocated_size, convert_to_qcow2, write_disk
from .filesystems import copy_into_vfat, make_erofs, make_ext4, make_vfat
from .image_spec import DEFAULT_IMAGE_SPEC, ImageSpec, load_image_spec
from .layout import format_size
from .rootfs import build_rootfs, rootfs_key
from .spec import load_spec
from .tree import PACKAGE_LIST, ImageError, build_tree, find_kernel, tree_key

# Outputs go where the user is (or --out), never into the code's own directory.
DEFAULT_OUT = Path("build")
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.erofs": "erofs-utils",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
}
BOOT_LOADER = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
# Makes Ignition run (its dracut generator keys on it); only the first boot carries it.
FIRST_BOOT_ARGUMENT = "ignition.firstboot"


@dataclass(frozen=True)
class Artifacts:
    """What a build leaves in the output directory."""

    raw: Path
    qcow2: Path
    kernel: Path
    initrd: Path
    cmdline: Path
    packages: Path
    report: Path

    @classmethod
    def named(cls, directory: Path, name: str) -> Artifacts:
        return cls(
            raw=directory / f"{name}.raw",
            qcow2=directory / f"{name}.qcow2",
            kernel=directory / f"{name}.vmlinuz",
            initrd=directory / f"{name}.initrd",
            cmdline=directory / f"{name}.cmdline",
            packages=directory / f"{name}.packages.txt",
            report=directory / f"{name}.report.json",
        )

    def all(self) -> list[Path]:
        return [
            self.raw,
            self.qcow2,
            self.kernel,
            self.initrd,
            self.cmdline,
            self.packages,
            self.report,
        ]  # the report last: it is written when everything else is in place


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the time of the last commit of the checkout the code runs
    from, else 0 (an installed package has no history): same inputs, same bytes."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        result = run(["git", "-C", code_root(), "log", "-1", "--format=%ct"], check=False)
    except CommandError:  # no git on this host
        return 0
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


def build_image(
    spec_path: Path = DEFAULT_IMAGE_SPEC,
    out: Path = DEFAULT_OUT,
    cache_root: Path | None = None,
    epoch: int | None = None,
) -> Artifacts:
    spec = load_image_spec(spec_path)
    check_host_tools()
    cache_root = cache_root or default_cache_root()
    epoch = source_date_epoch() if epoch is None else epoch
    started = time.monotonic()
    rootfs_spec = load_spec(spec.rootfs)
    rootfs = build_rootfs(spec.rootfs, cache_root / "rootfs")
    key = tree_key(spec, rootfs_key(rootfs_spec))
    tree = cached_tree(cache_root / "image-tree", key, lambda d: build_tree(spec, rootfs, d))
    usr = make_usr_filesystem(spec, tree, cache_root / "usr", key, epoch)
    with output_directory(out, spec.name) as partial:
        artifacts = Artifacts.named(partial, spec.name)
        kernel = find_kernel(spec, tree)
        copy_boot_files(spec, tree, kernel, artifacts)
        images = {
            "EFI-SYSTEM": make_esp(spec, tree, artifacts, partial / "esp.img"),
            "USR-A": usr,
            "OEM": make_oem(spec, partial / "oem.img", epoch),
            "ROOT": make_root(spec, tree, partial / "root.img", epoch),
        }
        make_disk(spec, images, artifacts)
        make_qcow2(artifacts)
        write_report(spec, tree, images, artifacts, epoch, time.monotonic() - started)
    return Artifacts.named(out, spec.name)


def check_host_tools() -> None:
    missing = [package for tool, package in HOST_TOOLS.items() if not shutil.which(tool)]
    if missing:
        raise ImageError(f"missing host tools; install {' '.join(missing)} (or run `make deps`)")


@contextmanager
def output_directory(out: Path, name: str) -> Iterator[Path]:
    """A partial directory whose files are renamed into `out` only if the block succeeds."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial-{name}"
    if partial.exists():
        remove_build_dir(partial)
    partial.mkdir()
    try:
        yield partial
        for path in Artifacts.named(partial, name).all():
            path.rename(out / path.name)
    finally:
        if partial.exists():
            remove_build_dir(partial)


def make_usr_filesystem(
    spec: ImageSpec, tree: Path, cache: Path, tree_key: str, epoch: int
) -> Path:
    slot = spec.layout.by_label("USR-A")

    def build(directory: Path) -> None:
        with step("make the /usr filesystem (erofs, lz4hc)"):
            make_erofs(tree / "usr", directory / "usr.erofs", epoch=epoch, uuid=slot.uuid)

    image = cached_tree(cache, hash_inputs([tree_key, epoch, slot.uuid], []), build) / "usr.erofs"
    if image.stat().st_size > slot.size:
        raise ImageError(
            f"{spec.path}: partitions: /usr needs {format_size(image.stat().st_size)}, "
            f"more than USR-A's {format_size(slot.size)}"
        )
    return image


def copy_boot_files(spec: ImageSpec, tree: Path, kernel: str, artifacts: Artifacts) -> None:
    with step("copy the kernel, initramfs and package list"):
        shutil.copyfile(tree / f"boot/vmlinuz-{kernel}", artifacts.kernel)
        shutil.copyfile(tree / f"boot/initrd.img-{kernel}", artifacts.initrd)
        shutil.copyfile(tree / PACKAGE_LIST, artifacts.packages)
        artifacts.cmdline.write_text(spec.cmdline + "\n")


def make_esp(spec: ImageSpec, tree: Path, artifacts: Artifacts, image: Path) -> Path:
    """systemd-boot on the removable-media path (boots without NVRAM entries), the kernel and
    initramfs of slot A, and a boot entry for it."""
    with step("make the EFI system partition"):
        part = spec.layout.by_label("EFI-SYSTEM")
        staging = image.with_suffix(".d")
        staging.mkdir()
        loader_conf = staging / "loader.conf"
        # timeout 0: boot at once; hold a key during boot for the menu.
        loader_conf.write_text("timeout 0\neditor no\nconsole-mode keep\n")
        entry = staging / "entry.conf"
        entry.write_text(boot_entry(spec, "a", first_boot=True))
        make_vfat(image, size=part.size, label="EFI-SYSTEM")
        copy_into_vfat(
            image,
            {
                "/EFI/BOOT/BOOTX64.EFI": tree / BOOT_LOADER,
                "/EFI/systemd/systemd-bootx64.efi": tree / BOOT_LOADER,
                "/loader/loader.conf": loader_conf,
                f"/loader/entries/{spec.name}-a.conf": entry,
                f"/{spec.name}/vmlinuz-a": artifacts.kernel,
                f"/{spec.name}/initrd-a": artifacts.initrd,
            },
        )
        shutil.rmtree(staging)
    return image


def boot_entry(spec: ImageSpec, slot: str, first_boot: bool = False) -> str:
    """A Boot Loader Specification entry for a USR slot. An update writes the other slot's entry
    with a boot counter (`<name>-b+3.conf`); systemd-boot then tries it first and, once its tries
    run out without systemd-bless-boot marking it good, falls back to this one.

    The image's own entry starts with the first-boot flag, which makes Ignition run;
    flotilla-ignition-done.service drops it once a boot got past Ignition."""
    options = f"{spec.cmdline} {FIRST_BOOT_ARGUMENT}" if first_boot else spec.cmdline
    return (
        f"title Flotilla {spec.version} (USR-{slot.upper()})\n"
        f"sort-key {spec.name}\n"
        f"version {spec.version}\n"
        f"linux /{spec.name}/vmlinuz-{slot}\n"
        f"initrd /{spec.name}/initrd-{slot}\n"
        f"options {options}\n"
    )


def make_oem(spec: ImageSpec, image: Path, epoch: int) -> Path:
    with step("make the OEM partition"):
        part = spec.layout.by_label("OEM")
        staging = image.with_suffix(".d")
        staging.mkdir()
        # Platform glue lives here (Flatcar's OEM): which platform, and later its config.
        (staging / "oem-release").write_text('ID=qemu\nNAME="QEMU"\n')
        make_ext4(staging, image, size=part.size, label="OEM", uuid=part.uuid, epoch=epoch)
        shutil.rmtree(staging)
    return image


def make_root(spec: ImageSpec, tree: Path, image: Path, epoch: int) -> Path:
    """The stateful root: everything but /usr (its own partition) and /boot (the ESP)."""
    with step("make the ROOT filesystem"):
        part = spec.layout.by_label("ROOT")
        staging = image.with_suffix(".d")
        staging.mkdir()
        for entry in sorted(tree.iterdir()):
            if entry.name not in ("usr", "boot"):
                run(["cp", "-a", "--reflink=auto", entry, staging / entry.name])
        for mountpoint in ("usr", "boot", "oem"):
            (staging / mountpoint).mkdir(mode=0o755)
        mark_usr_updates_done(staging, epoch)
        make_ext4(staging, image, size=part.size, label="ROOT", uuid=part.uuid, epoch=epoch)
        remove_build_dir(staging)
    return image


def mark_usr_updates_done(root: Path, epoch: int) -> None:
    """/etc and /var already match this /usr (its files carry `epoch` as mtime): without these
    stamps the first boot would rebuild the hwdb, ld.so cache and catalog (ConditionNeedsUpdate)."""
    for directory in ("etc", "var"):
        stamp = root / directory / ".updated"
        stamp.write_text(f"# Written by imagebuild\nTIMESTAMP_NSEC={epoch * 1_000_000_000}\n")
        os.utime(stamp, (epoch, epoch))


def make_disk(spec: ImageSpec, images: dict[str, Path], artifacts: Artifacts) -> None:
    with step(f"write the GPT disk ({format_size(spec.layout.size)})"):
        write_disk(spec.layout, spec.disk_guid, images, artifacts.raw)


def make_qcow2(artifacts: Artifacts) -> None:
    with step("compress the disk into qcow2"):
        convert_to_qcow2(artifacts.raw, artifacts.qcow2)


def write_report(
    spec: ImageSpec,
    tree: Path,
    images: dict[str, Path],
    artifacts: Artifacts,
    epoch: int,
    seconds: float,
) -> None:
    usr = images["USR-A"]
    usr_content = apparent_size(tree / "usr")
    report = {
        "name": spec.name,
        "version": spec.version,
        "source_date_epoch": epoch,
        "build_seconds": round(seconds, 1),
        "kernel": find_kernel(spec, tree),
        "cmdline": spec.cmdline,
        "packages": len(artifacts.packages.read_text().splitlines()),
        "sizes": {
            "usr_content_bytes": usr_content,
            "usr_filesystem_bytes": usr.stat().st_size,
            "usr_partition_bytes": spec.layout.by_label("USR-A").size,
            "kernel_bytes": artifacts.kernel.stat().st_size,
            "initrd_bytes": artifacts.initrd.stat().st_size,
            "root_content_bytes": apparent_size(tree) - usr_content - apparent_size(tree / "boot"),
            "disk_bytes": spec.layout.size,
            "raw_allocated_bytes": allocated_size(artifacts.raw),
            "qcow2_bytes": artifacts.qcow2.stat().st_size,
        },
        "usr_sha256": sha256(usr),
        "container_images": [image.name for image in spec.container_images],
        "partitions": [
            {
                "number": p.number,
                "label": p.label,
                "type": p.spec.kind,
                "uuid": p.uuid,
                "offset": p.offset,
                "size": p.size,
            }
            for p in spec.layout.partitions
        ],
    }
    artifacts.report.write_text(json.dumps(report, indent=2) + "\n")


def apparent_size(path: Path) -> int:
    result = run(["du", "--summarize", "--bytes", "--one-file-system", path])
    return int(result.stdout.split()[0])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
