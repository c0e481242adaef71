"""Filesystem images made from directories, without mounting anything (no loop devices).

erofs for /usr: read-only by design (a rw remount is impossible, not just refused by policy),
compressed in fixed-size output blocks so random reads stay cheap, mounted by the stock kernel,
and reproducible with a fixed timestamp and UUID. squashfs compresses a little better but reads
whole 128 KiB blocks and has no such advantage here.
"""

from __future__ import annotations

from pathlib import Path

from flotilla.process import run

MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def make_erofs(source: Path, image: Path, *, epoch: int, uuid: str) -> None:
    run(
        [
            "mkfs.erofs",
            "--quiet",
            "-zlz4hc,12",
            f"-T{epoch}",
            f"-U{uuid}",
            image,
            source,
        ]
    )


def make_ext4(source: Path, image: Path, *, size: int, label: str, uuid: str, epoch: int) -> None:
    """An ext4 filesystem of `size` bytes holding `source` (mkfs.ext4 -d, no mount)."""
    image.unlink(missing_ok=True)
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-U",
            uuid,
            "-E",
            f"hash_seed={uuid},root_owner=0:0",
            "-d",
            source,
            image,
            f"{size // 1024}k",
        ],
        env={"E2FSPROGS_FAKE_TIME": str(epoch)},
    )


def make_vfat(image: Path, *, size: int, label: str) -> None:
    image.unlink(missing_ok=True)
    run(
        [
            "mkfs.fat",
            "-F",
            "32",
            "-n",
            label,
            "--invariant",
            "-C",
            image,
            str(size // 1024),
        ]
    )


def copy_into_vfat(image: Path, files: dict[str, Path]) -> None:
    """Copy files into the FAT image at the given paths (`/EFI/BOOT/BOOTX64.EFI`), with mtools."""
    directories = sorted({str(Path(target).parent) for target in files} - {"/"})
    made: set[str] = set()
    for directory in directories:
        parts = Path(directory).parts[1:]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if path not in made:
                run(["mmd", "-i", image, f"::{path}"], env=MTOOLS_ENV)
                made.add(path)
    for target, source in sorted(files.items()):
        run(["mcopy", "-i", image, "-m", source, f"::{target}"], env=MTOOLS_ENV)
