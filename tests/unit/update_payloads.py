"""Real signed payloads for the update tests: small files, a manifest, an ed25519 signature made
with ssh-keygen, and the directory of trusted keys a machine would have."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flotilla.update.manifest import BOARD, FILE_NAMES, PayloadFile, UpdateManifest
from imagebuild.payload import install_trusted_key, public_key, signing_key, write_payload

ROOT_HASH = "ab" * 32


def make_key(directory: Path) -> Path:
    """A fresh ed25519 key without a passphrase (imagebuild's development key)."""
    with signing_key(None, directory) as made:
        pass
    assert not made.exists()  # made aside, then moved into the directory
    return directory / made.name


def trust(key: Path, usr: Path) -> Path:
    """The trusted-keys directory a machine whose /usr is `usr` has for `key`."""
    install_trusted_key(usr, public_key(key))
    return usr / "share/flotilla/update-keys"


def make_payload(directory: Path, key: Path, version: str = "1.2.3") -> UpdateManifest:
    """A signed payload in `directory`: each file a few KiB of distinct bytes."""
    sources_dir = directory.parent / f"{directory.name}-sources"
    sources_dir.mkdir()
    sources = {}
    files = []
    for index, role in enumerate(FILE_NAMES):
        path = sources_dir / role
        path.write_bytes(bytes([index + 1]) * (4096 * (index + 1)) + role.encode())
        sources[role] = path
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files.append(PayloadFile(role, FILE_NAMES[role], path.stat().st_size, digest))
    manifest = UpdateManifest(
        name="flotilla",
        board=BOARD,
        version=version,
        root_hash=ROOT_HASH,
        kernel_arguments="root=PARTUUID=3f1c8b26-9d1e-4c45-b7b4-6f1e2d3c4b09 rw console=ttyS0",
        files=tuple(files),
    )
    write_payload(directory, sources, manifest, key)
    return manifest
