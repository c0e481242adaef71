"""The dm-verity hash tree of a /usr filesystem (veritysetup format), made reproducibly.

The salt is the sha256 of the filesystem image and the superblock's UUID is derived from it, so
the same filesystem bytes always give the same hash tree and root hash, while two different
filesystems never share a salt.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from flotilla.process import run

BLOCK_SIZE = 4096  # data and hash blocks: erofs's block, the page size
HASH_ALGORITHM = "sha256"
VERITY_UUID_NAMESPACE = uuid.UUID("5f2b7a1e-4c0d-4e8a-9b36-0d1f6e2c8a47")


@dataclass(frozen=True)
class VerityTree:
    root_hash: str
    salt: str
    uuid: str
    data_blocks: int
    hash_size: int  # bytes of the hash image, superblock included


def salt_for(filesystem_sha256: str) -> str:
    return filesystem_sha256


def uuid_for(salt: str) -> str:
    return str(uuid.uuid5(VERITY_UUID_NAMESPACE, salt))


def parse_format_output(text: str) -> dict[str, str]:
    """veritysetup format's `Key:  value` lines as a dict (Root hash, Data blocks, ...)."""
    fields = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and value.strip():
            fields[key.strip()] = value.strip()
    return fields


def root_hash_from(fields: dict[str, str]) -> str:
    root_hash = fields.get("Root hash", "")
    if not re.fullmatch(r"[0-9a-f]{64}", root_hash):
        raise ValueError(f"veritysetup format printed no sha256 root hash ({root_hash!r})")
    return root_hash


def make_hash_tree(filesystem: Path, hash_image: Path, filesystem_sha256: str) -> VerityTree:
    """Write the hash tree of `filesystem` (its size a whole number of blocks) to `hash_image`."""
    size = filesystem.stat().st_size
    if size % BLOCK_SIZE:
        raise ValueError(f"{filesystem} is {size} bytes, not a whole number of {BLOCK_SIZE}")
    salt = salt_for(filesystem_sha256)
    hash_image.unlink(missing_ok=True)
    result = run(
        [
            "veritysetup",
            "format",
            f"--hash={HASH_ALGORITHM}",
            f"--data-block-size={BLOCK_SIZE}",
            f"--hash-block-size={BLOCK_SIZE}",
            f"--salt={salt}",
            f"--uuid={uuid_for(salt)}",
            filesystem,
            hash_image,
        ]
    )
    fields = parse_format_output(result.stdout)
    hash_image.chmod(0o644)  # veritysetup makes it 0600; nothing in it is secret
    return VerityTree(
        root_hash=root_hash_from(fields),
        salt=salt,
        uuid=uuid_for(salt),
        data_blocks=size // BLOCK_SIZE,
        hash_size=hash_image.stat().st_size,
    )
