"""Writing a slot (I/O): partitions, the ESP's kernel and initramfs, and the boot entry.

The order is what keeps a failure harmless. The passive slot's old entries go first, so no
entry can boot a slot while it is half written; then the partitions (each read back and
compared with the manifest's sha256); then the kernel and initramfs; the new entry last, written
aside and renamed into place. Until that rename, systemd-boot's choice is the running slot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .manifest import PayloadFile
from .policy import UpdateRefused

CHUNK = 4 << 20


class WriteFailed(RuntimeError):
    """A write did not land as it should; the slot is not bootable (it has no entry)."""


def write_partition(source: Path, device: Path, expected: PayloadFile) -> None:
    """Copy `source` to the start of `device`, flush it, and read it back against the
    manifest's sha256 (the page cache is dropped first, so the disk's bytes are what is read)."""
    with open(source, "rb") as reading, open(device, "r+b", buffering=0) as writing:
        capacity = writing.seek(0, os.SEEK_END)
        if expected.size > capacity:
            raise UpdateRefused(f"{expected.name} ({expected.size} bytes) does not fit {device}"
                                f" ({capacity} bytes)")  # fmt: skip
        writing.seek(0)
        while chunk := reading.read(CHUNK):
            writing.write(chunk)
        os.fsync(writing.fileno())
        os.posix_fadvise(writing.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if read_back_sha256(device, expected.size) != expected.sha256:
        raise WriteFailed(f"{device} does not read back as the {expected.name} just written")


def read_back_sha256(device: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(device, "rb", buffering=0) as handle:
        left = size
        while left and (chunk := handle.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def replace_file(source: Path, target: Path) -> None:
    """Copy `source` over `target` whole: a copy beside it, flushed, then renamed."""
    aside = target.with_name(f".{target.name}.new")
    with open(source, "rb") as reading, open(aside, "wb") as writing:
        shutil.copyfileobj(reading, writing, CHUNK)
        writing.flush()
        os.fsync(writing.fileno())
    os.replace(aside, target)
    sync_directory(target.parent)


def write_text_file(text: str, target: Path) -> None:
    aside = target.with_name(f".{target.name}.new")
    with open(aside, "w") as writing:
        writing.write(text)
        writing.flush()
        os.fsync(writing.fileno())
    os.replace(aside, target)
    sync_directory(target.parent)


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    for directory in {path.parent for path in paths}:
        sync_directory(directory)


def sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
