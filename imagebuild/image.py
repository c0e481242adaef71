"""`imagebuild build`: the OS disk image, as a flat recipe of verb-named steps.

rootfs (shared with the lab, cached) -> image tree (cached) -> /usr filesystem and its
dm-verity hash tree (cached) -> ESP, OEM, ROOT -> GPT disk -> qcow2, and the signed update
payload. Everything is made in a partial directory next to the outputs and renamed into place
only when complete.
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
from flotilla.update.manifest import BOARD, UpdateManifest
from flotilla.update.slots import SLOTS, Slot, boot_entry, entry_file_name, usr_arguments

from .cache import cached_tree, default_cache_root, hash_inputs, remove_build_dir
from .disk import allocated_size, convert_to_qcow2, write_disk
from .filesystems import copy_into_vfat, make_erofs, make_ext4, make_vfat
from .image_spec import DEFAULT_IMAGE_SPEC, ImageSpec, load_image_spec
from .layout import format_size
from .payload import (
    install_trusted_key,
    payload_file,
    public_key,
    signing_key,
    write_payload,
)
from .rootfs import build_rootfs, rootfs_key
from .spec import load_spec
from .tree import PACKAGE_LIST, ImageError, build_tree, find_kernel, tree_key
from .verity import VerityTree, make_hash_tree

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
    "veritysetup": "cryptsetup-bin",
    "ssh-keygen": "openssh-client",
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
    update: Path  # the signed update payload (a directory)
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
            update=directory / "update",
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
            self.update,
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
    signing_key_path: Path | None = None,
) -> Artifacts:
    spec = load_image_spec(spec_path)
    check_host_tools()
    with signing_key(signing_key_path, out) as signer:
        return _build(spec, out, cache_root, epoch, signer)


def _build(
    spec: ImageSpec, out: Path, cache_root: Path | None, epoch: int | None, signer: Path
) -> Artifacts:
    key_line = public_key(signer)
    cache_root = cache_root or default_cache_root()
    epoch = source_date_epoch() if epoch is None else epoch
    started = time.monotonic()
    rootfs_spec = load_spec(spec.rootfs)
    rootfs = build_rootfs(spec.rootfs, cache_root / "rootfs")
    key = tree_key(spec, rootfs_key(rootfs_spec))
    tree = cached_tree(cache_root / "image-tree", key, lambda d: build_tree(spec, rootfs, d))
    usr = make_usr_filesystem(spec, tree, cache_root / "usr", key, epoch, key_line)
    with output_directory(out, spec.name) as partial:
        artifacts = Artifacts.named(partial, spec.name)
        kernel = find_kernel(spec, tree)
        copy_boot_files(spec, tree, kernel, artifacts, usr.verity)
        images = {
            "EFI-SYSTEM": make_esp(spec, tree, artifacts, partial / "esp.img", usr.verity),
            "USR-A": usr.filesystem,
            "USR-A-VERITY": usr.hash_tree,
            "OEM": make_oem(spec, partial / "oem.img", epoch),
            "ROOT": make_root(spec, tree, partial / "root.img", epoch),
        }
        make_disk(spec, images, artifacts)
        make_qcow2(artifacts)
        make_update_payload(spec, usr, artifacts, signer)
        write_report(spec, tree, usr, images, artifacts, epoch, time.monotonic() - started)
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
            if path.is_dir() and (out / path.name).is_dir():
                remove_build_dir(out / path.name)
            path.rename(out / path.name)
    finally:
        if partial.exists():
            remove_build_dir(partial)


@dataclass(frozen=True)
class UsrImage:
    """Slot A's content: the /usr filesystem, its dm-verity hash tree and what describes them."""

    filesystem: Path
    hash_tree: Path
    sha256: str  # of the filesystem
    verity: VerityTree


def make_usr_filesystem(
    spec: ImageSpec, tree: Path, cache: Path, tree_key: str, epoch: int, key_line: str
) -> UsrImage:
    """The tree's /usr plus the trusted update key as erofs, and its hash tree; cached by the
    tree, the epoch and the key (a new key costs seconds, not a new tree)."""
    slot = spec.layout.by_label("USR-A")
    verity_slot = spec.layout.by_label("USR-A-VERITY")

    def build(directory: Path) -> None:
        with step("make the /usr filesystem (erofs, lz4hc)"):
            staging = directory / "usr"
            # Hard links: the cached tree stays untouched and nothing big is copied.
            run(["cp", "-a", "--link", tree / "usr", staging])
            install_trusted_key(staging, key_line)
            make_erofs(staging, directory / "usr.erofs", epoch=epoch, uuid=slot.uuid)
            remove_build_dir(staging)
        with step("compute the dm-verity hash tree"):
            digest = sha256(directory / "usr.erofs")
            verity = make_hash_tree(directory / "usr.erofs", directory / "usr.verity", digest)
            (directory / "verity.json").write_text(
                json.dumps({"sha256": digest, **verity.__dict__}, indent=2) + "\n"
            )

    inputs = [tree_key, epoch, slot.uuid, key_line]
    directory = cached_tree(cache, hash_inputs(inputs, []), build)
    described = json.loads((directory / "verity.json").read_text())
    usr = UsrImage(
        filesystem=directory / "usr.erofs",
        hash_tree=directory / "usr.verity",
        sha256=described.pop("sha256"),
        verity=VerityTree(**described),
    )
    for what, image, part in (
        ("/usr", usr.filesystem, slot),
        ("/usr's hash tree", usr.hash_tree, verity_slot),
    ):
        if image.stat().st_size > part.size:
            raise ImageError(
                f"{spec.path}: partitions: {what} needs {format_size(image.stat().st_size)},"
                f" more than {part.label}'s {format_size(part.size)}"
            )
    return usr


def slot_cmdline(spec: ImageSpec, slot: Slot, root_hash: str) -> str:
    """The full kernel command line that boots `slot`: the manifest's, then the slot's /usr."""
    usr = spec.layout.by_label(slot.usr_label).uuid
    hash_tree = spec.layout.by_label(slot.verity_label).uuid
    return f"{spec.cmdline} {usr_arguments(usr, hash_tree, root_hash)}"


def copy_boot_files(
    spec: ImageSpec, tree: Path, kernel: str, artifacts: Artifacts, verity: VerityTree
) -> None:
    with step("copy the kernel, initramfs and package list"):
        shutil.copyfile(tree / f"boot/vmlinuz-{kernel}", artifacts.kernel)
        shutil.copyfile(tree / f"boot/initrd.img-{kernel}", artifacts.initrd)
        shutil.copyfile(tree / PACKAGE_LIST, artifacts.packages)
        # Direct kernel boot runs slot A, pinned by its root hash like the boot entry.
        artifacts.cmdline.write_text(slot_cmdline(spec, SLOTS["a"], verity.root_hash) + "\n")


def make_esp(
    spec: ImageSpec, tree: Path, artifacts: Artifacts, image: Path, verity: VerityTree
) -> Path:
    """systemd-boot on the removable-media path (boots without NVRAM entries), the kernel and
    initramfs of slot A, and a boot entry for it.

    An update writes the other slot's entry with a boot counter (`<name>-b+3.conf`);
    systemd-boot then tries it first and, once its tries run out without systemd-bless-boot
    marking it good, falls back to this one. The image's own entry starts with the first-boot
    flag, which makes Ignition run; flotilla-ignition-done.service drops it once a boot got
    past Ignition."""
    with step("make the EFI system partition"):
        part = spec.layout.by_label("EFI-SYSTEM")
        staging = image.with_suffix(".d")
        staging.mkdir()
        loader_conf = staging / "loader.conf"
        # timeout 0: boot at once; hold a key during boot for the menu.
        loader_conf.write_text("timeout 0\neditor no\nconsole-mode keep\n")
        entry = staging / "entry.conf"
        slot = SLOTS["a"]
        options = f"{slot_cmdline(spec, slot, verity.root_hash)} {FIRST_BOOT_ARGUMENT}"
        entry.write_text(boot_entry(spec.name, spec.version, slot, options))
        make_vfat(image, size=part.size, label="EFI-SYSTEM")
        copy_into_vfat(
            image,
            {
                "/EFI/BOOT/BOOTX64.EFI": tree / BOOT_LOADER,
                "/EFI/systemd/systemd-bootx64.efi": tree / BOOT_LOADER,
                "/loader/loader.conf": loader_conf,
                f"/loader/entries/{entry_file_name(spec.name, SLOTS['a'])}": entry,
                f"/{spec.name}/vmlinuz-a": artifacts.kernel,
                f"/{spec.name}/initrd-a": artifacts.initrd,
            },
        )
        shutil.rmtree(staging)
    return image


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


def make_update_payload(spec: ImageSpec, usr: UsrImage, artifacts: Artifacts, key: Path) -> None:
    with step("write the signed update payload"):
        sources = {
            "usr": usr.filesystem,
            "usr_verity": usr.hash_tree,
            "kernel": artifacts.kernel,
            "initrd": artifacts.initrd,
        }
        known = {"usr": usr.sha256}
        manifest = UpdateManifest(
            name=spec.name,
            board=BOARD,
            version=spec.version,
            root_hash=usr.verity.root_hash,
            kernel_arguments=spec.cmdline,
            files=tuple(
                payload_file(role, path, known.get(role) or sha256(path))
                for role, path in sources.items()
            ),
        )
        write_payload(artifacts.update, sources, manifest, key)


def write_report(
    spec: ImageSpec,
    tree: Path,
    usr_image: UsrImage,
    images: dict[str, Path],
    artifacts: Artifacts,
    epoch: int,
    seconds: float,
) -> None:
    usr = usr_image.filesystem
    usr_content = apparent_size(tree / "usr")
    report = {
        "name": spec.name,
        "version": spec.version,
        "source_date_epoch": epoch,
        "build_seconds": round(seconds, 1),
        "kernel": find_kernel(spec, tree),
        "cmdline": artifacts.cmdline.read_text().strip(),
        "packages": len(artifacts.packages.read_text().splitlines()),
        "sizes": {
            "usr_content_bytes": usr_content,
            "usr_filesystem_bytes": usr.stat().st_size,
            "usr_verity_bytes": usr_image.verity.hash_size,
            "usr_partition_bytes": spec.layout.by_label("USR-A").size,
            "kernel_bytes": artifacts.kernel.stat().st_size,
            "initrd_bytes": artifacts.initrd.stat().st_size,
            "root_content_bytes": apparent_size(tree) - usr_content - apparent_size(tree / "boot"),
            "disk_bytes": spec.layout.size,
            "raw_allocated_bytes": allocated_size(artifacts.raw),
            "qcow2_bytes": artifacts.qcow2.stat().st_size,
        },
        "usr_sha256": usr_image.sha256,
        "usr_root_hash": usr_image.verity.root_hash,
        "usr_verity_salt": usr_image.verity.salt,
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
