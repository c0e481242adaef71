"""The disk image: a sparse file, a GPT written by sfdisk, partition images copied in with dd."""

from __future__ import annotations

import os
from pathlib import Path

from flotilla.process import run

from .layout import DiskLayout, sfdisk_script


def write_disk(layout: DiskLayout, disk_guid: str, images: dict[str, Path], raw: Path) -> None:
    """Make `raw` (sparse) with the partition table and each partition's filesystem image;
    partitions without an image stay zero (USR-B, the empty update slot)."""
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as handle:
        handle.truncate(layout.size)
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw],
        input=sfdisk_script(layout, disk_guid),
    )
    for part in layout.partitions:
        image = images.get(part.label)
        if image is None:
            continue
        if image.stat().st_size > part.size:
            raise ValueError(f"{part.label}: {image.name} is bigger than its partition")
        run(
            [
                "dd",
                f"if={image}",
                f"of={raw}",
                "bs=4M",
                f"seek={part.offset}",
                "oflag=seek_bytes",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )


def convert_to_qcow2(raw: Path, qcow2: Path) -> None:
    """A compressed qcow2 of the raw disk (zeros cost nothing; data is zlib-compressed)."""
    qcow2.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-c", "-O", "qcow2", "-m", str(os.cpu_count() or 2), raw, qcow2])


def allocated_size(path: Path) -> int:
    """Bytes actually stored (a sparse raw image is mostly holes)."""
    return path.stat().st_blocks * 512
